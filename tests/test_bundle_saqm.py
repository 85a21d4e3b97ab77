"""End-to-end runs of every SAQM bundle config on tiny demo data, in temporary copies of the bundle.

The pretrained ``medical_saqm_iqa`` bundle: its shipped weights, folder inference with them right after clone, and a
tiny pretraining run (ranking loss on) plus evaluation on the "tiny" corpus preset.

Training in the paper's four configurations (``train.json`` = target only, ``source_only.json``,
``unsupervised_da.json``, ``semi_supervised_da.json``), ``evaluate.json`` and ``inference.json`` (folder and datalist),
each as a MONAI ``ConfigWorkflow`` (initialize, property check, run, finalize), with width 1/16, 4 patches per
image and 1 epoch.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from bundle_testing import (
    bundle_dir,
    copy_bundle,
    demo_dataset_dir,
    one_thread,  # noqa: F401  (fixture)
    read_json,
    reference_run,
    saqm_bundles,
    tiny_overrides,
)

from monai_iqad.networks import SAQM, SAQMRouter
from monai_iqad.utils import as_bool

#: the SAQM bundles with the paper's domain-adaptation configurations (the pretrained medical bundle is tested below)
BUNDLES = [n for n in saqm_bundles() if (bundle_dir(n) / "configs" / "semi_supervised_da.json").is_file()]
MEDICAL = "medical_saqm_iqa"
HAS_MEDICAL = (bundle_dir(MEDICAL) / "configs").is_dir()
pytestmark = [
    pytest.mark.skipif(not BUNDLES, reason="no SAQM bundle in bundles/"),
    pytest.mark.usefixtures("one_thread"),
]

MODES = {
    "target_only": [],
    "source_only": ["configs/source_only.json"],
    "unsupervised": ["configs/unsupervised_da.json"],
    "semi_supervised": ["configs/semi_supervised_da.json"],
}


def _workflow(bundle: Path, configs: list[str], overrides: dict[str, Any], workflow_type: str = "train"):
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(
        config_file=[str(bundle / c) for c in configs],
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type=workflow_type,
        bundle_root=str(bundle),
        **overrides,
    )
    workflow.initialize()
    assert workflow.check_properties() == []
    return workflow


def _run(bundle: Path, configs: list[str], overrides: dict[str, Any], workflow_type: str = "train"):
    workflow = _workflow(bundle, configs, overrides, workflow_type)
    try:
        workflow.run()
    finally:
        workflow.finalize()
    return workflow


def _trained_copy(name: str, dst: Path) -> Path:
    """A bundle copy holding the model trained by the session's reference run (same tiny width)."""
    bundle = copy_bundle(name, dst)
    for f in ("model.pt", "model.pt.json"):
        shutil.copy2(reference_run(name) / "models" / f, bundle / "models" / f)
    return bundle


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("name", BUNDLES)
def test_training_configurations(name, mode, tmp_path):
    """Each configuration of the paper's Table 2 trains one epoch: right loaders, loss terms and checkpoint."""
    bundle = copy_bundle(name, tmp_path / name)
    configs = ["configs/train.json", *MODES[mode], "configs/demo.json"]
    # validation is covered by test_evaluate and by the reference run (test_tensorboard, test_resume)
    workflow = _run(bundle, configs, {**tiny_overrides(name, max_epochs=1), "val_interval": 2})
    trainer = workflow.parser.get_parsed_content("train#trainer")
    assert trainer.mode == mode and trainer.state.epoch == 1
    datalist = read_json(demo_dataset_dir(name) / "datalist.json")["training"]
    domain = "target" if mode == "target_only" else "source"
    expected = [d for d in datalist if d["domain"] == domain and (domain == "source" or d["mos"] is not None)]
    assert len(trainer.data_loader.dataset) == len(expected), "regression loader holds the wrong domain"
    out = trainer.state.output[0]
    adversarial = mode in ("unsupervised", "semi_supervised")
    assert (trainer.target_data_loader is not None) == adversarial
    assert (float(out["loss_dom"]) > 0) == adversarial
    assert float(out["grl_lambda"]) > 0 if adversarial else float(out["grl_lambda"]) == 0
    ckpt = torch.load(bundle / "models" / "checkpoint.pt", weights_only=True)
    assert {"network", "domain_classifier", "optimizer", "trainer"} <= set(ckpt)
    assert ckpt["trainer"]["iteration"] == ckpt["trainer"]["epoch_length"]  # one epoch


