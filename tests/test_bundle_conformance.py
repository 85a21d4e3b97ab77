"""Model-zoo conformance of every bundle in ``bundles/`` (``specs/bundle_conventions.md`` §1-2).

Per bundle: the required files; ``metadata.json`` against MONAI's metadata schema (the vendored
``meta_schema_20240725.json`` when ``../shared`` exists, and always against the schema's required fields written
here); ``network_data_format`` against the real network; ``verify_net_in_out``; TorchScript (``ckpt_export``) and
ONNX exports that reproduce the eager outputs; MONAI's train/infer property checks; no absolute paths in configs; no
file over 25 MB in git (``large_files.yml`` and the zoo's full verification: ``test_model_zoo_verify.py``).

Tolerances: TorchScript runs the same kernels as eager PyTorch, so its outputs must match to 1e-6 (absolute and
relative); ONNX Runtime uses its own kernels, so its outputs must match to 1e-5 absolute, 1e-4 relative.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from bundle_testing import (
    OUTPUT_DIRS,
    REPO,
    SCHEMA_MD5,
    SHARED_SCHEMA,
    bundle_dir,
    bundle_names,
    copy_bundle,
    demo_dataset_dir,
    one_thread,  # noqa: F401  (fixture)
    read_json,
)

from monai_iqad.networks import SAQMRouter

BUNDLES = bundle_names()
pytestmark = [
    pytest.mark.skipif(not BUNDLES, reason="no bundle folders in bundles/"),
    pytest.mark.usefixtures("one_thread"),
]

REQUIRED_FILES = (
    "LICENSE",
    "configs/metadata.json",
    "configs/train.json",
    "configs/evaluate.json",
    "configs/inference.json",
    "configs/multi_gpu_train.json",
    "configs/multi_gpu_evaluate.json",
    "configs/logging.conf",
    "docs/README.md",
)
MAX_FILE_BYTES = 25 * 1024 * 1024
TINY_WIDTH = 0.0625

# The fields of MONAI's meta_schema_20240725.json, for machines without the vendored schema.
SCHEMA_REQUIRED = {
    "schema": str,
    "version": str,
    "monai_version": str,
    "pytorch_version": str,
    "numpy_version": str,
    "required_packages_version": dict,
    "task": str,
    "description": str,
    "authors": str,
    "copyright": str,
    "network_data_format": dict,
}
SCHEMA_OPTIONAL = {
    "changelog": dict,
    "data_source": str,
    "data_type": str,
    "image_classes": str,
    "label_classes": str,
    "pred_classes": str,
    "eval_metrics": dict,
    "intended_use": str,
    "references": list,
    "supported_apps": dict,
}
TENSOR_REQUIRED = ("type", "format", "num_channels", "spatial_shape", "dtype", "value_range")


def _meta(name: str) -> dict:
    return read_json(bundle_dir(name) / "configs" / "metadata.json")


def _config_ids(path: Path) -> dict:
    return read_json(path)


def _width_override(config: Path) -> dict[str, Any]:
    """``{"width": 1/16}`` when the config has a top-level ``width`` id (tiny network for fast CPU checks)."""
    return {"width": TINY_WIDTH} if "width" in _config_ids(config) else {}


def _spatial_shape(shape: list, n: int = 1) -> list[int]:
    from monai.bundle.scripts import _get_fake_spatial_shape

    return list(_get_fake_spatial_shape(shape, n=n))


def _build_network(config: Path, meta: Path, overrides: dict[str, Any]) -> torch.nn.Module:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(config))
    parser.read_meta(str(meta))
    for k, v in overrides.items():
        parser[k] = v
    return parser.get_parsed_content("network_def")


def _git(*args: str) -> subprocess.CompletedProcess | None:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        return None
    proc = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
    return proc if proc.returncode == 0 else None


# ----------------------------------------------------------------------------------------------------------------------
# layout and metadata


@pytest.mark.parametrize("name", BUNDLES)
def test_required_files(name):
    missing = [f for f in REQUIRED_FILES if not (bundle_dir(name) / f).is_file()]
    assert not missing, f"bundle {name} lacks {missing}"


@pytest.mark.parametrize("name", BUNDLES)
def test_metadata_against_monai_schema(name, tmp_path):
    """``monai.bundle verify_metadata`` offline: the schema copied to ``filepath`` so the download is skipped."""
    if not SHARED_SCHEMA.is_file():
        pytest.skip(f"{SHARED_SCHEMA} not available; the required fields are checked by test_metadata_fields")
    from monai.bundle import verify_metadata

    schema = tmp_path / "schema.json"
    shutil.copy(SHARED_SCHEMA, schema)
    verify_metadata(
        meta_file=str(bundle_dir(name) / "configs" / "metadata.json"),
        filepath=str(schema),
        hash_val=SCHEMA_MD5,
        hash_type="md5",
    )


def _check_tensor(where: str, spec: Any) -> list[str]:
    if isinstance(spec, (int, float, str, bool)):
        return []  # a primitive argument is allowed by the schema
    if not isinstance(spec, dict):
        return [f"{where}: must be a primitive or a tensor description, got {type(spec).__name__}"]
    errors = [f"{where}: missing '{k}'" for k in TENSOR_REQUIRED if k not in spec]
    types = {"type": str, "format": str, "num_channels": int, "spatial_shape": list, "dtype": str, "value_range": list}
    for key, typ in types.items():
        if key in spec and (not isinstance(spec[key], typ) or isinstance(spec[key], bool)):
            errors.append(f"{where}.{key}: must be {typ.__name__}, got {spec[key]!r}")
    if isinstance(spec.get("spatial_shape"), list) and not all(
        isinstance(s, (int, str)) and not isinstance(s, bool) for s in spec["spatial_shape"]
    ):
        errors.append(f"{where}.spatial_shape: items must be integers or strings")
    if isinstance(spec.get("value_range"), list) and not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in spec["value_range"]
    ):
        errors.append(f"{where}.value_range: items must be numbers")
    if "is_patch_data" in spec and not isinstance(spec["is_patch_data"], bool):
        errors.append(f"{where}.is_patch_data: must be a boolean")
    if "channel_def" in spec and not isinstance(spec["channel_def"], dict):
        errors.append(f"{where}.channel_def: must be an object")
    return errors


@pytest.mark.parametrize("name", BUNDLES)
def test_metadata_fields(name):
    """The schema's required keys and types, written here so that the check also runs without ``../shared``."""
    meta = _meta(name)
    errors = [f"missing required key '{k}'" for k in SCHEMA_REQUIRED if k not in meta]
    for key, typ in {**SCHEMA_REQUIRED, **SCHEMA_OPTIONAL}.items():
        if key in meta and not isinstance(meta[key], typ):
            errors.append(f"'{key}' must be {typ.__name__}, got {type(meta[key]).__name__}")
    if isinstance(meta.get("references"), list) and not all(isinstance(r, str) for r in meta["references"]):
        errors.append("'references' must be a list of strings")
    for key, value in meta.items():
        if key == "network_data_format" or re.fullmatch(r"[_a-zA-Z0-9]+_data_format", key):
            if not isinstance(value, dict):
                errors.append(f"'{key}' must be an object")
                continue
            for section in ("inputs", "outputs"):
                if not isinstance(value.get(section), dict):
                    errors.append(f"{key}.{section}: required object")
            for section in ("inputs", "outputs", "post_processed_outputs"):
                for arg, spec in (value.get(section) or {}).items():
                    errors += _check_tensor(f"{key}.{section}.{arg}", spec)
    assert not errors, f"bundle {name} metadata.json: " + "; ".join(errors)


