"""Helpers shared by the bundle test modules (conformance, SAQM workflows, resume, multi-GPU, TensorBoard).

- Bundles are found in ``bundles/`` (every folder with a ``configs/``); tests run on temporary copies, never in the
  repository.
- Each bundle's demo data is built once per test session by the bundle's own ``initialize`` (``train.json``) into a
  scratch folder, and shared read-only through the ``dataset_dir`` override.
- ``tiny_overrides`` gives the small settings (width 1/16, few patches, 2 epochs) that keep CPU runs short.
- ``reference_run`` trains a bundle once per session with those settings (subprocess, like a user would); several
  modules read its outputs (TensorBoard events, checkpoint, model.pt) without modifying them.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
BUNDLES_DIR = REPO / "bundles"
#: MONAI's metadata schema (``meta_schema_20240725.json``), available next to the repository in the project setup
SHARED_SCHEMA = REPO.parent / "shared" / "schemas" / "meta_schema_20240725.json"
SCHEMA_MD5 = "06954cad2cc5d3784e72077ac76f0fc8"
#: top-level folders of a bundle that hold outputs (ignored by git), never copied into a test bundle
OUTPUT_DIRS = ("models", "eval", "demo_data", "runs", "logs", "__pycache__")

SCRATCH = Path(tempfile.mkdtemp(prefix="monai_iqad_bundle_tests_"))
atexit.register(shutil.rmtree, SCRATCH, ignore_errors=True)


@pytest.fixture
def one_thread():
    """Run in-process bundle workflows with one torch thread: on a loaded 2-core machine, two OpenMP threads
    competing with other processes are ~10x slower than one."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def bundle_names() -> list[str]:
    """Names of the bundle folders of the repository (folders of ``bundles/`` with a ``configs/`` folder)."""
    if not BUNDLES_DIR.is_dir():
        return []
    return sorted(p.name for p in BUNDLES_DIR.iterdir() if (p / "configs").is_dir())


def bundle_dir(name: str) -> Path:
    return BUNDLES_DIR / name


def bundle_kind(name: str) -> str | None:
    """``"saqm"`` or ``"mkcnet"`` from the bundle's ``network_def``; ``"saqm_pretrained"`` for a SAQM bundle without
    the paper's domain-adaptation configurations (``medical_saqm_iqa``: no domain head, its own tests)."""
    from monai_iqad.label.bundles import bundle_kind as _kind

    kind = _kind(bundle_dir(name))
    if kind == "saqm" and not (bundle_dir(name) / "configs" / "semi_supervised_da.json").is_file():
        return "saqm_pretrained"
    return kind


def saqm_bundles() -> list[str]:
    return [n for n in bundle_names() if bundle_kind(n) == "saqm"]


def copy_bundle(name: str, dst: str | os.PathLike) -> Path:
    """Copy bundle ``name`` to ``dst`` without its outputs (weights, events, demo data); ``models/`` stays empty."""
    src = bundle_dir(name)
    dst = Path(dst)

    def ignore(folder: str, names: list[str]) -> list[str]:
        if Path(folder) == src:
            return [n for n in names if n in OUTPUT_DIRS]
        return [n for n in names if n == "__pycache__"]

    shutil.copytree(src, dst, ignore=ignore)
    (dst / "models").mkdir(exist_ok=True)
    return dst


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def cli_value(value: Any) -> str:
    """Encode an override value for ``python -m monai.bundle run --key value`` (parsed by Python Fire). ``None``
    becomes the expression ``$None``: ``monai.bundle run`` drops a bare ``None`` and keeps the config's value."""
    if value is None:
        return "$None"
    if isinstance(value, (bool, int, float)):
        return repr(value)
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return str(value)


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment of bundle subprocesses: CPU only, one thread per process (the CI machine has 2 cores)."""
    env = dict(os.environ)
    env.update(
        {
            "CUDA_VISIBLE_DEVICES": "",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
            "MPLBACKEND": "Agg",
        }
    )
    env.update(extra)
    return env


def bundle_command(configs: Sequence[str | os.PathLike], overrides: Mapping[str, Any] | None = None) -> list[str]:
    """Arguments of ``monai.bundle run`` (without the interpreter) for config files and overrides."""
    args = ["-m", "monai.bundle", "run", "--config_file", json.dumps([os.fspath(c) for c in configs])]
    for key, value in (overrides or {}).items():
        args += [f"--{key}", cli_value(value)]
    return args


def run_bundle(
    bundle: Path,
    configs: Sequence[str | os.PathLike],
    overrides: Mapping[str, Any] | None = None,
    timeout: float = 600,
    check: bool = True,
) -> subprocess.CompletedProcess:
    """Run ``python -m monai.bundle run`` in ``bundle`` (the working directory, so ``bundle_root`` "." works).

    ``configs`` are paths relative to the bundle (``configs/train.json``) or absolute (test-only overlays).

    Raises:
        AssertionError: when ``check`` and the run fails; the message holds the end of its output.
    """
    cmd = [sys.executable, *bundle_command(configs, overrides)]
    proc = subprocess.run(cmd, cwd=bundle, env=subprocess_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"bundle run failed (exit {proc.returncode}): {' '.join(cmd)}\n--- stdout\n{proc.stdout[-4000:]}\n"
            f"--- stderr\n{proc.stderr[-6000:]}"
        )
    return proc


@functools.cache
def demo_dataset_dir(name: str) -> Path:
    """The demo data of bundle ``name``, built once per session by the bundle's own ``initialize``."""
    from monai.bundle import ConfigWorkflow

    root = SCRATCH / "demo" / name
    bundle = copy_bundle(name, root / "bundle")
    data = root / "demo_data"
    # a bundle that builds a corpus (medical_saqm_iqa) builds its few-second "tiny" preset here
    extra = {"corpus_preset": "tiny"} if "corpus_preset" in read_json(bundle / "configs" / "train.json") else {}
    workflow = ConfigWorkflow(
        config_file=str(bundle / "configs" / "train.json"),
        workflow_type=None,
        logging_file=False,
        bundle_root=str(bundle),
        dataset_dir=str(data),
        build_demo_data=True,
        **extra,
    )
    workflow.initialize()
    if not (data / "datalist.json").is_file():
        raise AssertionError(f"bundle {name}: its 'initialize' did not build demo data in {data}")
    return data