@pytest.mark.slow
@pytest.mark.parametrize("name", BUNDLES)
def test_evaluate(name, tmp_path):
    """``evaluate.json`` scores the held-out target test split with the trained model: metrics and one CSV row per
    test image."""
    bundle = _trained_copy(name, tmp_path / name)
    configs = ["configs/train.json", "configs/semi_supervised_da.json", "configs/demo.json", "configs/evaluate.json"]
    _run(bundle, configs, tiny_overrides(name))
    text = (bundle / "eval" / "metrics.csv").read_text(encoding="utf-8")
    for metric in ("srocc", "plcc", "plcc_logistic", "krcc"):
        assert re.search(rf"^{metric}\b", text, re.M), f"{metric} missing from metrics.csv:\n{text}"
    test_items = read_json(demo_dataset_dir(name) / "datalist.json")["test"]
    rows = _rows(bundle / "eval" / "predictions.csv")
    assert len(rows) == len(test_items)
    assert all(0.0 <= float(r["score"]) <= 1.0 and 0.0 <= float(r["mos_normalised"]) <= 1.0 for r in rows)


@pytest.mark.slow
@pytest.mark.parametrize("name", BUNDLES)
def test_inference_folder_and_datalist(name, tmp_path):
    """``inference.json`` (standalone) scores every image of a folder, or a datalist section, into a CSV."""
    bundle = _trained_copy(name, tmp_path / name)
    data = demo_dataset_dir(name)
    overrides = {k: v for k, v in tiny_overrides(name).items() if k in ("dataset_dir", "width", "num_workers")}
    configs = ["configs/inference.json", "configs/demo.json"]
    _run(bundle, configs, {**overrides, "build_demo_data": False}, "infer")
    rows = _rows(bundle / "eval" / "scores.csv")
    images = sorted(p for p in (data / "target").rglob("*.png"))
    assert [r["filename"] for r in rows] == [str(p) for p in images]
    assert all(0.0 <= float(r["score"]) <= 1.0 for r in rows)

    _run(bundle, configs, {**overrides, "datalist_key": "test", "output_filename": "test.csv"}, "infer")
    rows = _rows(bundle / "eval" / "test.csv")
    assert len(rows) == len(read_json(data / "datalist.json")["test"])


@pytest.mark.parametrize("name", BUNDLES)
def test_inference_without_weights_fails_clearly(name, tmp_path):
    bundle = copy_bundle(name, tmp_path / name)
    overrides = {"dataset_dir": str(demo_dataset_dir(name)), "width": 0.0625, "num_workers": 0}
    workflow = _workflow(bundle, ["configs/inference.json"], overrides, "infer")
    with pytest.raises(FileNotFoundError, match="No trained weights"):
        workflow.evaluator.run()


def test_as_bool():
    assert as_bool(True) and as_bool("true") and as_bool(" Yes ") and as_bool(1) and as_bool("1")
    assert not (as_bool(False) or as_bool("false") or as_bool("off") or as_bool(None) or as_bool(0))
    with pytest.raises(ValueError, match="treu"):
        as_bool("treu")


