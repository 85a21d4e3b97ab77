"""``monai-iqad score``: a mixed folder (PNG, DICOM, NIfTI slice, one corrupt file), file lists, datalists, errors."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from PIL import Image
from skimage import data as skdata

from monai_iqad.cli import main
from monai_iqad.metrics import NR_IQA_METRICS
from monai_iqad.score import default_bundle, read_input
from tests.dicom_files import dicom_file

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("mixed")
    (d / "sub").mkdir()
    Image.fromarray(skdata.camera()[:200, :220]).save(d / "cam.png")
    Image.fromarray(skdata.astronaut()[:160, :200]).save(d / "sub" / "ast.png")
    shutil.copy(dicom_file("CT_small.dcm"), d / "sub" / "ct.dcm")
    nib.save(
        nib.Nifti1Image(skdata.camera()[100:260, 50:250].T.astype(np.int16)[..., None], np.eye(4)), d / "sl.nii.gz"
    )
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    (d / "notes.txt").write_text("not an image")
    return d


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as f:
        return {Path(r["image"]).name: r for r in csv.DictReader(f)}


@pytest.mark.parametrize("metric", sorted(NR_IQA_METRICS))
def test_score_mixed_folder(mixed, tmp_path, capsys, metric):
    out = tmp_path / "scores.csv"
    assert main(["score", "--metric", metric, str(mixed), "-o", str(out), "--no-progress"]) == 0
    rows = _rows(out)
    assert sorted(rows) == ["ast.png", "broken.png", "cam.png", "ct.dcm", "sl.nii.gz"]  # notes.txt is not an image
    assert rows["broken.png"]["score"] == "" and "broken.png" in rows["broken.png"]["error"]
    for name in ("ast.png", "cam.png", "ct.dcm", "sl.nii.gz"):
        assert rows[name]["error"] == "" and math.isfinite(float(rows[name]["score"])), rows[name]
    # the CLI's score of an 8-bit PNG is the metric on the array
    expected = NR_IQA_METRICS[metric](skdata.camera()[:200, :220][None])
    assert float(rows["cam.png"]["score"]) == pytest.approx(expected, rel=1e-5)
    summary = capsys.readouterr().out
    assert "scored 4 of 5 image(s), 1 error(s)" in summary and "1 non-image file(s)" in summary


def test_file_list_datalist_workers_and_stop(mixed, tmp_path, capsys):
    listing = mixed / "list.txt"
    listing.write_text("# images\ncam.png\n\nsub/ct.dcm\n")
    ref = tmp_path / "ref.csv"
    assert main(["score", "--metric", "piqe", str(listing), "-o", str(ref), "--no-progress"]) == 0
    assert list(_rows(ref)) == ["cam.png", "ct.dcm"]
    datalist = mixed / "datalist.json"
    datalist.write_text(json.dumps({"test": [{"image": "cam.png"}, {"image": "sub/ct.dcm"}]}))
    out = tmp_path / "dl.csv"
    assert main(["score", "--metric", "piqe", str(datalist), "-o", str(out), "--no-progress"]) == 0
    assert _rows(out) == _rows(ref)
    both = tmp_path / "w2.csv"
    assert main(["score", "--metric", "piqe", str(mixed), "-o", str(both), "--workers", "2", "--no-progress"]) == 0
    assert _rows(both)["cam.png"] == _rows(ref)["cam.png"] and _rows(both)["broken.png"]["error"]
    stop = tmp_path / "stop.csv"
    rc = main(["score", "--metric", "piqe", str(mixed), "-o", str(stop), "--on_error", "stop", "--no-progress"])
    assert rc == 1 and not stop.exists()
    assert "broken.png" in capsys.readouterr().err
    assert main(["score", "--metric", "piqe", str(mixed / "missing"), "-o", str(stop)]) == 2


def test_constant_image_is_a_nan_row_not_an_error(tmp_path, capsys):
    Image.fromarray(np.full((128, 128), 90, dtype=np.uint8)).save(tmp_path / "flat.png")
    out = tmp_path / "s.csv"
    assert main(["score", "--metric", "niqe", str(tmp_path / "flat.png"), "-o", str(out), "--no-progress"]) == 0
    row = _rows(out)["flat.png"]
    assert row["score"] == "nan" and row["error"] == ""
    assert "1 score(s) undefined" in capsys.readouterr().out


def test_read_input_datalist_without_section(tmp_path):
    bad = tmp_path / "d.json"
    bad.write_text(json.dumps({"other": []}))
    with pytest.raises(ValueError, match="none of the sections"):
        read_input(bad)
    binary = tmp_path / "scores.bin"
    binary.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ValueError, match="not a text file list"):
        read_input(binary)


def test_default_bundle_is_a_checkout_bundle():
    bundle = default_bundle()
    assert bundle.parent == ROOT / "bundles" and (bundle / "configs" / "inference.json").is_file()


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory) -> Path:
    """The ultrasound SAQM bundle's configs with a narrow network and random weights saved as ``models/model.pt``."""
    dst = tmp_path_factory.mktemp("bundle")
    shutil.copytree(ROOT / "bundles" / "ultrasound_saqm_iqa" / "configs", dst / "configs")
    cfg_path = dst / "configs" / "inference.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["width"] = 0.25
    cfg_path.write_text(json.dumps(cfg))
    parser = ConfigParser()
    parser.read_config(str(cfg_path))
    torch.manual_seed(0)
    (dst / "models").mkdir()
    torch.save({"model": parser.get_parsed_content("network_def").state_dict()}, dst / "models" / "model.pt")
    return dst


