"""End-to-end workflows of the five MKCNet bundles on CPU (demo overlay plus tiny overrides), in temporary copies.

Per bundle: train (``train.json`` + ``demo.json``) → ``models/model.pt`` and ``models/checkpoint.pt``; evaluate
(``evaluate.json``) → ``eval/metrics.csv`` and ``eval/predictions.csv``; infer (``inference.json``, standalone) on a
folder → ``eval/inference.csv`` whose diagnosis and quality probabilities each sum to 1. The ablation overlays run
on the EyeQ bundle; a corrupt image fails inference with an error naming it; the configs carry the official
data-set facts of ``IQAD_DATASETS``. The demo data are built once per session by each bundle's own ``initialize``
(``bundle_testing.demo_dataset_dir``), the networks are 1/16 wide on 32×32 inputs, one epoch. The results script
``benchmarks/mkcnet_demo_results.py`` runs in ``--quick`` mode.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from bundle_testing import (  # noqa: F401  (one_thread: fixture)
    REPO,
    bundle_dir,
    copy_bundle,
    demo_dataset_dir,
    one_thread,
    read_json,
    subprocess_env,
)

from monai_iqad.data import IQAD_DATASETS

MKCNET_BUNDLES = {
    "fundus_eyeq_mkcnet_iqad": "eyeq",
    "fundus_deepdr_mkcnet_iqad": "deepdr",
    "octa_mkcnet_iqad": "drac",
    "ct_mkcnet_iqad": "iqad_ct",
    "chest_xray_mkcnet_iqad": "iqad_cxr",
}
TINY = {"width": 0.0625, "image_size": [32, 32], "max_epochs": 1, "val_interval": 1, "num_workers": 0, "seed": 0}
TINY_INFER = {"width": TINY["width"], "image_size": TINY["image_size"]}
OVERLAYS = ("vanilla", "multitask", "first_order", "per_iteration", "official")
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def _workflow(bundle: Path, configs: list[str], workflow_type: str = "train", **overrides: Any):
    from monai.bundle import ConfigWorkflow

    return ConfigWorkflow(
        config_file=[str(bundle / c) for c in configs],
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type=workflow_type,
        bundle_root=str(bundle),
        **overrides,
    )


def _run(bundle: Path, configs: list[str], workflow_type: str = "train", **overrides: Any) -> None:
    workflow = _workflow(bundle, configs, workflow_type, **overrides)
    workflow.initialize()
    try:
        workflow.run()
    finally:
        workflow.finalize()


def _train_overrides(name: str) -> dict[str, Any]:
    return {**TINY, "dataset_dir": str(demo_dataset_dir(name)), "build_demo_data": False}


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _metrics(path: Path) -> dict[str, float]:
    with open(path, newline="") as fh:
        return {row[0]: float(row[1]) for row in csv.reader(fh) if len(row) >= 2}


def _chain(err: BaseException | None) -> list[BaseException]:
    """An exception and its causes (MONAI wraps errors raised inside config expressions and transforms)."""
    out = []
    while err is not None and err not in out:
        out.append(err)
        err = err.__cause__ or err.__context__
    return out


def _names(name: str) -> tuple[list[str], list[str]]:
    cfg = read_json(bundle_dir(name) / "configs" / "train.json")
    return cfg["diagnosis_names"], cfg["quality_names"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Bundle name → a temporary copy trained for one tiny epoch (trained on first use, shared by the tests)."""
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                bundle = copy_bundle(name, tmp_path_factory.mktemp("mkcnet") / name)
                _run(bundle, ["configs/train.json", "configs/demo.json"], **_train_overrides(name))
            finally:
                torch.set_num_threads(threads)
            cache[name] = bundle
        return cache[name]

    return get


# ----------------------------------------------------------------------------------------------------------------------
# train → evaluate → infer, every bundle