@pytest.mark.parametrize(
    "resume, finetune, expected",
    [
        ("false", "false", (False, False)),
        ("true", "false", (True, False)),
        ("false", "true", (False, True)),
        (True, True, (True, False)),  # resume wins: the checkpoint holds the weights already
    ],
)
@pytest.mark.parametrize("name", BUNDLES)
def test_resume_and_finetune_flags(name, resume, finetune, expected):
    """``--resume false`` arrives as the string "false" (Python Fire): it must not enable the loader."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle_dir(name) / "configs" / "train.json"))
    parser["resume"], parser["finetune"] = resume, finetune
    enabled = {}
    for i, h in enumerate(parser["train"]["handlers"]):
        kind = h["_target_"].rsplit(".", 1)[-1]
        if kind in ("ResumeCheckpointLoader", "TrainedModelLoader"):
            enabled[kind] = not parser.get_parsed_content(f"train#handlers#{i}#_disabled_")
    assert (enabled["ResumeCheckpointLoader"], enabled["TrainedModelLoader"]) == expected


@pytest.mark.parametrize("name", BUNDLES)
def test_readme_commands_use_existing_configs(name):
    readme = (bundle_dir(name) / "docs" / "README.md").read_text(encoding="utf-8")
    configs = set(re.findall(r"configs/[A-Za-z0-9_]+\.json", readme))
    missing = sorted(c for c in configs if not (bundle_dir(name) / c).is_file())
    assert not missing, f"README names missing configs: {missing}"
    for needed in (
        "configs/semi_supervised_da.json",
        "configs/unsupervised_da.json",
        "configs/source_only.json",
        "configs/demo.json",
        "configs/evaluate.json",
        "configs/inference.json",
        "configs/multi_gpu_train.json",
        "configs/multi_gpu_evaluate.json",
        "--resume True",
        "--finetune True",
        "ckpt_export",
        "onnx_export",
        "monai_iqad.data.converters tid2013",
        "monai_iqad.data.converters md72",
    ):
        assert needed in readme, f"README lacks {needed!r}"


# ----------------------------------------------------------------------------------------------------------------------
# the pretrained medical bundle

medical = pytest.mark.skipif(not HAS_MEDICAL, reason=f"no {MEDICAL} bundle")


def _shipped_model() -> Path:
    path = bundle_dir(MEDICAL) / "models" / "model.pt"
    if not path.is_file():
        pytest.skip(f"{path} is not in this checkout")
    return path


@medical
def test_medical_shipped_weights():
    """The shipped fp32 state dict is at most 25 MB, loads strictly (weights_only) into the inference network and
    its sha256 is the one the README records."""
    import hashlib

    from monai.bundle import ConfigParser

    path = _shipped_model()
    assert path.stat().st_size <= 25 * 2**20
    parser = ConfigParser()
    parser.read_config(str(bundle_dir(MEDICAL) / "configs" / "inference.json"))
    net = parser.get_parsed_content("network_def")
    state = torch.load(path, map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest in (bundle_dir(MEDICAL) / "docs" / "README.md").read_text(encoding="utf-8")
    # the router: radiographs (CR, DX) to expert 1 (conditioned), everything else and unknown to expert 0 (3 channels)
    assert isinstance(net, SAQMRouter) and state["route"].tolist() == [1, 0, 0, 0, 0, 0, 0]
    assert [net.expert_of(m) for m in ("CR", "DX", "CT", "MR", "US", "fundus", "natural", None)] == [1, 1] + [0] * 6
    for k, channels in ((0, 3), (1, 9)):
        SAQM(in_channels=channels, width=0.125).load_state_dict(SAQMRouter.expert_state_dict(state, k))


@medical
@pytest.mark.parametrize("name", BUNDLES)
def test_finetune_from_the_shipped_router_loads_expert_0(name, tmp_path):
    """The README's fine-tune from the shipped medical weights (``--finetune True --finetune_expert 0 --width 0.125``,
    ``ckpt_dir`` holding a copy of its ``model.pt``): the training config's loader puts expert 0 into the network."""
    from ignite.engine import Engine
    from monai.bundle import ConfigParser

    shutil.copy2(_shipped_model(), tmp_path / "model.pt")
    parser = ConfigParser()
    parser.read_config(str(bundle_dir(name) / "configs" / "train.json"))
    parser.update({"finetune": True, "finetune_expert": 0, "width": 0.125, "ckpt_dir": str(tmp_path), "device": "cpu"})
    (i,) = (i for i, h in enumerate(parser["train"]["handlers"]) if h["_target_"].endswith("TrainedModelLoader"))
    assert not parser.get_parsed_content(f"train#handlers#{i}#_disabled_")
    loader = parser.get_parsed_content(f"train#handlers#{i}")
    engine = Engine(lambda e, b: None)
    loader.attach(engine)
    engine.run([0], max_epochs=1)
    expert = SAQMRouter.expert_state_dict(torch.load(tmp_path / "model.pt", weights_only=True), 0)
    net = parser.get_parsed_content("network")
    assert all(torch.equal(v, expert[k]) for k, v in net.state_dict().items())


