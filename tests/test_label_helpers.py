"""Pure helpers of monai_iqad.label (no monailabel needed): id checks, datastore labels → datalist, JSON replies,
app options, local bundle discovery/loading and the CLI command. Runs in the default and the MONAI Label venvs."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

from monai_iqad.label import (
    BundleError,
    ImageNotFoundError,
    InvalidImageIdError,
    LabelAppSettings,
    LabelError,
    MissingWeightsError,
    WeightsMismatchError,
    build_datalist,
    default_mos_range,
    diagnosis_result,
    discover_bundles,
    extract_labels,
    load_inference_model,
    mkcnet_class_names,
    quality_result,
    resolve_image,
    triage_result,
    validate_image_id,
    validate_label_tag,
)
from monai_iqad.label.bundles import network_kind, read_bundle_config
from monai_iqad.label.safety import (
    InvalidParameterError,
    check_index_param,
    check_threshold,
    is_upload_path,
    remove_upload,
    sweep_uploads,
)
from monai_iqad.label.settings import check_bool
from monai_iqad.networks import SAQM
from monai_iqad.transforms import SplitHeadsd
from monai_iqad.utils.config import as_bool

REPO = Path(__file__).resolve().parents[1]
BUNDLES = REPO / "bundles"


# ---------------------------------------------------------------------------------------------------------------------
# ids and uploads
@pytest.mark.parametrize("good", ["img001", "US1_UNCR", "a.b", "scan 01", "é-1"])
def test_validate_image_id_accepts_plain_ids(good):
    assert validate_image_id(good) == good


@pytest.mark.parametrize(
    "bad",
    ["", " ", "..", ".", "../x", "a/b", "a\\b", "/etc/passwd", "C:evil", "~root", "x\x00y", "x\ny", 3, None, "a" * 300],
)
def test_validate_image_id_refuses_paths_and_junk(bad):
    with pytest.raises(InvalidImageIdError):
        validate_image_id(bad)


def test_validate_label_tag_message():
    assert validate_label_tag("final") == "final"
    with pytest.raises(InvalidImageIdError, match="label tag"):
        validate_label_tag("../final")


def test_resolve_image_ids_uploads_and_server_paths(tmp_path):
    studies, uploads = tmp_path / "studies", tmp_path / "uploads"
    studies.mkdir()
    uploads.mkdir()
    (studies / "cam.png").write_bytes(b"x")
    lookup = {"cam": str(studies / "cam.png")}.get

    assert resolve_image("cam", lookup, uploads) == (str(studies / "cam.png"), False)
    with pytest.raises(ImageNotFoundError):
        resolve_image("nope", lookup, uploads)
    for bad in ("../studies/cam", str(studies / "cam.png"), "/etc/hostname", "file:///etc/hostname"):
        with pytest.raises(InvalidImageIdError):
            resolve_image(bad, lookup, uploads)

    upload = uploads / "tmpab12.png"
    upload.write_bytes(b"x")
    assert resolve_image(str(upload), lookup, uploads) == (str(upload), True)
    # only tmp* regular files directly in the upload folder count as uploads
    other = uploads / "notmp.png"
    other.write_bytes(b"x")
    link = uploads / "tmplink.png"
    link.symlink_to(studies / "cam.png")
    for bad in (other, link):
        assert not is_upload_path(str(bad), uploads)
        with pytest.raises(InvalidImageIdError):
            resolve_image(str(bad), lookup, uploads)
    with pytest.raises(InvalidImageIdError):
        resolve_image(str(upload), lookup, None)  # no upload folder: no absolute path at all

    assert remove_upload(str(upload), uploads) and not upload.exists()
    assert not remove_upload(str(studies / "cam.png"), uploads) and (studies / "cam.png").exists()


def test_sweep_uploads_removes_only_stale_tmp_files(tmp_path):
    old, new, keep = tmp_path / "tmpold.png", tmp_path / "tmpnew.png", tmp_path / "keep.png"
    for f in (old, new, keep):
        f.write_bytes(b"x")
    os.utime(old, (1, 1))
    os.utime(keep, (1, 1))
    assert sweep_uploads(tmp_path, max_age_s=60) == 1
    assert not old.exists() and new.exists() and keep.exists()


def test_parameter_checks():
    assert check_index_param({"frame": 2}, "frame") == 2
    assert check_index_param({"frame": "3"}, "frame") == 3
    assert check_index_param({}, "frame") is None
    for bad in (-1, 1.5, "x", True, [1]):
        with pytest.raises(InvalidParameterError, match="frame"):
            check_index_param({"frame": bad}, "frame")
    assert check_threshold("0.25") == 0.25
    for bad in (-0.1, 1.5, "x", None, True):
        with pytest.raises(InvalidParameterError):
            check_threshold(bad)


# ---------------------------------------------------------------------------------------------------------------------
# datastore labels → datalist
def _records(tmp_path, infos, label_jsons=None):
    out = []
    for i, info in enumerate(infos):
        path = tmp_path / f"img{i}.png"
        path.write_bytes(b"x")
        out.append({"id": f"img{i}", "image": str(path), "info": info, "label_json": (label_jsons or {}).get(i)})
    return out


def test_build_datalist_saqm(tmp_path):
    infos = [{"mos": 1.5}, {"mos": 4}, {"mos": "2.5"}, {}, {"other": {"mos": 9}}, {"mos": 3, "frame": 1}]
    records = _records(tmp_path, infos, label_jsons={3: {"mos": 2.0}})
    dl = build_datalist(records, "us", "saqm", val_split=0.2, seed=0)
    items = dl["training"] + dl["validation"]
    assert sorted(it["id"] for it in items) == ["img0", "img1", "img2", "img3", "img5"]
    assert len(dl["validation"]) == 2  # correlations need two validation images
    assert all(it["domain"] == "target" for it in items)
    assert {it["id"]: it["mos"] for it in items}["img3"] == 2.0  # from the label JSON
    assert [it for it in items if it["id"] == "img5"][0]["frame"] == 1
    assert dl["mos_range"] == {"source": [1.0, 4.0], "target": [1.0, 4.0]}
    assert dl["unlabelled"] == 1
    # deterministic
    assert build_datalist(records, "us", "saqm", seed=0)["validation"] == dl["validation"]
    # explicit range: values must fit it
    assert build_datalist(records, "us", "saqm", mos_range=[0, 5])["mos_range"]["target"] == [0.0, 5.0]
    with pytest.raises(LabelError, match="outside mos_range"):
        build_datalist(records, "us", "saqm", mos_range=[0, 2])


def test_build_datalist_saqm_errors(tmp_path):
    with pytest.raises(LabelError, match="at least 3 labelled images"):
        build_datalist(_records(tmp_path, [{"mos": 1}, {"mos": 2}, {}]), "us", "saqm")
    bad = _records(tmp_path, [{"mos": 1}, {"mos": 2}, {"mos": 3}, {"mos": "high"}, {"mos": float("nan")}])
    with pytest.raises(LabelError, match="img3.*img4|'mos'"):
        build_datalist(bad, "us", "saqm")
    dl = build_datalist(bad, "us", "saqm", skip_invalid=True)
    assert set(dl["skipped"]) == {"img3", "img4"}


def test_default_mos_range():
    assert default_mos_range([0.2, 0.9]) == (0.0, 1.0)
    assert default_mos_range([1.2, 4.6]) == (1.0, 5.0)
    assert default_mos_range([3.0, 3.0]) == (3.0, 4.0)


def test_build_datalist_mkcnet_names_indices_and_nesting(tmp_path):
    names = dict(
        num_diagnosis=3,
        num_quality=3,
        diagnosis_names=["no DR", "NPDR", "PDR"],
        quality_names=["reject", "usable", "good"],
    )
    infos = [
        {"diagnosis": "npdr", "quality": "Good"},
        {"diagnosis": 2, "quality": 0.0},
        {"diagnosis": 0, "quality": 1, "eyeq": {"diagnosis": 1}},  # nested entry wins
        {"mos": 3},  # no MKCNet labels
    ]
    dl = build_datalist(_records(tmp_path, infos), "eyeq", "mkcnet", val_split=0.3, **names)
    items = {it["id"]: it for it in dl["training"] + dl["validation"]}
    assert set(items) == {"img0", "img1", "img2"}
    assert (items["img0"]["diagnosis"], items["img0"]["quality"]) == (1, 2)
    assert (items["img1"]["diagnosis"], items["img1"]["quality"]) == (2, 0)
    assert items["img2"]["diagnosis"] == 1
    assert "mos_range" not in dl and len(dl["validation"]) >= 1
    for bad, match in (
        ({"diagnosis": 3, "quality": 0}, "out of range"),
        ({"diagnosis": "DME", "quality": 0}, "DME"),
        ({"diagnosis": 1}, "both"),
    ):
        with pytest.raises(ValueError, match=match):
            extract_labels({"info": bad}, "eyeq", "mkcnet", **names)


# ---------------------------------------------------------------------------------------------------------------------
# JSON replies
def test_quality_result():
    grid = torch.tensor([[0.2, 0.4], [0.6, 0.8]])
    out = quality_result(grid.mean(), "us", grid, patch_size=32)["quality"]
    assert out == {
        "score": 0.5,
        "model": "us",
        "patch_scores": [[0.2, 0.4], [0.6, 0.8]],
        "patch_grid": [2, 2],
        "patch_size": 32,
    }
    json.dumps(out)
    assert "patch_scores" not in quality_result(0.3, "us")["quality"]
    for bad in (1.5, float("nan")):
        with pytest.raises(ValueError):
            quality_result(bad, "us")


def test_diagnosis_result_and_names():
    # the heads as the bundle's postprocessing names them (SplitHeadsd over MKCNetInference's packed probabilities)
    split = SplitHeadsd("pred", {"diagnosis": 3, "quality": 2})({"pred": torch.tensor([0.1, 0.7, 0.2, 0.6, 0.4])})
    heads = {"diagnosis": split["diagnosis_pred"], "quality": split["quality_pred"]}
    out = diagnosis_result(heads, ["a", "b", "c"], ["bad", "good"], "m")
    assert out["diagnosis"] == {"label": "b", "index": 1, "probabilities": {"a": 0.1, "b": 0.7, "c": 0.2}}
    assert out["quality"] == {"grade": "bad", "index": 0, "probabilities": {"bad": 0.6, "good": 0.4}}
    assert out["model"] == "m"
    assert sum(out["diagnosis"]["probabilities"].values()) == pytest.approx(1.0)
    # missing and duplicate names stay distinct keys
    out = diagnosis_result(heads, ["a", "a"], None, "m")
    assert list(out["diagnosis"]["probabilities"]) == ["a (0)", "a (1)", "diagnosis 2"]
    assert list(out["quality"]["probabilities"]) == ["quality 0", "quality 1"]
    with pytest.raises(ValueError, match="quality"):
        diagnosis_result({"diagnosis": heads["diagnosis"]}, None, None, "m")
    with pytest.raises(ValueError, match="non-finite"):
        diagnosis_result({**heads, "quality": torch.tensor([float("nan"), 1.0])}, None, None, "m")


@pytest.mark.parametrize(
    "score,threshold,gated",
    [(0.3, 0.5, True), (0.5, 0.5, False), (0.7, 0.5, False), (0.0, 0.0, False), (0.99, 1.0, True)],
)
def test_triage_result_gate(score, threshold, gated):
    q = quality_result(score, "us")
    d = diagnosis_result({"diagnosis": [0.2, 0.8], "quality": [0.5, 0.5]}, ["n", "p"], ["lo", "hi"], "mk")
    out = triage_result(q, d, threshold)
    assert out["gated_by_quality"] is gated and out["diagnosis"]["gated_by_quality"] is gated
    assert out["quality_score"] == score and out["quality_threshold"] == threshold
    assert out["diagnosis"]["label"] == "p" and out["diagnosis"]["quality_grade"]["grade"] == "lo"
    assert out["diagnosis"]["model"] == "mk" and out["quality"]["model"] == "us"


# ---------------------------------------------------------------------------------------------------------------------
# app options, bundles, CLI
def test_settings_from_conf(tmp_path):
    s = LabelAppSettings.from_conf({}, app_dir=tmp_path)
    assert s.quality_threshold == 0.5 and s.triage and s.patch_scores and not s.skip_trainers
    assert s.work_dir == tmp_path / "work" and "*.dcm" in s.extensions and s.models == []
    s = LabelAppSettings.from_conf(
        {
            "models": "a, b",
            "quality_threshold": "0.7",
            "overlays": "demo.json",
            "bundles_dir": str(tmp_path),
            "skip_trainers": "TRUE",
        }
    )
    assert s.models == ["a", "b"] and s.quality_threshold == 0.7 and s.overlays == ["demo.json"]
    assert s.bundles_dir == tmp_path and s.skip_trainers
    assert s.max_upload_mb == 512 and s.as_info()["max_upload_mb"] == 512
    # one boolean parser: monai_iqad.utils.config.as_bool, with the option named in the error
    s = LabelAppSettings.from_conf({"triage": "Off", "patch_scores": "no", "skip_trainers": 1, "max_upload_mb": "64"})
    assert (s.triage, s.patch_scores, s.skip_trainers, s.max_upload_mb) == (False, False, True, 64)
    for value in (True, "on", "YES", " 1 ", 0, "false", "none"):
        assert check_bool(value, "x") is as_bool(value)
    bads = ({"quality_threshold": "2"}, {"overlays": "../x.json"}, {"triage": "maybe"}, {"max_upload_mb": "0"})
    for bad in bads:
        with pytest.raises(InvalidParameterError, match=next(iter(bad))):
            LabelAppSettings.from_conf(bad)


def _copy_bundle(name: str, dst: Path) -> Path:
    src = BUNDLES / name
    if not (src / "configs" / "train.json").is_file():
        pytest.skip(f"bundle {name} not in this checkout")
    out = dst / name
    shutil.copytree(src / "configs", out / "configs")
    return out


def test_discover_bundles_kinds_and_names(tmp_path):
    _copy_bundle("ultrasound_saqm_iqa", tmp_path)
    _copy_bundle("fundus_eyeq_mkcnet_iqad", tmp_path)
    (tmp_path / "not_a_bundle").mkdir()
    found = discover_bundles(tmp_path)
    assert {n: s.kind for n, s in found.items()} == {"fundus_eyeq_mkcnet_iqad": "mkcnet", "ultrasound_saqm_iqa": "saqm"}
    assert list(discover_bundles(tmp_path, ["ultrasound_saqm_iqa"])) == ["ultrasound_saqm_iqa"]
    with pytest.raises(BundleError, match="nope"):
        discover_bundles(tmp_path, ["nope"])
    with pytest.raises(BundleError):
        discover_bundles(tmp_path / "missing")
    spec = found["fundus_eyeq_mkcnet_iqad"]
    nd, nq, d_names, q_names = mkcnet_class_names(spec)
    assert (nd, nq, d_names) == (3, 3, ["no DR", "NPDR", "PDR"]) and len(q_names) == 3
    assert spec.weights_status().startswith("missing")
    files = spec.config_files("inference", ["demo.json", "absent.json"])
    assert files[0].name in ("inference.json", "train.json") and files[-1].name == "demo.json"


def _bundle(root: Path, name: str, network_def, metadata: dict | None = None) -> Path:
    """A minimal bundle folder: ``configs/inference.json`` with ``network_def`` (and ``metadata.json``)."""
    configs = root / name / "configs"
    configs.mkdir(parents=True)
    config = {"imports": ["$import monai_iqad"], "network_def": network_def}
    (configs / "inference.json").write_text(json.dumps(config))
    if metadata is not None:
        (configs / "metadata.json").write_text(json.dumps({"network_data_format": {"outputs": metadata}}))
    return root / name


def test_bundle_kind_from_the_network_class(tmp_path):
    mk = {"_target_": "monai_iqad.networks.MKCNet", "num_diagnosis": 2, "num_quality": 2}
    _bundle(tmp_path, "vanilla", {"_target_": "monai_iqad.networks.VanillaNet", "num_diagnosis": 2})  # no "MKCNet"
    _bundle(tmp_path, "wrapped", {"_target_": "monai_iqad.networks.MKCNetInference", "net": mk})
    _bundle(tmp_path, "expression", "$monai_iqad.networks.SAQM(width=0.0625)")  # no _target_: built, then typed
    _bundle(tmp_path, "ensemble", {"_target_": "monai_iqad.networks.SAQMEnsemble", "members": 2, "width": 0.0625})
    _bundle(tmp_path, "router", {"_target_": "monai_iqad.networks.SAQMRouter", "routes": {"CT": 1}, "width": 0.0625})
    _bundle(tmp_path, "densenet", {"_target_": "DenseNet121", "spatial_dims": 2, "in_channels": 1, "out_channels": 1})
    # an SAQM named inside another module's network is still that module's kind, not "saqm"
    _bundle(
        tmp_path,
        "sequential",
        {"_target_": "torch.nn.Sequential", "_requires_": {"_target_": "monai_iqad.networks.SAQM"}},
    )
    _bundle(tmp_path, "unknown", {"_target_": "no.such.Net"})
    kinds = {name: spec.kind for name, spec in discover_bundles(tmp_path).items()}
    assert kinds == {
        "vanilla": "mkcnet",
        "wrapped": "mkcnet",
        "expression": "saqm",
        "ensemble": "saqm",
        "router": "saqm",
    }
    assert network_kind(torch.nn.Linear(1, 1)) is None and network_kind(SAQM) == "saqm"


def test_mkcnet_class_names_come_from_metadata_only(tmp_path):
    mk = {
        "_target_": "monai_iqad.networks.MKCNet",
        "num_diagnosis": 2,
        "num_quality": 2,
        "aux_per_class": 2,
        "width": 0.0625,
    }
    channels = {"1": "diagnosis: DR", "0": "diagnosis: no DR", "2": "quality: bad", "3": "Quality : ok"}
    one_output = {"pred": {"channel_def": channels}}
    per_head = {"diagnosis": {"channel_def": {"0": "no DR", "1": "DR"}}, "quality": {"channel_def": ["bad", "ok"]}}
    expected = (2, 2, ["no DR", "DR"], ["bad", "ok"])
    for name, outputs in (("one", one_output), ("heads", per_head)):
        _bundle(tmp_path, name, mk, outputs)
        assert mkcnet_class_names(discover_bundles(tmp_path, [name])[name]) == expected
    _bundle(tmp_path, "nameless", mk, {"pred": {"channel_def": {"0": "p0", "1": "p1"}}})
    with pytest.raises(BundleError, match="metadata.json"):
        mkcnet_class_names(discover_bundles(tmp_path, ["nameless"])["nameless"])
    # metadata and network disagree: refused, naming both counts
    _bundle(tmp_path, "three", {**mk, "num_diagnosis": 3}, per_head)
    with pytest.raises(BundleError, match="2 diagnosis and 2 quality classes, the network has 3 and 2"):
        load_inference_model(discover_bundles(tmp_path, ["three"])["three"], require_weights=False)


def test_overlay_ids_of_another_stage_are_skipped(tmp_path):
    root = _bundle(tmp_path, "b", {"_target_": "monai_iqad.networks.SAQM", "width": 1.0})
    overlay = {"width": 0.5, "network_def#width": 0.0625, "train#lr_scheduler#step_size": 15}
    (root / "configs" / "demo.json").write_text(json.dumps(overlay))
    parser = read_bundle_config(discover_bundles(tmp_path)["b"], "inference", ["demo.json"])
    assert parser["network_def"]["width"] == 0.0625 and parser["width"] == 0.5
    assert "train" not in parser  # a train-only id, not an error (MONAI's own merge raises KeyError here)


def test_mkcnet_heads_named_by_the_bundle_postprocessing(tmp_path):
    root = _copy_bundle("fundus_eyeq_mkcnet_iqad", tmp_path)
    (root / "configs" / "tiny.json").write_text(json.dumps({"width": 0.0625, "image_size": [64, 64]}))
    spec = discover_bundles(tmp_path)["fundus_eyeq_mkcnet_iqad"]
    model = load_inference_model(spec, ["tiny.json"], require_weights=False)
    x = model.preprocessing({"image": _png(tmp_path)})["image"][None]
    with torch.no_grad():
        item = model.postprocessing({"pred": model.network.eval()(x)[0]})
    heads = {h: item[f"{h}_pred"] for h in ("diagnosis", "quality")}
    reply = diagnosis_result(heads, model.diagnosis_names, model.quality_names, "eyeq")
    assert list(reply["diagnosis"]["probabilities"]) == ["no DR", "NPDR", "PDR"]
    assert list(reply["quality"]["probabilities"]) == model.quality_names and len(model.quality_names) == 3
    assert all(float(p.sum()) == pytest.approx(1.0, abs=1e-5) for p in heads.values())


def test_mkcnet_heads_split_with_metadata_counts_without_postprocessing(tmp_path):
    mk = {"_target_": "monai_iqad.networks.MKCNet", "num_diagnosis": 2, "num_quality": 3, "aux_per_class": 2}
    channels = ["diagnosis: n", "diagnosis: p", "quality: 0", "quality: 1", "quality: 2"]
    root = _bundle(tmp_path, "b", {**mk, "width": 0.0625}, {"pred": {"channel_def": channels}})
    spec = discover_bundles(tmp_path)["b"]
    with pytest.raises(BundleError, match="no 'preprocessing' and no 'dataset_name'"):
        load_inference_model(spec, require_weights=False)
    (root / "configs" / "extra.json").write_text(json.dumps({"dataset_name": "deepdr"}))
    split = load_inference_model(spec, ["extra.json"], require_weights=False).postprocessing(
        {"pred": torch.arange(5.0)}
    )
    assert split["diagnosis_pred"].tolist() == [0.0, 1.0] and split["quality_pred"].tolist() == [2.0, 3.0, 4.0]


def test_load_inference_model_weights(tmp_path):
    root = _copy_bundle("ultrasound_saqm_iqa", tmp_path)
    (root / "configs" / "tiny.json").write_text(json.dumps({"width": 0.0625}))
    spec = discover_bundles(tmp_path)["ultrasound_saqm_iqa"]
    with pytest.raises(MissingWeightsError, match="train the bundle first"):
        load_inference_model(spec, ["tiny.json"])
    model = load_inference_model(spec, ["tiny.json"], require_weights=False)
    (root / "models").mkdir()
    torch.save(model.network.state_dict(), root / "models" / "model.pt")
    loaded = load_inference_model(spec, ["tiny.json"])
    assert loaded.patch_size == 32 and loaded.weights_mtime > 0
    x = loaded.preprocessing({"image": _png(tmp_path)})["image"][None]
    with torch.no_grad():
        score, grid = loaded.network(x), loaded.network.score_map(x)
    assert 0 <= float(score) <= 1 and grid.shape[:2] == (1, 1)
    assert float(grid.mean()) == pytest.approx(float(score), abs=1e-5)
    with pytest.raises(WeightsMismatchError, match="overlays"):
        load_inference_model(spec)  # full width: the tiny weights do not fit


def test_router_bundle_scores_each_image_with_its_modality_expert(tmp_path):
    """A quality bundle whose network is a :class:`SAQMRouter`: its preprocessing appends the modality planes (from
    the item's ``modality``; none = unknown), and each image is scored by its modality's expert."""
    from monai_iqad.networks import SAQMRouter

    root = _copy_bundle("medical_saqm_iqa", tmp_path)
    router = {
        "_target_": "monai_iqad.networks.SAQMRouter",
        "expert_channels": [3, 9],
        "routes": {"CT": 1},
        "width": "@width",
        "patch_size": "@patch_size",
    }
    overlay = {"width": 0.0625, "modalities": "$monai_iqad.transforms.SAQM_MODALITIES", "network_def": router}
    (root / "configs" / "router.json").write_text(json.dumps(overlay))
    spec = discover_bundles(tmp_path)["medical_saqm_iqa"]
    built = load_inference_model(spec, ["router.json"], require_weights=False)
    assert spec.kind == "saqm" and isinstance(built.network, SAQMRouter)
    torch.manual_seed(0)
    for expert in built.network.experts:  # distinct, non-trivial experts
        with torch.no_grad():
            expert.attention.gamma.fill_(0.7)
    (root / "models").mkdir(exist_ok=True)
    torch.save(built.network.state_dict(), root / "models" / "model.pt")
    loaded = load_inference_model(spec, ["router.json"])
    net = loaded.network.eval()
    png = _png(tmp_path)
    for modality, k in ((None, 0), ("CT", 1), ("US", 0)):
        item = {"image": png} if modality is None else {"image": png, "modality": modality}
        x = loaded.preprocessing(item)["image"][None]
        assert x.shape[1] == 9
        expert = net.experts[k]
        with torch.no_grad():
            want = expert(x if expert.in_channels == 9 else x[:, :3])
            torch.testing.assert_close(net(x), want, rtol=0, atol=1e-6)


def _png(tmp_path: Path) -> str:
    from PIL import Image

    path = tmp_path / "img.png"
    Image.fromarray((torch.rand(70, 90) * 255).byte().numpy()).save(path)
    return str(path)


def test_cli_builds_loopback_server_command(tmp_path):
    from monai_iqad import cli

    args = cli.build_parser().parse_args(
        [
            "label",
            "start",
            "--studies",
            str(tmp_path / "studies"),
            "--port",
            "8123",
            "--bundles",
            "a,b",
            "--overlays",
            "demo.json",
            "--workdir",
            str(tmp_path / "work"),
            "--quality-threshold",
            "0.6",
        ]
    )
    cmd, env, workdir = cli.label_server_command(args)
    assert cmd[:4] == [sys.executable, "-m", "monailabel.main", "start_server"]
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and cmd[cmd.index("--port") + 1] == "8123"
    conf = {cmd[i + 1]: cmd[i + 2] for i, c in enumerate(cmd) if c == "--conf"}
    assert conf["models"] == "a,b" and conf["overlays"] == "demo.json" and conf["quality_threshold"] == "0.6"
    assert env["TMPDIR"] == str(tmp_path / "work" / "tmp") and env["MONAI_LABEL_TRACKING_ENABLED"] == "false"
    assert (workdir / "app" / "main.py").read_text().count("IQADLabelApp") == 1