@pytest.mark.parametrize("name", list(MKCNET_BUNDLES))
def test_train_evaluate_infer(name, trained, tmp_path):
    bundle = trained(name)
    assert (bundle / "models" / "model.pt").is_file() and (bundle / "models" / "checkpoint.pt").is_file()
    state = torch.load(bundle / "models" / "checkpoint.pt", weights_only=True)
    assert {"network", "meta_learner", "optimizer", "meta_optimizer", "trainer"} <= set(state)
    d_names, q_names = _names(name)
    nd, nq = len(d_names), len(q_names)

    # evaluate.json: all metrics and one row per test image
    _run(bundle, ["configs/train.json", "configs/demo.json", "configs/evaluate.json"], **_train_overrides(name))
    metrics = _metrics(bundle / "eval" / "metrics.csv")
    for key in ("auc", "auc_official", "acc", "f1", "n", *(f"acc_q{g}" for g in range(nq))):
        assert key in metrics, f"metrics.csv lacks {key}: {sorted(metrics)}"
    test_items = read_json(demo_dataset_dir(name) / "datalist.json")["test"]
    assert metrics["n"] == len(test_items)
    rows = _csv(bundle / "eval" / "predictions.csv")
    expected = (
        ["filename"]
        + [f"diagnosis_{n}" for n in d_names]
        + [f"quality_{n}" for n in q_names]
        + ["true_diagnosis", "true_quality", "predicted_diagnosis", "predicted_quality"]
    )
    assert list(rows[0]) == expected
    assert len(rows) == len(test_items)
    for row in rows:
        assert sum(float(row[f"diagnosis_{n}"]) for n in d_names) == pytest.approx(1.0, abs=1e-4)
        assert row["predicted_diagnosis"] in d_names and row["predicted_quality"] in q_names
        assert 0 <= int(row["true_diagnosis"]) < nd and 0 <= int(row["true_quality"]) < nq

    # inference.json (standalone) on a folder of three images
    images = tmp_path / "images"
    images.mkdir()
    for item in test_items[:3]:
        shutil.copy(demo_dataset_dir(name) / item["image"], images)
    _run(bundle, ["configs/inference.json"], "infer", input_dir=str(images), **TINY_INFER)
    rows = _csv(bundle / "eval" / "inference.csv")
    assert len(rows) == 3
    assert list(rows[0])[1:] == [f"diagnosis_{n}" for n in d_names] + [f"quality_{n}" for n in q_names] + [
        "predicted_diagnosis",
        "predicted_quality",
    ]
    for row in rows:
        p_d = [float(row[f"diagnosis_{n}"]) for n in d_names]
        p_q = [float(row[f"quality_{n}"]) for n in q_names]
        assert sum(p_d) == pytest.approx(1.0, abs=1e-4) and sum(p_q) == pytest.approx(1.0, abs=1e-4)
        assert row["predicted_diagnosis"] == d_names[max(range(nd), key=p_d.__getitem__)]
        assert row["predicted_quality"] == q_names[max(range(nq), key=p_q.__getitem__)]


# ----------------------------------------------------------------------------------------------------------------------
# ablation overlays (EyeQ)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlays_train_and_evaluate(overlay, tmp_path):
    name = "fundus_eyeq_mkcnet_iqad"
    bundle = copy_bundle(name, tmp_path / name)
    configs = ["configs/train.json", f"configs/{overlay}.json", "configs/demo.json"]
    _run(bundle, configs, **_train_overrides(name))
    checkpoint = torch.load(bundle / "models" / "checkpoint.pt", weights_only=True)
    assert ("meta_learner" in checkpoint) == (overlay not in ("vanilla", "multitask"))
    if overlay not in ("vanilla", "multitask", "official"):
        return
    _run(bundle, [*configs, "configs/evaluate.json"], **_train_overrides(name))
    header = list(_csv(bundle / "eval" / "predictions.csv")[0])
    # the diagnosis-only baseline has no quality head: no predicted quality columns
    assert ("predicted_quality" in header) == (overlay != "vanilla")
    assert "true_quality" in header and "predicted_diagnosis" in header


# ----------------------------------------------------------------------------------------------------------------------
# bad input and missing weights


def test_inference_names_a_corrupt_image(trained, tmp_path):
    name = "ct_mkcnet_iqad"
    bundle = trained(name)
    images = tmp_path / "images"
    images.mkdir()
    first = read_json(demo_dataset_dir(name) / "datalist.json")["test"][0]["image"]
    shutil.copy(demo_dataset_dir(name) / first, images / "a_good.png")
    (images / "b_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not a png at all" * 8)
    # default on_error "skip": the readable image is scored, the unreadable one is listed in eval/errors.csv
    _run(bundle, ["configs/inference.json"], "infer", input_dir=str(images), **TINY_INFER)
    assert [Path(r["filename"]).name for r in _csv(bundle / "eval" / "inference.csv")] == ["a_good.png"]
    assert [Path(r["filename"]).name for r in _csv(bundle / "eval" / "errors.csv")] == ["b_corrupt.png"]
    with pytest.raises(Exception) as info:
        _run(bundle, ["configs/inference.json"], "infer", input_dir=str(images), on_error="stop", **TINY_INFER)
    messages = [str(e) for e in _chain(info.value)]
    assert any("b_corrupt.png" in m for m in messages), f"the error does not name the file: {messages}"


def test_inference_without_weights_fails_clearly(tmp_path):
    name = "octa_mkcnet_iqad"
    bundle = copy_bundle(name, tmp_path / name)
    images = demo_dataset_dir(name) / "images"
    with pytest.raises(Exception) as info:
        _run(bundle, ["configs/inference.json"], "infer", input_dir=str(images), width=TINY["width"])
    missing = [e for e in _chain(info.value) if isinstance(e, FileNotFoundError)]
    assert missing and "No trained weights" in str(missing[0]) and "model.pt" in str(missing[0])


# ----------------------------------------------------------------------------------------------------------------------
# configs: official hyper-parameters, overlays, multi-GPU wiring (no training)


def _parsed(name: str, configs: list[str], ids: list[str]) -> dict[str, Any]:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(bundle_dir(name) / c) for c in configs])
    return {i: parser.get_parsed_content(i, instantiate=False) for i in ids}