@medical
def test_medical_router_settings_are_one_fact():
    """``evaluate.json`` evaluates the shipped router with the same ``network_def``, ``routes`` and ``modalities`` as
    ``inference.json`` (the model zoo wants each config self-contained, so they are written twice and checked here);
    ``single_saqm.json`` turns either into one SAQM."""
    configs = bundle_dir(MEDICAL) / "configs"
    inference, evaluate = (read_json(configs / f"{n}.json") for n in ("inference", "evaluate"))
    for key in ("network_def", "routes", "modalities"):
        assert evaluate[key] == inference[key], key
    assert inference["network_def"]["_target_"] == "monai_iqad.networks.SAQMRouter"
    single = read_json(configs / "single_saqm.json")
    assert single["network_def"]["_target_"] == "monai_iqad.networks.SAQM" and single["modalities"] is None


@medical
def test_medical_inference_after_clone_ranks_distortions(tmp_path):
    """``inference.json`` with the shipped weights scores a folder; heavy noise and blur score below the original."""
    import numpy as np
    from PIL import Image
    from scipy import ndimage
    from skimage import data as skdata

    model = _shipped_model()
    bundle = copy_bundle(MEDICAL, tmp_path / MEDICAL)
    shutil.copy2(model, bundle / "models" / "model.pt")
    folder = tmp_path / "images"
    folder.mkdir()
    clean = skdata.camera()[96:224, 160:288].astype(np.float64) / 255.0
    noisy = np.clip(clean + 0.15 * np.random.default_rng(0).standard_normal(clean.shape), 0, 1)
    blurred = ndimage.gaussian_filter(clean, 3.0)
    for name, img in (("a_clean", clean), ("b_noisy", noisy), ("c_blurred", blurred)):
        Image.fromarray(np.round(img * 255).astype(np.uint8)).save(folder / f"{name}.png")
    _run(bundle, ["configs/inference.json"], {"input_dir": str(folder), "num_workers": 0}, "infer")
    rows = _rows(bundle / "eval" / "scores.csv")
    scores = {Path(r["filename"]).stem: float(r["score"]) for r in rows}
    assert sorted(scores) == ["a_clean", "b_noisy", "c_blurred"]
    assert all(0.0 <= v <= 1.0 for v in scores.values())
    assert scores["a_clean"] > scores["b_noisy"] and scores["a_clean"] > scores["c_blurred"], scores