def tiny_overrides(name: str, max_epochs: int = 2) -> dict[str, Any]:
    """Small CPU settings for bundle ``name`` (used on top of its ``configs/demo.json`` overlay)."""
    kind = bundle_kind(name)
    common = {
        "dataset_dir": str(demo_dataset_dir(name)),
        "build_demo_data": False,
        "num_workers": 0,
        "max_epochs": max_epochs,
        "seed": 0,
    }
    if kind == "saqm":
        return {**common, "width": 0.0625, "patches_per_image": 4, "batch_size": 8}
    if kind == "mkcnet":
        return {**common, "width": 0.0625, "val_interval": 1}
    if kind == "saqm_pretrained":  # the "tiny" corpus preset (demo_dataset_dir), ranking loss on
        return {**common, "width": 0.0625, "batch_size": 4}
    return common


def train_configs(name: str, bundle: Path | None = None) -> list[str]:
    """Config files of a tiny training run: SAQM in semi-supervised DA mode (two loaders), others as shipped,
    then the demo overlay when the bundle has one."""
    bundle = bundle or bundle_dir(name)
    configs = ["configs/train.json"]
    if bundle_kind(name) == "saqm" and (bundle / "configs" / "semi_supervised_da.json").is_file():
        configs.append("configs/semi_supervised_da.json")
    if (bundle / "configs" / "demo.json").is_file():
        configs.append("configs/demo.json")
    return configs


@functools.cache
def reference_run(name: str) -> Path:
    """Bundle ``name`` trained once per session with :func:`tiny_overrides` (2 epochs); read its outputs only."""
    bundle = copy_bundle(name, SCRATCH / "reference" / name)
    proc = run_bundle(bundle, train_configs(name, bundle), tiny_overrides(name))
    (bundle / "train.log").write_text(proc.stdout + proc.stderr, encoding="utf-8")
    return bundle


def torch_state_equal(a: Mapping[str, Any], b: Mapping[str, Any], path: str = "") -> list[str]:
    """Keys (dotted) where two nested state dicts differ (``torch.equal`` on tensors, ``==`` otherwise)."""
    import torch

    diffs: list[str] = []
    if set(a) != set(b):
        return [f"{path}: keys differ ({sorted(set(a) ^ set(b))[:5]})"]
    for k in a:
        va, vb, p = a[k], b[k], f"{path}.{k}" if path else str(k)
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            diffs += torch_state_equal(va, vb, p)
        elif isinstance(va, torch.Tensor) and isinstance(vb, torch.Tensor):
            if va.shape != vb.shape or va.dtype != vb.dtype or not torch.equal(va, vb):
                diffs.append(p)
        elif isinstance(va, (list, tuple)) and isinstance(vb, (list, tuple)):
            if len(va) != len(vb):
                diffs.append(p)
            else:
                for i, (x, y) in enumerate(zip(va, vb)):
                    if isinstance(x, Mapping) and isinstance(y, Mapping):
                        diffs += torch_state_equal(x, y, f"{p}[{i}]")
                    elif isinstance(x, torch.Tensor):
                        if not (isinstance(y, torch.Tensor) and torch.equal(x, y)):
                            diffs.append(f"{p}[{i}]")
                    elif x != y:
                        diffs.append(f"{p}[{i}]")
        elif va != vb:
            diffs.append(p)
    return diffs