@pytest.mark.parametrize("name", BUNDLES)
def test_metadata_version_and_packages(name):
    meta = _meta(name)
    assert re.fullmatch(r"\d+\.\d+\.\d+", meta["version"]), f"version {meta['version']!r} is not semver"
    assert meta["version"] in meta.get("changelog", {}), f"version {meta['version']} has no changelog entry"
    # MONAI >= 1.5 renames this deprecated key to required_packages_version when reading the metadata, silently
    # replacing the real required packages
    assert "optional_packages_version" not in meta, "use required_packages_version only (MONAI's DEPRECATED_ID_MAPPING)"
    assert "monai_iqad" in meta["required_packages_version"], "the bundle needs monai_iqad: list it"
    assert "schema" in meta and meta["schema"].endswith(".json")


@pytest.mark.parametrize("name", BUNDLES)
def test_network_data_format_matches_network(name):
    """``image`` in, ``pred`` out (the names MONAI's checker and MONAI Label use); channels agree with the network
    of ``inference.json``; every output channel is named in ``channel_def``."""
    meta = _meta(name)
    fmt = meta["network_data_format"]
    assert list(fmt["inputs"])[0] == "image" and list(fmt["outputs"])[0] == "pred", "first input/output names"
    image, pred = fmt["inputs"]["image"], fmt["outputs"]["pred"]
    channel_def = pred.get("channel_def")
    assert isinstance(channel_def, dict), "outputs.pred.channel_def must name the classes or the score"
    assert sorted(channel_def, key=int) == [str(i) for i in range(pred["num_channels"])], (
        f"channel_def keys {sorted(channel_def)} must be 0..{pred['num_channels'] - 1}"
    )
    assert all(isinstance(v, str) and v.strip() for v in channel_def.values())

    config = bundle_dir(name) / "configs" / "inference.json"
    net = _build_network(config, bundle_dir(name) / "configs" / "metadata.json", _width_override(config)).eval()
    if isinstance(net, SAQMRouter):  # the input holds the modality planes that route it; an expert may take fewer
        takes = net.in_channels
    else:
        takes = next(m for m in net.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)).in_channels
    assert takes == image["num_channels"], f"the network takes {takes} channels, metadata says {image['num_channels']}"
    x = torch.rand(1, image["num_channels"], *_spatial_shape(image["spatial_shape"], n=2))
    with torch.no_grad():
        out = net(x)
    assert isinstance(out, torch.Tensor), f"inference network_def must return one tensor, got {type(out).__name__}"
    assert out.shape[1] == pred["num_channels"], f"output {tuple(out.shape)} vs {pred['num_channels']} channels"
    if out.ndim > 2:  # image-like outputs: the spatial shape is described too
        assert list(out.shape[2:]) == _spatial_shape(pred["spatial_shape"], n=2)
    assert str(out.dtype).replace("torch.", "") == pred["dtype"]
    lo_hi = pred["value_range"]
    if len(lo_hi) == 2:
        assert float(out.min()) >= lo_hi[0] - 1e-6 and float(out.max()) <= lo_hi[1] + 1e-6