@medical
def test_medical_inference_serves_any_saved_router(tmp_path):
    """``inference.json`` and ``monai-iqad score`` build the router that ``models/model.pt`` holds, here three experts,
    MR to a two-member ensemble (``SAQMRouter.architecture_of``), and score each image with its modality's expert."""
    import numpy as np
    from dicom_files import dicom_file
    from PIL import Image
    from skimage import data as skdata

    from monai_iqad.networks import SAQMEnsemble
    from monai_iqad.score import SAQMScorer

    torch.manual_seed(0)
    plain, conditioned = SAQM(in_channels=3, width=0.125), SAQM(in_channels=9, width=0.125)
    members = [SAQM(in_channels=9, width=0.125) for _ in range(2)]
    for net in (plain, conditioned, *members):
        with torch.no_grad():
            net.attention.gamma.fill_(float(torch.rand(())))
    ensemble = SAQMEnsemble.from_state_dicts([m.state_dict() for m in members], width=0.125)
    states = [plain.state_dict(), conditioned.state_dict(), ensemble.state_dict()]
    router = SAQMRouter.from_state_dicts(states, routes={"CR": 1, "MR": 2}, width=0.125).eval()
    bundle = copy_bundle(MEDICAL, tmp_path / MEDICAL)
    torch.save(router.state_dict(), bundle / "models" / "model.pt")
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(skdata.camera()[96:224, 160:288].astype(np.uint8)).save(folder / "a_camera.png")
    shutil.copy(dicom_file("MR_small.dcm"), folder / "b_mr.dcm")
    _run(bundle, ["configs/inference.json"], {"input_dir": str(folder), "num_workers": 0}, "infer")
    scores = {Path(r["filename"]).stem: float(r["score"]) for r in _rows(bundle / "eval" / "scores.csv")}
    scorer = SAQMScorer(bundle)
    assert isinstance(scorer.network.experts[2], SAQMEnsemble) and scorer.network.route.tolist()[2] == 2
    for stem, expert in (("a_camera", 0), ("b_mr", 2)):
        x = scorer.preprocessing({"image": str(next(folder.glob(stem + ".*")))})["image"].as_tensor()[None]
        with torch.no_grad():
            want = float(router(x))
            member_mean = float(sum(m.eval()(x) for m in members) / 2)
        assert scores[stem] == pytest.approx(want, abs=1e-6)
        assert scorer({"image": str(next(folder.glob(stem + ".*")))}) == pytest.approx(want, abs=1e-6)
        assert (expert == 2) == (want == pytest.approx(member_mean, abs=1e-6))


@medical
@pytest.mark.slow
def test_medical_pretrain_and_evaluate_tiny(tmp_path):
    """``train.json`` + ``pretrain.json`` on the tiny corpus: one epoch with the ranking loss, a model.pt (one SAQM),
    then ``evaluate.json`` with the one-SAQM overlay ``single_saqm.json`` writes metrics and one prediction per unique
    test image."""
    bundle = copy_bundle(MEDICAL, tmp_path / MEDICAL)
    overrides = {
        "dataset_dir": str(demo_dataset_dir(MEDICAL)),
        "build_demo_data": False,
        "width": 0.0625,
        "max_epochs": 1,
        "time_limit_s": 600,
        "batch_size": 4,
    }
    workflow = _run(bundle, ["configs/train.json", "configs/pretrain.json"], overrides)
    trainer = workflow.parser.get_parsed_content("train#trainer")
    out = trainer.state.output[0] if isinstance(trainer.state.output, list) else trainer.state.output
    assert trainer.ranking_loss is not None and float(out["loss_rank"]) > 0
    assert (bundle / "models" / "model.pt").is_file() and (bundle / "models" / "checkpoint.pt").is_file()
    evaluate = ["configs/train.json", "configs/evaluate.json", "configs/single_saqm.json"]  # a trained single SAQM
    _run(bundle, evaluate, {**overrides, "num_threads": 1})
    text = (bundle / "eval" / "metrics.csv").read_text(encoding="utf-8")
    assert re.search(r"^srocc\b", text, re.M) and re.search(r"^plcc\b", text, re.M)
    test_items = read_json(demo_dataset_dir(MEDICAL) / "datalist.json")["test"]
    rows = _rows(bundle / "eval" / "predictions.csv")
    assert len(rows) == len({d["image"] for d in test_items})
    assert all(0.0 <= float(r["score"]) <= 1.0 for r in rows)