def test_score_saqm_bundle(mixed, tiny_bundle, tmp_path, capsys):
    out = tmp_path / "saqm.csv"
    args = ["score", "--metric", "saqm", "--bundle", str(tiny_bundle), str(mixed), "-o", str(out), "--no-progress"]
    assert main(args) == 0
    rows = _rows(out)
    assert rows["broken.png"]["error"] and rows["broken.png"]["score"] == ""
    for name in ("ast.png", "cam.png", "ct.dcm", "sl.nii.gz"):
        assert 0.0 <= float(rows[name]["score"]) <= 1.0, rows[name]
    assert "saqm (higher is better): scored 4 of 5" in capsys.readouterr().out
    (tiny_bundle / "models" / "model.pt").rename(tiny_bundle / "models" / "other.pt")
    try:
        assert main(args) == 2
        assert "model.pt" in capsys.readouterr().err
        (tiny_bundle / "models" / "model.pt").write_text("oops\n")  # damaged weights: one message naming the file
        assert main(args) == 2
        err = capsys.readouterr().err
        path = tiny_bundle / "models" / "model.pt"
        assert f"{path}: not a PyTorch checkpoint (5 bytes, truncated or a text file)" in err and "hint: " in err
        assert "Traceback" not in err
    finally:
        (tiny_bundle / "models" / "other.pt").replace(tiny_bundle / "models" / "model.pt")


def test_score_router_bundle_routes_radiographs(mixed, tmp_path):
    """The medical bundle's own ``inference.json`` (the shipped router, random weights at width 0.0625): an image
    scored as CR (or DX) gets expert 1's score, computed by hand; as CT, MR or unknown, expert 0's (on the image
    channels only)."""
    from monai_iqad.networks import SAQMRouter

    bundle = tmp_path / "bundle"
    shutil.copytree(ROOT / "bundles" / "medical_saqm_iqa" / "configs", bundle / "configs")
    cfg_path = bundle / "configs" / "inference.json"
    cfg_path.write_text(json.dumps({**json.loads(cfg_path.read_text()), "width": 0.0625}))
    parser = ConfigParser()
    parser.read_config(str(cfg_path))
    torch.manual_seed(0)
    router = parser.get_parsed_content("network_def").eval()
    assert isinstance(router, SAQMRouter) and router.route.tolist() == [1, 0, 0, 0, 0, 0, 0]
    (bundle / "models").mkdir()
    torch.save(router.state_dict(), bundle / "models" / "model.pt")
    scores = {}
    for modality in ("CR", "DX", "CT", "MR", None):
        out = tmp_path / f"{modality}.csv"
        args = ["score", "--metric", "saqm", "--bundle", str(bundle), str(mixed / "cam.png"), "-o", str(out)]
        assert main([*args, "--no-progress", *(["--modality", modality] if modality else [])]) == 0
        scores[modality] = float(_rows(out)["cam.png"]["score"])
    x = parser.get_parsed_content("preprocessing")({"image": str(mixed / "cam.png"), "modality": "CR"})["image"]
    x = torch.as_tensor(x)[None]
    with torch.no_grad():
        by_cr, by_generic = float(router.experts[1](x)), float(router.experts[0](x[:, :3]))
    assert scores["CR"] == pytest.approx(by_cr, abs=1e-6) and scores["DX"] == scores["CR"]
    assert scores["CT"] == scores["MR"] == scores[None] == pytest.approx(by_generic, abs=1e-6)
    assert abs(by_cr - by_generic) > 1e-4


def test_score_modality_conditioned_bundle(mixed, tmp_path, capsys):
    """A modality-conditioned SAQM bundle (the medical bundle's configs, random 9-channel weights): ``--modality``
    sets the modality of items without one, so the same image scores differently as CT and as MR and as unknown;
    an unknown ``--modality`` is a clear error (exit 2)."""
    from monai_iqad.transforms import SAQM_MODALITIES

    bundle = tmp_path / "bundle"
    shutil.copytree(ROOT / "bundles" / "medical_saqm_iqa" / "configs", bundle / "configs")
    cfg_path = bundle / "configs" / "single_saqm.json"  # one SAQM instead of the shipped router
    cfg = json.loads(cfg_path.read_text())
    cfg.update(width=0.0625, modalities=list(SAQM_MODALITIES))
    cfg_path.write_text(json.dumps(cfg))
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / "inference.json"), str(cfg_path)])
    torch.manual_seed(0)
    net = parser.get_parsed_content("network_def")
    assert net.attention.value[0].weight.shape[1] == 9
    (bundle / "models").mkdir()
    torch.save(net.state_dict(), bundle / "models" / "model.pt")
    scores = {}
    for modality in ("CT", "MR", None):
        out = tmp_path / f"{modality}.csv"
        args = ["score", "--metric", "saqm", "--bundle", str(bundle), str(mixed / "cam.png"), "-o", str(out)]
        args += ["--config", "inference.json,single_saqm.json"]
        assert main([*args, "--no-progress", *(["--modality", modality] if modality else [])]) == 0
        scores[modality] = float(_rows(out)["cam.png"]["score"])
    assert len(set(scores.values())) == 3, scores
    capsys.readouterr()
    assert main(["score", "--metric", "saqm", "--bundle", str(bundle), str(mixed / "cam.png"), "--no-progress"]) == 2
    assert "add --config inference.json,single_saqm.json" in capsys.readouterr().err  # the router config, one SAQM
    assert main(["score", "--metric", "saqm", "--bundle", str(bundle), str(mixed), "--modality", "PET"]) == 2
    assert "--modality 'PET' is not a known modality" in capsys.readouterr().err