@pytest.mark.parametrize("name", BUNDLES)
def test_verify_net_in_out(name):
    """``monai.bundle verify_net_in_out`` on CPU with the shipped network size."""
    from monai.bundle import verify_net_in_out

    verify_net_in_out(
        net_id="network_def",
        meta_file=str(bundle_dir(name) / "configs" / "metadata.json"),
        config_file=str(bundle_dir(name) / "configs" / "inference.json"),
        device="cpu",
    )


@pytest.mark.parametrize("name", BUNDLES)
def test_export_torchscript_and_onnx(name, tmp_path):
    """``ckpt_export`` (TorchScript) and ``onnx_export`` of a randomly initialised ``models/model.pt`` reproduce the
    eager outputs (TorchScript to 1e-6, ONNX Runtime to 1e-5 absolute / 1e-4 relative)."""
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from monai.bundle import ckpt_export, onnx_export

    bundle = copy_bundle(name, tmp_path / name)
    config = bundle / "configs" / "inference.json"
    meta = bundle / "configs" / "metadata.json"
    overrides = _width_override(config)
    torch.manual_seed(0)
    net = _build_network(config, meta, overrides)
    ckpt = bundle / "models" / "model.pt"
    torch.save(net.state_dict(), ckpt)
    net.eval()

    image = read_json(meta)["network_data_format"]["inputs"]["image"]
    shape = [2, image["num_channels"], *_spatial_shape(image["spatial_shape"], n=2)]
    x = torch.rand(*shape)
    with torch.no_grad():
        expected = net(x)

    ts_file = bundle / "models" / "model.ts"
    ckpt_export(
        net_id="network_def", filepath=str(ts_file), ckpt_file=str(ckpt), meta_file=str(meta), config_file=str(config),
        **overrides,
    )  # fmt: skip
    scripted = torch.jit.load(str(ts_file))
    with torch.no_grad():
        got = scripted(x)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    extra = {"metadata.json": "", "inference.json": ""}
    torch.jit.load(str(ts_file), _extra_files=extra)
    assert json.loads(extra["metadata.json"])["version"] == read_json(meta)["version"], "metadata embedded in .ts"

    onnx_file = bundle / "models" / "model.onnx"
    onnx_export(
        net_id="network_def", filepath=str(onnx_file), ckpt_file=str(ckpt), meta_file=str(meta),
        config_file=str(config), use_trace=True, input_shape=shape, **overrides,
    )  # fmt: skip
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    (onnx_out, *_) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    np.testing.assert_allclose(onnx_out, expected.numpy(), rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------------------
# MONAI's bundle property checks


def _workflow(bundle: Path, configs: list[str], workflow_type: str, name: str):
    from monai.bundle import ConfigWorkflow

    overrides: dict[str, Any] = {
        "bundle_root": str(bundle),
        "dataset_dir": str(demo_dataset_dir(name)),
        "build_demo_data": False,
        "num_workers": 0,
    }
    ids = {}
    for c in configs:
        ids.update(read_json(bundle / c))
    if "cache_rate" in ids:
        overrides["cache_rate"] = 0.0
    if "width" in ids:
        overrides["width"] = TINY_WIDTH
    return ConfigWorkflow(
        config_file=[str(bundle / c) for c in configs],
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type=workflow_type,
        **overrides,
    )


@pytest.mark.parametrize(
    "configs, workflow_type",
    [
        (["configs/train.json"], "train"),
        (["configs/train.json", "configs/evaluate.json"], "train"),
        (["configs/inference.json"], "infer"),
    ],
    ids=["train", "evaluate", "infer"],
)
@pytest.mark.parametrize("name", BUNDLES)
def test_bundle_properties(name, configs, workflow_type, tmp_path):
    """``ConfigWorkflow(..., workflow_type).check_properties()`` finds nothing missing or wrongly referenced."""
    bundle = copy_bundle(name, tmp_path / name)
    missing = [c for c in configs if not (bundle / c).is_file()]
    assert not missing, f"bundle {name} lacks {missing}"
    workflow = _workflow(bundle, configs, workflow_type, name)
    workflow.initialize()
    try:
        assert workflow.check_properties() == []
    finally:
        if "finalize" in workflow.parser:
            workflow.finalize()


# ----------------------------------------------------------------------------------------------------------------------
# repository hygiene

_ABSOLUTE = re.compile(r"""(^|['"\s(,=])(/[A-Za-z0-9._-]+/|~/|[A-Za-z]:[\\/])""")


def _strings(node: Any, where: str = ""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(k, f"{where}#{k}(key)")
            yield from _strings(v, f"{where}#{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _strings(v, f"{where}#{i}")
    elif isinstance(node, str):
        yield where.lstrip("#"), node


@pytest.mark.parametrize("name", BUNDLES)
def test_no_absolute_paths_in_configs(name):
    bad = []
    for file in sorted((bundle_dir(name) / "configs").glob("*.json")):
        for where, text in _strings(read_json(file)):
            if _ABSOLUTE.search(text):
                bad.append(f"{file.name}:{where} = {text!r}")
    assert not bad, "absolute paths in configs (use @bundle_root / @dataset_dir): " + "; ".join(bad)


def _committed_files(name: str) -> list[Path]:
    """Files of the bundle that git would commit (tracked or untracked but not ignored); without git, every file
    outside the output folders."""
    rel = bundle_dir(name).relative_to(REPO)
    proc = _git("ls-files", "--cached", "--others", "--exclude-standard", "--", str(rel))
    if proc is not None:
        return [REPO / line for line in proc.stdout.splitlines() if line and (REPO / line).is_file()]
    root = bundle_dir(name)
    return [
        p for p in root.rglob("*") if p.is_file() and p.relative_to(root).parts[0] not in OUTPUT_DIRS
    ]  # fmt: skip


@pytest.mark.parametrize("name", BUNDLES)
def test_no_file_over_25mb(name):
    big = [
        f"{p.relative_to(REPO)} ({p.stat().st_size / 2**20:.1f} MB)"
        for p in _committed_files(name)
        if p.stat().st_size > MAX_FILE_BYTES
    ]
    assert not big, f"files over 25 MB would go into git (list them in large_files.yml instead): {big}"


# large_files.yml: tests/test_model_zoo_verify.py (the model zoo's verify_bundle.py steps, offline)


def test_documented_bundle_commands_never_pass_a_bare_none():
    """``python -m monai.bundle run --key None`` is a no-op (MONAI's ``update_kwargs`` ignores None): the docs must say
    ``--key '$None'``."""
    docs = [REPO / "README.md", *REPO.glob("docs/*.md"), *REPO.glob("bundles/*/docs/README.md")]
    docs += list(REPO.glob("scripts/bundle_template/*/docs/README.md"))
    bad = [f"{p.relative_to(REPO)}: {m}" for p in docs for m in re.findall(r"--\w+ None\b", p.read_text())]
    assert not bad, bad


#: ``monai.bundle run`` arguments that are not config keys.
_RUN_ARGS = {"config_file", "meta_file", "logging_file", "args_file", "run_id", "init_id", "final_id", "tracking"}


def _documented_runs(readme: Path) -> list[tuple[Path, list[str], list[str]]]:
    """``(bundle, config files, override keys)`` of each ``monai.bundle run`` command in a bundle README's bash
    blocks (a ``cd ../other`` earlier in the block switches the bundle)."""
    runs = []
    for block in re.findall(r"```bash\n(.*?)```", readme.read_text(), re.S):
        bundle = readme.parent.parent
        for line in block.replace("\\\n", " ").split("\n"):
            line = line.split(" #")[0]
            moved = re.match(r"\s*cd\s+\.\./(\w+)", line)
            bundle = bundle.parent / moved[1] if moved else bundle
            if "monai.bundle run" not in line:
                continue
            line = line[line.index("monai.bundle run") :]
            files = re.search(r"--config_file\s+(\"[^\"]*\"|'[^']*'|\S+)", line)[1].strip("\"'")
            files = json.loads(files.replace("'", '"')) if files.startswith("[") else [files]
            runs.append((bundle, files, [k for k in re.findall(r"\s--([\w#]+)", line) if k not in _RUN_ARGS]))
    return runs


@pytest.mark.parametrize("name", BUNDLES)
def test_documented_bundle_commands_name_existing_configs_and_keys(name):
    """Each ``monai.bundle run`` command of the README names config files that exist, and overrides only keys that
    the merged config defines (``monai.bundle run --typo 1`` silently adds a key that nothing reads)."""
    from monai.bundle import ConfigParser

    runs = _documented_runs(bundle_dir(name) / "docs" / "README.md")
    assert runs, f"{name}: no monai.bundle run command documented"
    for bundle, files, keys in runs:
        missing = [f for f in files if not (bundle / f).is_file()]
        assert not missing, f"{name} README: {bundle.name} has no {missing}"
        parser = ConfigParser()
        parser.read_config([str(bundle / f) for f in files])
        unknown = [k for k in keys if k not in parser]
        assert not unknown, f"{name} README: {files} define no {unknown}"


def test_cli_value_passes_none_as_an_expression():
    """``bundle_command`` overrides: ``None`` must reach the config (``$None``); a bare ``None`` would be dropped."""
    from bundle_testing import bundle_command

    args = bundle_command(["configs/train.json"], {"init_expert": None, "resume": True, "max_epochs": 2})
    assert args[args.index("--init_expert") + 1] == "$None"  # ConfigExpression prefix
    assert args[args.index("--resume") + 1] == "True" and args[args.index("--max_epochs") + 1] == "2"