def _medical_experiment_overrides() -> dict[str, Any]:
    """One tiny epoch (width 0.0625, batch 4, one thread) of an experiment overlay on the tiny corpus."""
    tiny = {"width": 0.0625, "max_epochs": 1, "val_interval": 1, "batch_size": 4, "num_threads": 1}
    return {"dataset_dir": str(demo_dataset_dir(MEDICAL)), "build_demo_data": False, **tiny}


@pytest.mark.skipif(not HAS_MEDICAL, reason="no medical_saqm_iqa bundle")
def test_medical_anneal_overlay_tiny(tmp_path):
    """``pretrain_anneal.json`` (an issue-11 experiment) appends a cosine learning-rate schedule over
    ``anneal_epochs`` to the training handlers and keeps one checkpoint per epoch: after 1 of 2 epochs the learning
    rate is lr0 (1 + cos(π/2)) / 2 = lr0 / 2; the resumable checkpoint holds the schedule's state."""
    bundle = copy_bundle(MEDICAL, tmp_path / MEDICAL)
    overrides = {**_medical_experiment_overrides(), "finetune": False, "anneal_epochs": 2}
    configs = ["configs/train.json", "configs/pretrain.json", "configs/pretrain_anneal.json"]
    workflow = _run(bundle, configs, overrides)
    lr0 = workflow.parser.get_parsed_content("learning_rate")
    assert lr0 == pytest.approx(1e-4)
    assert workflow.parser.get_parsed_content("optimizer").param_groups[0]["lr"] == pytest.approx(lr0 / 2, rel=1e-9)
    assert (bundle / "runs" / "anneal" / "epochs" / "model_epoch=1.pt").is_file()
    state = torch.load(bundle / "runs" / "anneal" / "checkpoint.pt", weights_only=True)
    assert state["lr_scheduler"]["last_epoch"] == 1
    # resuming continues the cosine (epoch 2 of 2: lr0 (1 + cos(π)) / 2 = 0); a restarted one would give lr0 / 2 again
    workflow = _run(bundle, configs, {**overrides, "max_epochs": 2, "resume": True})
    assert workflow.parser.get_parsed_content("optimizer").param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def _modality_experiment(tmp_path: Path, *overlays: str, **overrides: Any) -> tuple[Path, SAQM, Any]:
    """A copy of the medical bundle and the (unrun) workflow of ``pretrain_modality.json`` + ``overlays`` on the tiny
    corpus, warm-started from a seeded width-0.0625 3-channel SAQM (returned as ``init``), saved as expert 0 of a
    router like the shipped ``models/model.pt`` (``init_expert`` 0)."""
    bundle = copy_bundle(MEDICAL, tmp_path / MEDICAL)
    torch.manual_seed(0)
    init = SAQM(width=0.0625)
    other = SAQM(in_channels=9, width=0.0625)
    router = SAQMRouter.from_state_dicts([init.state_dict(), other.state_dict()], routes={"CR": 1}, width=0.0625)
    torch.save(router.state_dict(), tmp_path / "init.pt")
    overrides = {**_medical_experiment_overrides(), "init_path": str(tmp_path / "init.pt"), **overrides}
    configs = ["configs/train.json", "configs/pretrain.json", "configs/pretrain_modality.json", *overlays]
    return bundle, init, _workflow(bundle, configs, overrides)


def _run_and_load_epoch(workflow: Any, run_dir: Path, in_channels: int) -> SAQM:
    """Run ``workflow`` (one tiny epoch) and load its saved epoch-1 weights into a width-0.0625 SAQM."""
    try:
        workflow.run()
    finally:
        workflow.finalize()
    state = torch.load(run_dir / "epochs" / "model_epoch=1.pt", weights_only=True)
    trained = SAQM(in_channels=in_channels, width=0.0625)
    trained.load_state_dict(state.get("model", state))
    return trained