@pytest.mark.parametrize("name", list(MKCNET_BUNDLES))
def test_dataset_facts_and_recipe(name):
    """The data-set facts of ``train.json``, ``inference.json`` and the network are those of ``IQAD_DATASETS`` (the
    one source the renderer reads); the demo overlay changes only the size/budget of the run, never the method."""
    info = IQAD_DATASETS[MKCNET_BUNDLES[name]]
    ids = ("dataset_name", "diagnosis_names", "quality_names", "network_def#aux_per_class", "network_def#in_channels")
    expected = [info.name, list(info.diagnosis_names), list(info.quality_names), info.k, info.channels]
    train = _parsed(name, ["configs/train.json"], [*ids, "validate#additional_metrics#diagnosis#f1_average"])
    assert list(train.values()) == [*expected, info.f1_average]
    inference = _parsed(name, ["configs/inference.json"], [i.replace("network_def#", "network_def#net#") for i in ids])
    assert list(inference.values()) == expected
    cfg = read_json(bundle_dir(name) / "configs" / "train.json")
    assert len(cfg) <= 35, f"train.json has {len(cfg)} top-level ids"
    assert cfg["seed"] == 43 and cfg["width"] == 1.0 and cfg["build_demo_data"] is False
    assert cfg["train"]["trainer"]["schedule"] == "epoch"
    assert cfg["validate"]["split"] == ("test" if info.name == "drac" else "validation")
    demo = read_json(bundle_dir(name) / "configs" / "demo.json")
    method = {"train#trainer#entropy_weight", "train#meta_optimizer#lr", "train#trainer#schedule", "train#optimizer"}
    assert not {k for k in demo if any(k.startswith(m) for m in method)}, "demo.json must not change the method"
    assert demo["val_interval"] == 1 and demo["build_demo_data"] is True


@pytest.mark.parametrize("name", list(MKCNET_BUNDLES))
def test_metadata_matches_configs(name):
    meta = read_json(bundle_dir(name) / "configs" / "metadata.json")
    d_names, q_names = _names(name)
    pred = meta["network_data_format"]["outputs"]["pred"]
    assert pred["channel_def"] == {
        **{str(i): f"diagnosis: {n}" for i, n in enumerate(d_names)},
        **{str(len(d_names) + j): f"quality: {n}" for j, n in enumerate(q_names)},
    }
    image = meta["network_data_format"]["inputs"]["image"]
    assert image["num_channels"] == IQAD_DATASETS[MKCNET_BUNDLES[name]].channels
    assert image["spatial_shape"] == [256, 256] and image["dtype"] == "float32"
    assert {"auc", "acc", "f1"} <= set(meta["eval_metrics"])
    assert "monai-label" in meta["supported_apps"]


@pytest.mark.parametrize(
    "overlay, unused", [(None, False), ("vanilla", False), ("multitask", True)], ids=["mkcnet", "vanilla", "multitask"]
)
def test_multi_gpu_overlay_wiring(overlay, unused):
    """DDP wraps the task net only; ``find_unused_parameters`` is on exactly when the auxiliary head is unused."""
    name = "fundus_eyeq_mkcnet_iqad"
    configs = ["configs/train.json", *([f"configs/{overlay}.json"] if overlay else []), "configs/multi_gpu_train.json"]
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(bundle_dir(name) / c) for c in configs])
    network = parser.get("network")
    assert network["_target_"] == "torch.nn.parallel.DistributedDataParallel"
    assert parser.get_parsed_content("train#find_unused_parameters") is unused
    assert "meta_learner" not in json.dumps(network)
    assert parser.get("train#trainer#train_handlers").startswith("$monai_iqad.handlers.for_this_rank")
    evaluate = ConfigParser()
    evaluate.read_config([str(bundle_dir(name) / c) for c in ("configs/train.json", "configs/multi_gpu_evaluate.json")])
    assert evaluate.get("run") == ["$@validate#evaluator.run()"]


# ----------------------------------------------------------------------------------------------------------------------
# the results script (benchmarks/mkcnet_demo_results.py) in --quick mode


def test_demo_results_script_quick(tmp_path):
    """The script trains and evaluates MKCNet and vanilla with the bundle configs (subprocesses) and writes only
    its bundle's section of the results page."""
    out = tmp_path / "results.md"
    foreign = "<!-- other:start -->\nsomeone else's section\n<!-- other:end -->\n"
    out.write_text(f"# Results\n\n{foreign}")
    cmd = [sys.executable, str(REPO / "benchmarks" / "mkcnet_demo_results.py"), "--quick", "--output", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = out.read_text()
    assert foreign in text
    section = text[text.index("<!-- mkcnet_demo_results/fundus_eyeq_mkcnet_iqad:start -->") :]
    for row in ("| `mkcnet` |", "| `vanilla` |", "AUC (low q.)"):
        assert row in section
    assert "fundus_eyeq_mkcnet_iqad mkcnet seed 0: AUC" in proc.stdout