@pytest.mark.skipif(not HAS_MEDICAL, reason="no medical_saqm_iqa bundle")
def test_medical_modality_overlay_tiny(tmp_path):
    """``pretrain_modality.json`` (an issue-11 experiment): SAQM with 3 + 6 input channels (one-hot modality
    planes), warm-started from a 3-channel model with zero weights on the planes, trained one epoch with modality
    dropout; the planes' weights move, the saved epoch loads back into a 9-channel SAQM."""
    bundle, init, workflow = _modality_experiment(tmp_path)
    net = workflow.parser.get_parsed_content("network")
    w0 = net.attention.value[0].weight.detach().clone()
    assert w0.shape[1] == 9 and torch.equal(w0[:, :3], init.attention.value[0].weight)
    assert torch.count_nonzero(w0[:, 3:]) == 0
    assert workflow.parser.get_parsed_content("train#dataset").dropout_prob == pytest.approx(0.2)
    trained = _run_and_load_epoch(workflow, bundle / "runs" / "modality", in_channels=9)
    assert torch.count_nonzero(trained.attention.value[0].weight[:, 3:]) > 0


@pytest.mark.skipif(not HAS_MEDICAL, reason="no medical_saqm_iqa bundle")
def test_medical_distill_overlay_tiny(tmp_path):
    """``pretrain_distill.json`` on top of ``pretrain_modality.json`` (an issue-11 experiment): the teacher is a
    frozen copy of the warm-started 9-channel network (so it computes the 3-channel init exactly), its KL term is
    in the training output, and one epoch moves the network but not the teacher."""
    bundle, init, workflow = _modality_experiment(tmp_path, "configs/pretrain_distill.json", distillation_weight=3.0)
    trainer = workflow.parser.get_parsed_content("train#trainer")
    net, teacher = workflow.parser.get_parsed_content("network"), trainer.teacher
    assert teacher is not net and trainer.distillation_weight == pytest.approx(3.0)
    x = torch.rand(2, 9, 32, 32)
    with torch.no_grad():
        assert torch.allclose(teacher(x), init(x[:, :3]), atol=1e-6)  # the planes have zero weights
    try:
        workflow.run()
    finally:
        workflow.finalize()
    out = trainer.state.output
    assert float((out[0] if isinstance(out, list) else out)["loss_distill"]) > 0  # decollated: one dict per image
    with torch.no_grad():
        assert torch.allclose(teacher(x), init(x[:, :3]), atol=1e-6)
        assert not torch.allclose(net(x), init(x[:, :3]), atol=1e-4)
    assert (bundle / "runs" / "distill" / "epochs" / "model_epoch=1.pt").is_file()


@pytest.mark.skipif(not HAS_MEDICAL, reason="no medical_saqm_iqa bundle")
def test_medical_mild_kspace_overlay_tiny(tmp_path):
    """``pretrain_mild_kspace.json`` (an issue-11 experiment) weighs the ranking pairs whose worse item is level 1 or 2
    of a k-space ladder four times. The tiny corpus has no k-space ladders (a warning, every weight 1); with the same
    table moved to its JPEG family, one epoch trains with the weights in the batches."""
    overlay = json.loads((bundle_dir(MEDICAL) / "configs" / "pretrain_mild_kspace.json").read_text())
    table = overlay["ranking_level_weights"]
    assert table == {"kspace_undersampling": [1.0, 4.0, 4.0, 1.0, 1.0, 1.0]}
    with pytest.warns(UserWarning, match="kspace_undersampling"):  # the workflow builds its dataset
        _, _, workflow = _modality_experiment(tmp_path, "configs/pretrain_mild_kspace.json")
    assert workflow.parser.get_parsed_content("ranking_level_weights") == table
    dataset = workflow.parser.get_parsed_content("train#dataset")
    assert all(float(d["rank_weight"]) == 1.0 for i in range(len(dataset)) for d in dataset[i])
    bundle, _, jpeg = _modality_experiment(
        tmp_path / "jpeg", "configs/pretrain_mild_kspace.json", ranking_level_weights={"jpeg": table[next(iter(table))]}
    )
    dataset = jpeg.parser.get_parsed_content("train#dataset")
    weights = {n.rsplit("/", 1)[-1]: [float(d["rank_weight"]) for d in dataset[i]] for i, n in enumerate(dataset.names)}
    assert weights["jpeg"] == [1.0, 4.0, 4.0, 1.0, 1.0, 1.0] and set(weights["gaussian_noise"]) == {1.0}
    trained = _run_and_load_epoch(jpeg, bundle / "runs" / "modality", in_channels=9)
    assert all(torch.isfinite(p).all() for p in trained.parameters())


@pytest.mark.skipif(not HAS_MEDICAL, reason="no medical_saqm_iqa bundle")
def test_medical_us_unknown_overlay(tmp_path):
    """``pretrain_us_unknown.json`` (an issue-11 experiment): ultrasound gets the unknown input (all planes 0) in
    training and validation while the other modalities keep their plane. The tiny corpus has no ultrasound, so the
    same setting is checked on its validation item (a natural image) with ``unknown_modalities`` = natural."""
    _, _, workflow = _modality_experiment(tmp_path, "configs/pretrain_us_unknown.json")
    assert workflow.parser.get_parsed_content("unknown_modalities") == ["US"]
    item = workflow.parser.get_parsed_content("validate#dataset")[0]
    assert item["modality"] == "natural" and float(item["image"][3 + 5].min()) == 1.0  # it keeps its plane
    _, _, unknown = _modality_experiment(
        tmp_path / "natural", "configs/pretrain_us_unknown.json", unknown_modalities=["natural"]
    )
    item = unknown.parser.get_parsed_content("validate#dataset")[0]
    assert item["image"].shape[0] == 9 and torch.count_nonzero(item["image"][3:]) == 0


@pytest.mark.skipif(not HAS_MEDICAL, reason="no medical_saqm_iqa bundle")
def test_medical_context_overlay_tiny(tmp_path):
    """``pretrain_context.json`` on top of ``pretrain_modality.json`` (an issue-11 experiment): SAQM with 3 + 2 + 6
    input channels (the luminance's local mean and std that LCN removes, then the modality planes), warm-started with
    zero weights on the added planes; after one epoch the context weights have moved, and ``inference.json`` with
    the one-SAQM overlay ``single_saqm.json`` and the same two settings scores a folder with the trained weights."""
    import numpy as np
    from PIL import Image

    bundle, _, workflow = _modality_experiment(tmp_path, "configs/pretrain_context.json")
    net = workflow.parser.get_parsed_content("network")
    w0 = net.attention.value[0].weight.detach()
    assert w0.shape[1] == 11 and torch.count_nonzero(w0[:, 3:]) == 0
    item = workflow.parser.get_parsed_content("train#dataset")[0][0]["image"]
    assert item.shape == (11, 32, 32) and float(item[3].min()) >= 0.0  # local mean of a [0, 1] image
    trained = _run_and_load_epoch(workflow, bundle / "runs" / "context", in_channels=11)
    assert torch.count_nonzero(trained.attention.value[0].weight[:, 3:5]) > 0
    torch.save(trained.state_dict(), bundle / "models" / "model.pt")
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(folder / f"{name}.png")
    infer = {"input_dir": str(folder), "num_workers": 0, "width": 0.0625, "contrast_context": True}
    configs = ["configs/inference.json", "configs/single_saqm.json"]  # one SAQM instead of the shipped router
    _run(bundle, configs, {**infer, "modalities": "$monai_iqad.transforms.SAQM_MODALITIES"}, "infer")
    rows = _rows(bundle / "eval" / "scores.csv")
    assert len(rows) == 2 and all(0.0 <= float(r["score"]) <= 1.0 for r in rows)
