"""The offline pretraining corpus (monai_iqad.demo.pretrain_corpus) and its new degradations, on tiny inputs."""

from __future__ import annotations

import hashlib
import json
import runpy
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import DataLoader
from PIL import Image
from skimage import data as skdata
from skimage.metrics import structural_similarity

import monai_iqad.demo.pretrain_corpus as pc
from monai_iqad.data import load_datalist
from monai_iqad.demo import sources
from monai_iqad.demo.pretrain_corpus import (
    CORPUS_SOURCES,
    CORPUS_SOURCES_BALANCED,
    CORPUS_SOURCES_V1,
    MODALITY_FAMILIES,
    CorpusSource,
    LadderPatchDataset,
    build_pretrain_corpus,
    corpus_preset,
    pseudo_mos,
    unique_items,
)
from monai_iqad.transforms import SAQM_MODALITIES, saqm_preprocessing
from monai_iqad.transforms.degradations import (
    banding,
    gibbs_ringing,
    jpeg2000_compress,
    kspace_undersampling,
    low_dose_ct,
    poisson_noise,
    resample,
    rician_noise,
)

TINY_SOURCES = (
    CorpusSource("nat_camera", "natural", "training", "skimage", "camera", 2, 128),
    CorpusSource("ct_small", "CT", "test", "ct", "CT_small.dcm", 1, 0, window=(-600.0, 1500.0)),
    CorpusSource("missing", "CT", "validation", "ct", "no_such_file.dcm", 1, 0),
)
TINY_FAMILIES = {"natural": ("gaussian_noise", "jpeg"), "CT": ("low_dose_ct",)}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("corpus")
    build_pretrain_corpus(out, seed=3, image_size=64, sources_=TINY_SOURCES, families=TINY_FAMILIES, levels=3, log=None)
    return out


def test_layout_labels_and_splits(tiny):
    manifest = json.loads((tiny / "manifest.json").read_text())
    assert [m["name"] for m in manifest["missing_sources"]] == ["missing"]
    train = load_datalist(tiny / "datalist.json", "training")
    test = load_datalist(tiny / "datalist.json", "test")
    # camera: 2 crops x 2 families x (pristine + 3 levels); CT_small: 1 crop x 1 family x 4
    assert len(train) == 16 and len(test) == 4
    assert {it["source"] for it in train} == {"nat_camera"} and {it["source"] for it in test} == {"ct_small"}
    ladders: dict[str, list] = {}
    for it in train + test:
        ladders.setdefault(it["ladder"], []).append(it)
    assert len(ladders) == 5
    for members in ladders.values():
        assert sorted(it["level"] for it in members) == [0, 1, 2, 3]
        by_level = {it["level"]: it["mos"] for it in members}
        assert by_level[0] == 1.0
        assert by_level[1] > by_level[3]  # SSIM falls from the mildest to the strongest level
        assert all(0.0 <= v <= 1.0 for v in by_level.values())
    # the pristine image is listed once per ladder; unique_items keeps one
    assert len(unique_items(train)) == 2 * (1 + 2 * 3)


def test_manifest_checksums_and_determinism(tiny, tmp_path):
    manifest = json.loads((tiny / "manifest.json").read_text())
    for rel, digest in manifest["sha256"].items():
        assert hashlib.sha256((tiny / rel).read_bytes()).hexdigest() == digest, rel
    again = tmp_path / "again"
    build_pretrain_corpus(
        again, seed=3, image_size=64, sources_=TINY_SOURCES, families=TINY_FAMILIES, levels=3, log=None
    )
    assert json.loads((again / "manifest.json").read_text())["sha256"] == manifest["sha256"]
    other = tmp_path / "other"
    build_pretrain_corpus(
        other, seed=4, image_size=64, sources_=TINY_SOURCES[:1], families=TINY_FAMILIES, levels=1, log=None
    )
    other_sha = json.loads((other / "manifest.json").read_text())["sha256"]
    assert (
        other_sha["images/training/nat_camera_f0_c0/gaussian_noise_1.png"]
        != manifest["sha256"]["images/training/nat_camera_f0_c0/gaussian_noise_1.png"]
    )


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such_file.dcm"):
        build_pretrain_corpus(tmp_path, sources_=TINY_SOURCES[2:], families=TINY_FAMILIES, skip_missing=False, log=None)
    with pytest.raises(ValueError, match="no corpus source"):
        build_pretrain_corpus(tmp_path, sources_=TINY_SOURCES[2:], families=TINY_FAMILIES, log=None)
    with pytest.raises(ValueError, match="levels"):
        build_pretrain_corpus(tmp_path, levels=6, log=None)
    with pytest.raises(ValueError, match="no distortion families"):
        build_pretrain_corpus(tmp_path, sources_=TINY_SOURCES[:1], families={"CT": ("jpeg",)}, log=None)


def test_default_sources_are_split_by_source_and_modality_aware():
    names = [s.name for s in CORPUS_SOURCES]
    assert len(names) == len(set(names))
    files = {}
    for s in CORPUS_SOURCES:  # a file never feeds two splits
        assert files.setdefault(s.file, s.split) == s.split
    assert {s.split for s in CORPUS_SOURCES} == {"training", "validation", "test"}
    assert "rician_noise" in MODALITY_FAMILIES["MR"] and "speckle_noise" in MODALITY_FAMILIES["US"]
    assert "low_dose_ct" in MODALITY_FAMILIES["CT"] and "rician_noise" not in MODALITY_FAMILIES["CT"]
    test_modalities = {s.modality for s in CORPUS_SOURCES if s.split == "test"}
    assert {"CT", "MR", "CR", "US"} <= test_modalities


def test_current_corpus_keeps_the_v1_test_split_and_adds_validation_modalities():
    """Every source of the shipped model's corpus is still there unchanged (so its crops and distortions, seeded by
    source and crop name, are too), the test split is exactly v1's, and validation now spans CT, US, NM and natural."""
    assert set(CORPUS_SOURCES_V1) <= set(CORPUS_SOURCES)
    assert [s for s in CORPUS_SOURCES if s.split == "test"] == [s for s in CORPUS_SOURCES_V1 if s.split == "test"]
    assert {s.modality for s in CORPUS_SOURCES if s.split == "validation"} == {"CT", "US", "NM", "natural"}
    chest = [s for s in CORPUS_SOURCES if s.file == "RG1_UNCR.dcm"]
    assert sorted(s.scale_side for s in chest) == [512, 768, 1024] and {s.split for s in chest} == {"training"}
    assert corpus_preset("v1") == CORPUS_SOURCES_V1 and corpus_preset("full") == CORPUS_SOURCES
    with pytest.raises(ValueError, match="unknown corpus preset"):
        corpus_preset("v2")


@pytest.mark.skipif(sources.pydicom_data_dir() is None, reason="pydicom-data is not installed")
def test_no_dicom_study_feeds_two_splits():
    """A DICOM study (StudyInstanceUID) never feeds two splits, over the sources of every preset (pydicom's sample
    set RG1/RG3/MR2/US1/NM has one UID per file, so those files are split by file)."""
    import pydicom

    split_of: dict[str, str] = {}
    for src in CORPUS_SOURCES:
        if src.kind == "skimage":
            continue
        path = sources.dicom_path(src.file)
        assert path is not None, src.file
        uid = str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)
        assert split_of.setdefault(uid, src.split) == src.split, (src.name, uid)
    # the validation OB study has two files, both in validation
    assert sum(1 for s in split_of.values() if s == "validation") >= 2


def test_adding_sources_leaves_the_other_crops_unchanged(tmp_path, monkeypatch):
    """Crops and distortions are seeded by source and crop name: adding sources (here the same image at a second
    scale) changes no file of the others, and the two scales give different crops. Relative output paths work."""
    monkeypatch.chdir(tmp_path)
    fams = {"natural": ("gaussian_noise",)}
    base = (
        CorpusSource("nat_camera", "natural", "training", "skimage", "camera", 1, 128),
        CorpusSource("nat_coins", "natural", "test", "skimage", "coins", 1, 0),
    )
    more = (*base[:1], CorpusSource("nat_camera_256", "natural", "training", "skimage", "camera", 1, 256), base[1])
    digests = []
    for name, srcs in (("base", base), ("more", more)):
        build_pretrain_corpus(name, seed=1, image_size=64, sources_=srcs, families=fams, levels=1, log=None)
        digests.append(json.loads((tmp_path / name / "manifest.json").read_text())["sha256"])
    images = {k for k in digests[0] if k.startswith("images/")}
    assert images and all(digests[1][k] == digests[0][k] for k in images)
    a, b = (f"images/training/{n}_f0_c0/pristine.png" for n in ("nat_camera", "nat_camera_256"))
    assert digests[1][a] != digests[1][b]


def test_pseudo_mos_is_ssim():
    ref = skdata.camera()[:96, :96] / 255.0
    dis = np.clip(ref + 0.1 * np.random.default_rng(0).standard_normal(ref.shape), 0, 1)
    expected = structural_similarity(
        ref, dis, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0
    )
    assert pseudo_mos(ref, dis) == pytest.approx(expected)
    assert pseudo_mos(ref, ref) == pytest.approx(1.0)


def test_ladder_patch_dataset(tiny):
    train = load_datalist(tiny / "datalist.json", "training")
    pre = saqm_preprocessing(train=False, mos_range=(0.0, 1.0))
    ds = LadderPatchDataset(train, pre, patch_size=32, patches_per_ladder=2)
    assert len(ds) == 4
    ds.set_random_state(0)
    item = ds[0]
    assert len(item) == 2 * 4
    assert item[0]["image"].shape == (3, 32, 32) and item[0]["image"].dtype == torch.float32
    groups = [int(d["ladder"]) for d in item]
    assert groups == [0] * 4 + [1] * 4
    for g in range(2):
        part = item[4 * g : 4 * g + 4]
        assert [int(d["level"]) for d in part] == [0, 1, 2, 3]
        assert float(part[0]["mos"]) == 1.0 and float(part[1]["mos"]) > float(part[3]["mos"])
    ds.set_random_state(0)
    again = ds[0]
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(item, again))
    batch = next(iter(DataLoader(ds, batch_size=2, shuffle=False)))
    assert batch["image"].shape == (2 * 2 * 4, 3, 32, 32) and batch["ladder"].shape == (16,)
    with pytest.raises(ValueError, match="level-0"):
        LadderPatchDataset([dict(it) for it in train if it["level"] != 0], pre)


def test_ladder_patch_dataset_level_weights(tiny):
    """``level_weights`` gives each item of a family's ladders its level's ranking weight (other families 1), the
    batch a ``rank_weight`` key; without it there is no such key. Bad tables fail or warn, naming the distortion."""
    train = load_datalist(tiny / "datalist.json", "training")
    pre = saqm_preprocessing(train=False, mos_range=(0.0, 1.0))
    ds = LadderPatchDataset(train, pre, patch_size=32, level_weights={"jpeg": [1.0, 4.0, 2.0, 0.5]})
    seen = {}
    for name, ladder in zip(ds.names, range(len(ds))):
        family = name.rsplit("/", 1)[-1]
        seen[family] = [float(d["rank_weight"]) for d in ds[ladder]]
    assert seen == {"jpeg": [1.0, 4.0, 2.0, 0.5], "gaussian_noise": [1.0, 1.0, 1.0, 1.0]}
    batch = next(iter(DataLoader(ds, batch_size=4, shuffle=False)))
    assert batch["rank_weight"].shape == (16,)
    assert "rank_weight" not in LadderPatchDataset(train, pre)[0][0]
    with pytest.raises(ValueError, match="unknown distortions \\['jpg'\\]"):
        LadderPatchDataset(train, pre, level_weights={"jpg": [1.0] * 4})
    with pytest.raises(ValueError, match="has 3 weights, but ladder .*jpeg' has level 3"):
        LadderPatchDataset(train, pre, level_weights={"jpeg": [1.0] * 3})
    with pytest.raises(ValueError, match="non-negative"):
        LadderPatchDataset(train, pre, level_weights={"jpeg": [1.0, -1.0, 1.0, 1.0]})
    with pytest.warns(UserWarning, match="kspace_undersampling"):
        LadderPatchDataset(train, pre, level_weights={"kspace_undersampling": [1.0] * 6})


def test_cli_dispatch(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["python -m monai_iqad.data", "pretrain-corpus", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("monai_iqad.data", run_name="__main__")
    assert exit_info.value.code == 0 and "pretrain-corpus" in capsys.readouterr().out


def test_balanced_preset_triples_us_and_ct_training_crops_only():
    full, bal = pc.CORPUS_SOURCES, pc.corpus_preset("balanced")
    assert [(s.name, s.split) for s in bal] == [(s.name, s.split) for s in full]
    for a, b in zip(full, bal):
        tripled = a.split == "training" and a.modality in ("US", "CT")
        assert b.crops == (3 * a.crops if tripled else a.crops) and b.scale_side == a.scale_side
    crops = lambda m: sum(s.crops * len(s.frames or (0,)) for s in bal if s.split == "training" and s.modality == m)  # noqa: E731
    assert crops("US") == crops("CT") == 30 and crops("CR") == 20


def test_extra_families_add_ladders_and_leave_the_others_identical(tiny, tmp_path):
    extra = (replace(TINY_SOURCES[0], extra_families=("speckle_noise", "jpeg")), *TINY_SOURCES[1:])
    build_pretrain_corpus(tmp_path, seed=3, image_size=64, sources_=extra, families=TINY_FAMILIES, levels=3, log=None)
    new = json.loads((tmp_path / "manifest.json").read_text())["sha256"]
    old = json.loads((tiny / "manifest.json").read_text())["sha256"]
    added = sorted(set(new) - set(old))
    assert added == [f"images/training/nat_camera_f0_c{c}/speckle_noise_{lv}.png" for c in (0, 1) for lv in (1, 2, 3)]
    assert all(new[k] == v for k, v in old.items() if k != "datalist.json")  # jpeg (already a family) not repeated
    ladders = {it["ladder"] for it in load_datalist(tmp_path / "datalist.json", "training")}
    assert len(ladders) == 2 * 3  # 2 crops x (gaussian_noise, jpeg, speckle_noise)
    with pytest.raises(ValueError, match="unknown extra families"):
        replace(TINY_SOURCES[0], extra_families=("sparkle",))


def test_speckle_preset_adds_speckle_to_non_us_training_sources_only():
    bal, sp = pc.corpus_preset("balanced"), pc.corpus_preset("speckle")
    assert [replace(s, extra_families=()) for s in sp] == list(bal)
    for s in sp:
        expected = ("speckle_noise",) if s.split == "training" and s.modality != "US" else ()
        assert s.extra_families == expected, s.name
    assert {s.modality for s in sp if s.extra_families} == {"CT", "MR", "CR", "natural"}


def test_cli_preset(monkeypatch, tmp_path):
    """``--preset`` picks the source list handed to the builder (v1 = the shipped model's corpus)."""
    seen = {}
    monkeypatch.setattr(pc, "build_pretrain_corpus", lambda out, **kw: seen.update(out=out, **kw))
    assert pc.main([str(tmp_path), "--preset", "v1", "--seed", "3"]) == 0
    assert seen["sources_"] == CORPUS_SOURCES_V1 and seen["seed"] == 3 and seen["skip_missing"]
    assert pc.main([str(tmp_path)]) == 0 and seen["sources_"] == CORPUS_SOURCES
    with pytest.raises(ValueError, match="unknown corpus preset"):
        pc.main([str(tmp_path), "--preset", "v3"])


def _mr_with_matrix(tmp_path: Path, matrix: list[int] | None) -> str:
    """pydicom's 64 x 64 ``MR_small`` saved with the given ``AcquisitionMatrix`` (None = tag removed)."""
    import pydicom

    from tests.dicom_files import dicom_file

    ds = pydicom.dcmread(dicom_file("MR_small.dcm"))
    if matrix is None:
        ds.pop("AcquisitionMatrix", None)
    else:
        ds.AcquisitionMatrix = matrix
    path = tmp_path / f"mr_{matrix}.dcm"
    ds.save_as(path)
    return str(path)


def test_dicom_meta_acquired_matrix(tmp_path):
    """The largest AcquisitionMatrix entry (frequency rows/cols, phase rows/cols; two are 0), None when absent/zero."""
    assert sources.dicom_meta(_mr_with_matrix(tmp_path, [0, 40, 24, 0]))["acquired_matrix"] == 40
    assert sources.dicom_meta(_mr_with_matrix(tmp_path, [0, 0, 0, 0]))["acquired_matrix"] is None
    assert sources.dicom_meta(_mr_with_matrix(tmp_path, None))["acquired_matrix"] is None


def test_native_source_is_resized_to_its_acquired_matrix(tmp_path, monkeypatch):
    """``native=True``: the 64 x 64 display matrix becomes the 40 x 40 acquired one (anti-aliased resize), so a 32 x 32
    crop spans 80 % of the acquired field of view; a file without the tag, or ``native`` with a ``scale_side`` or a
    non-DICOM kind, is a clear error."""
    files = {"acq40.dcm": _mr_with_matrix(tmp_path, [0, 40, 24, 0]), "none.dcm": _mr_with_matrix(tmp_path, None)}
    monkeypatch.setattr(sources, "dicom_path", lambda name: Path(files[name]) if name in files else None)
    src = CorpusSource("mr", "MR", "test", "dicom", "acq40.dcm", 1, native=True)
    (img,) = pc._source_images(src)
    assert img.shape == (40, 40) and 0.0 <= img.min() and img.max() <= 1.0
    (display,) = pc._source_images(replace(src, native=False))
    assert display.shape == (64, 64)
    with pytest.raises(ValueError, match="none.dcm has no AcquisitionMatrix"):
        pc._source_images(replace(src, file="none.dcm"))
    with pytest.raises(ValueError, match="native needs"):
        CorpusSource("mr", "MR", "test", "dicom", "acq40.dcm", 1, 256, native=True)
    with pytest.raises(ValueError, match="native needs"):
        CorpusSource("cam", "natural", "test", "skimage", "camera", 1, native=True)


def test_package_file_and_npy_source(tmp_path, monkeypatch):
    """:func:`sources.package_file` finds a file inside an installed package without importing it; an ``npy`` source
    is percentile-windowed to [0, 1]; a missing package names what to install; a 3D array is refused."""
    here = sources.package_file("monai_iqad/demo/sources.py")
    assert here is not None and here.samefile(sources.__file__)
    assert sources.package_file("monai_iqad/no_such_file.npy") is None
    assert sources.package_file("no_such_package_xyz/a.npy") is None
    ramp = np.arange(40 * 50, dtype=np.float64).reshape(40, 50)
    np.save(tmp_path / "ramp.npy", ramp)
    np.save(tmp_path / "cube.npy", np.zeros((4, 4, 4)))
    monkeypatch.setattr(sources, "package_file", lambda p: tmp_path / p.split("/")[-1] if "pkg/" in p else None)
    (img,) = pc._source_images(CorpusSource("ramp", "MR", "test", "npy", "pkg/ramp.npy", 1))
    lo, hi = np.percentile(ramp, [0.5, 99.5])
    np.testing.assert_allclose(img, np.clip((ramp - lo) / (hi - lo), 0, 1))
    with pytest.raises(ValueError, match="3D array"):
        pc._source_images(CorpusSource("cube", "MR", "test", "npy", "pkg/cube.npy", 1))
    with pytest.raises(FileNotFoundError, match="pip install dipy"):
        pc._source_images(CorpusSource("t1", "MR", "test", "npy", "dipy/data/files/t1_coronal_slice.npy", 1))


def test_nifti_source_slices_share_one_window(tmp_path, monkeypatch):
    """A ``nifti`` source: the chosen axial slices of the first volume of a 4D file, transposed to (rows = y), with one
    percentile window for the whole volume (so a darker slice stays darker); a slice out of range, a 2D file and a
    missing package are clear errors."""
    import nibabel as nib

    vol = np.arange(6 * 5 * 3, dtype=np.float64).reshape(6, 5, 3) * np.array([1.0, 2.0, 4.0])  # slice z scaled by 2^z
    nib.save(nib.Nifti1Image(np.stack([vol, -vol], -1), np.eye(4)), tmp_path / "v4d.nii.gz")
    nib.save(nib.Nifti1Image(vol[:, :, 0], np.eye(4)), tmp_path / "flat.nii.gz")
    monkeypatch.setattr(sources, "package_file", lambda p: tmp_path / p.split("/")[-1] if "pkg/" in p else None)
    src = CorpusSource("v", "MR", "training", "nifti", "pkg/v4d.nii.gz", 1, frames=(0, 2))
    img0, img2 = pc._source_images(src)
    lo, hi = np.percentile(vol, [0.5, 99.5])
    window = np.clip((vol - lo) / (hi - lo), 0, 1)
    assert img0.shape == img2.shape == (5, 6)
    np.testing.assert_allclose(img0, window[:, :, 0].T)
    np.testing.assert_allclose(img2, window[:, :, 2].T)
    assert img0.max() < 0.3 < img2.max()  # not re-windowed per slice
    (first,) = pc._source_images(replace(src, frames=None))
    np.testing.assert_allclose(first, img0)
    with pytest.raises(ValueError, match=r"slices \[3\] out of range"):
        pc._source_images(replace(src, frames=(1, 3)))
    with pytest.raises(ValueError, match="2D array, expected a 3D/4D volume"):
        pc._source_images(replace(src, file="pkg/flat.nii.gz"))
    with pytest.raises(FileNotFoundError, match="pip install dipy"):
        pc._source_images(replace(src, file="dipy/data/files/S0_10slices.nii.gz"))


def test_mr_preset_adds_one_mr_training_anatomy():
    """The ``mr`` preset is the speckle preset plus dipy's b0 brain volume (10 slices, training, with speckle); every
    other source, and so the validation and test splits, unchanged. ``mr_plain``: the same without the b0 speckle."""
    sp, mr = corpus_preset("speckle"), corpus_preset("mr")
    assert mr[: len(sp)] == sp and len(mr) == len(sp) + 1
    (b0,) = mr[len(sp) :]
    assert (b0.modality, b0.split, b0.kind, b0.extra_families) == ("MR", "training", "nifti", ("speckle_noise",))
    assert b0.frames == tuple(range(10)) and b0.crops == 1
    assert b0.file.startswith("dipy/") and b0.name not in {s.name for s in sp}
    plain = corpus_preset("mr_plain")
    assert plain[:-1] == mr[:-1] and plain[-1] == replace(b0, extra_families=())


def test_test2_preset_extends_the_first_test_split():
    """Held-out set 2: test split only; CR, US and fundus keep their settings at 4 crops (so their first 2 crops are
    the first split's); the MR is replaced by the same file at its acquired matrix plus a second MR (dipy's T1); no
    file of it is in a training or validation split."""
    t2 = corpus_preset("test2")
    v1_test = {s.name: s for s in CORPUS_SOURCES_V1 if s.split == "test"}
    assert {s.split for s in t2} == {"test"} and len({s.name for s in t2}) == len(t2)
    for s in t2:
        if s.name in ("cr_leg", "us_aloka", "fundus_retina"):
            assert s == replace(v1_test[s.name], crops=4)
        elif s.modality != "MR":
            assert s == v1_test[s.name]
    mr = {s.name: s for s in t2 if s.modality == "MR"}
    assert mr["mr_abdomen_native"].native and mr["mr_abdomen_native"].file == v1_test["mr_abdomen"].file
    assert mr["mr_brain_t1"].kind == "npy"
    train_val = {s.file for s in CORPUS_SOURCES_BALANCED if s.split != "test"}
    assert not train_val & {s.file for s in t2}


def test_us_dense_preset_extends_the_test_ultrasound_crops():
    """``us_dense``: the test ultrasound source alone at 24 crops. Crops are drawn in sequence, so the first 4 of a
    24-crop draw are the 4 of test 2."""
    (dense,) = corpus_preset("us_dense")
    us2 = next(s for s in corpus_preset("test2") if s.modality == "US")
    assert dense == replace(us2, crops=24) and dense.split == "test"
    img = np.random.default_rng(1).random((300, 400))
    four = pc._pick_crops(img, 4, 128, np.random.default_rng(7))
    many = pc._pick_crops(img, 24, 128, np.random.default_rng(7))
    assert many[:4] == four and len(set(many)) == 24


@pytest.mark.skipif(sources.dicom_path("gdcm-US-ALOKA-16.dcm") is None, reason="pydicom-data not installed")
def test_us_dense_builds_on_the_real_scan(tmp_path):
    """On the real ALOKA scan the first 4 crops' speckle ladders are byte-identical to test 2's; 20 more are new."""
    (dense,) = corpus_preset("us_dense")
    us2 = next(s for s in corpus_preset("test2") if s.modality == "US")
    families = {"US": ("speckle_noise",)}
    build_pretrain_corpus(tmp_path / "d", sources_=(dense,), families=families, log=None)
    build_pretrain_corpus(tmp_path / "t", sources_=(us2,), families=families, log=None)
    sha_d = json.loads((tmp_path / "d" / "manifest.json").read_text())["sha256"]
    sha_t = json.loads((tmp_path / "t" / "manifest.json").read_text())["sha256"]
    images = [k for k in sha_d if k.endswith(".png")]
    assert len(images) == 24 * 6 and all(sha_d[k] == sha_t[k] for k in sha_t if k.endswith(".png"))
    assert len([k for k in sha_t if k.endswith(".png")]) == 4 * 6


def test_mr_dense_preset_extends_the_test1_mr_crops():
    """``mr_dense``: the first test split's MR source alone (same file, same display size) at 24 crops."""
    (dense,) = corpus_preset("mr_dense")
    (mr1,) = (s for s in corpus_preset("v1") if s.split == "test" and s.modality == "MR")
    assert dense == replace(mr1, crops=24) and not dense.native and dense.split == "test"


def test_dense_preset_takes_any_held_out_source():
    """``dense:<source>``: one validation or test source of the full corpus alone at 24 crops; the named dense presets
    are instances; training sources, unknown names and fewer crops than the source's own are refused by name."""
    (ct,) = corpus_preset("dense:ct_abdomen")
    full = {s.name: s for s in pc.CORPUS_SOURCES}
    assert ct == replace(full["ct_abdomen"], crops=24) and ct.split == "validation"
    (cr,) = corpus_preset("dense:cr_leg")
    assert cr == replace(full["cr_leg"], crops=24) and cr.scale_side == 768 and cr.split == "test"
    assert corpus_preset("dense:us_aloka") == corpus_preset("us_dense")
    assert corpus_preset("dense:mr_abdomen") == corpus_preset("mr_dense")
    with pytest.raises(ValueError, match="'cr_chest' is not a held-out source"):
        corpus_preset("dense:cr_chest")
    with pytest.raises(ValueError, match="'nope' is not a held-out source"):
        corpus_preset("dense:nope")
    with pytest.raises(ValueError, match="1 crops is fewer than the 2 of 'cr_leg'"):
        pc.dense_sources("cr_leg", crops=1)


@pytest.mark.skipif(sources.dicom_path("MR-SIEMENS-DICOM-WithOverlays.dcm") is None, reason="test MR not found")
def test_mr_dense_builds_on_the_real_scan(tmp_path):
    """On the real abdominal MR the first 2 crops' Rician ladders are byte-identical to the first test split's."""
    (dense,) = corpus_preset("mr_dense")
    (mr1,) = (s for s in corpus_preset("v1") if s.split == "test" and s.modality == "MR")
    families = {"MR": ("rician_noise",)}
    build_pretrain_corpus(tmp_path / "d", sources_=(replace(dense, crops=5),), families=families, log=None)
    build_pretrain_corpus(tmp_path / "t", sources_=(mr1,), families=families, log=None)
    sha_d = json.loads((tmp_path / "d" / "manifest.json").read_text())["sha256"]
    sha_t = json.loads((tmp_path / "t" / "manifest.json").read_text())["sha256"]
    pngs = [k for k in sha_t if k.endswith(".png")]
    assert len(pngs) == 2 * 6 and all(sha_d[k] == sha_t[k] for k in pngs)
    assert len([k for k in sha_d if k.endswith(".png")]) == 5 * 6


@pytest.mark.skipif(sources.package_file("dipy/data/files/t1_coronal_slice.npy") is None, reason="dipy not installed")
def test_dipy_t1_slice_builds(tmp_path):
    """The real dipy T1 slice (256 x 256) gives an MR ladder whose pseudo-MOS falls with the Gibbs level."""
    src = replace(corpus_preset("test2")[2], crops=1)
    build_pretrain_corpus(tmp_path, sources_=(src,), families={"MR": ("gibbs_ringing",)}, levels=5, log=None)
    items = load_datalist(tmp_path / "datalist.json", "test")
    mos = [it["mos"] for it in sorted(items, key=lambda it: it["level"])]
    assert len(mos) == 6 and all(a > b for a, b in zip(mos, mos[1:]))


@pytest.mark.skipif(sources.package_file("dipy/data/files/S0_10slices.nii.gz") is None, reason="dipy not installed")
def test_dipy_b0_volume_builds(tmp_path):
    """The real dipy b0 volume of the ``mr`` preset: 10 slices of 128 x 128, one 128 x 128 crop each, a gamma ladder
    whose pseudo-MOS falls with the level, and the extra speckle ladder."""
    src = replace(corpus_preset("mr")[-1], frames=(0, 9))
    images = pc._source_images(src)
    assert [im.shape for im in images] == [(128, 128)] * 2 and all(0 <= im.min() and im.max() <= 1 for im in images)
    build_pretrain_corpus(tmp_path, sources_=(src,), families={"MR": ("gamma",)}, levels=5, log=None)
    items = load_datalist(tmp_path / "datalist.json", "training")
    assert {it["crop"] for it in items} == {"mr_brain_b0_f0_c0", "mr_brain_b0_f1_c0"}
    assert {it["distortion"] for it in items} == {"gamma", "speckle_noise"}
    ladder = [it for it in items if it["ladder"] == "mr_brain_b0_f1_c0/gamma"]
    mos = [it["mos"] for it in sorted(ladder, key=lambda it: it["level"])]
    assert len(mos) == 6 and all(a > b for a, b in zip(mos, mos[1:]))


# ---------------------------------------------------------------------------------------------------------------------
# the new degradations


@pytest.fixture(scope="module")
def gray() -> np.ndarray:
    return (skdata.camera()[100:228, 100:228] / 255.0).astype(np.float64)


def test_rician_noise_has_a_positive_floor(gray):
    black = np.zeros((64, 64))
    out = rician_noise(black, 0.05, np.random.default_rng(0))
    # the magnitude of complex Gaussian noise is Rayleigh: mean sigma * sqrt(pi / 2)
    assert out.mean() == pytest.approx(0.05 * np.sqrt(np.pi / 2), rel=0.05)
    assert np.array_equal(rician_noise(gray, 0.0), gray)


def test_poisson_noise_variance_follows_the_signal():
    flat = np.full((128, 128), 0.5)
    out = poisson_noise(flat, 100.0, np.random.default_rng(0))
    assert out.var() == pytest.approx(0.5 / 100.0, rel=0.1)


def test_low_dose_ct_noise_and_streak_amplitudes():
    flat = np.full((96, 96), 0.5)
    streaks = low_dose_ct(flat, 0.0, 0.05, np.random.default_rng(1)) - 0.5
    noise = low_dose_ct(flat, 0.05, 0.0, np.random.default_rng(1)) - 0.5
    assert streaks.std() == pytest.approx(0.05, rel=0.3)  # unit-variance profiles summed over views / sqrt(V)
    assert noise.std() == pytest.approx(0.05, rel=0.05)  # renormalised correlated noise
    # correlated noise: neighbouring pixels agree far more than for white noise
    assert np.corrcoef(noise[:, :-1].ravel(), noise[:, 1:].ravel())[0, 1] > 0.3
    assert np.array_equal(low_dose_ct(flat, 0.0, 0.0), flat)


def test_gibbs_and_kspace_and_banding_and_resample(gray):
    step = np.zeros((64, 64))
    step[:, 32:] = 1.0
    ringing = gibbs_ringing(step, 0.25)
    assert ringing[:, 36:44].max() > 0.95 and ringing[:, 20:29].max() > 0.01  # overshoot/ripples next to the edge
    assert np.array_equal(gibbs_ringing(gray, 1.0), gray)
    under = kspace_undersampling(gray, 4.0, np.random.default_rng(0))
    assert under.shape == gray.shape and np.abs(under - gray).mean() > 0.01
    assert len(np.unique(banding(gray, 5))) <= 5
    assert np.abs(resample(gray, 4.0) - gray).mean() > np.abs(resample(gray, 1.5) - gray).mean()
    with pytest.raises(ValueError, match="levels"):
        banding(gray, 1)


def test_jpeg2000_round_trip(gray):
    rgb = np.stack([gray, gray[::-1], gray.T], -1)
    for img in (gray, rgb):
        light, heavy = jpeg2000_compress(img, 6.0), jpeg2000_compress(img, 64.0)
        assert light.shape == img.shape
        assert np.abs(heavy - img).mean() > np.abs(light - img).mean() > 0
    assert np.array_equal(jpeg2000_compress(gray, 1.0), gray)


def test_ladder_patch_dataset_modality_planes_and_dropout(tiny):
    """The datalist item (its ``modality``) reaches the preprocessing; modality dropout zeroes the trailing planes
    of every level at a position together (prob 1: always, prob 0: never), and the image channels stay as drawn."""
    train = load_datalist(tiny / "datalist.json", "training")
    pre = saqm_preprocessing(train=False, mos_range=(0.0, 1.0), modalities=SAQM_MODALITIES)
    m = len(SAQM_MODALITIES)
    kept = LadderPatchDataset(train, pre, patch_size=32, dropout_channels=m, dropout_prob=0.0)
    dropped = LadderPatchDataset(train, pre, patch_size=32, dropout_channels=m, dropout_prob=1.0)
    kept.set_random_state(0)
    dropped.set_random_state(0)
    a, b = kept[0], dropped[0]
    assert a[0]["image"].shape == (3 + m, 32, 32)
    expected = SAQM_MODALITIES.index(train[0]["modality"])
    for x, y in zip(a, b):
        assert torch.equal(x["image"][3:].amax(dim=(1, 2)), torch.eye(m)[expected])
        assert torch.count_nonzero(y["image"][3:]) == 0 and torch.equal(x["image"][:3], y["image"][:3])
    assert torch.count_nonzero(kept[0][0]["image"][3:]) > 0  # the cache was not modified by the dropout
    with pytest.raises(ValueError, match="dropout"):
        LadderPatchDataset(train, pre, dropout_prob=1.5)


def test_pick_crops_black_share_bounds():
    """``max_flat`` / ``min_black`` bound the near-black share of every accepted crop (black columns beside texture: the
    default keeps crops on the texture, ``min_black`` pushes them across the edge). The defaults draw exactly the
    crops that the code before these arguments drew (pinned: computed with ``_pick_crops`` of commit dbde1a9), so
    every existing corpus preset is unchanged."""
    rng = np.random.default_rng(3)
    img = np.zeros((256, 160))
    img[:, 64:] = 0.2 + 0.6 * rng.random((256, 96))  # 64 black columns, then texture
    black = lambda yx: float((img[yx[0] : yx[0] + 64, yx[1] : yx[1] + 64] < 0.03).mean())  # noqa: E731
    plain = pc._pick_crops(img, 6, 64, np.random.default_rng(5))
    assert plain == [(129, 78), (4, 78), (90, 49), (28, 96), (36, 63), (50, 94)]
    assert all(black(c) <= 0.3 for c in plain)
    edge = pc._pick_crops(img, 6, 64, np.random.default_rng(5), max_flat=0.6, min_black=0.25)
    assert all(0.25 <= black(c) <= 0.6 for c in edge)
    with pytest.raises(ValueError, match="min_black <= max_flat"):
        pc.CorpusSource("x", "MR", "training", "dicom", "f.dcm", 1, max_flat=0.3, min_black=0.5)
    with pytest.raises(ValueError, match="max_flat > 0"):
        pc.CorpusSource("x", "MR", "training", "dicom", "f.dcm", 1, max_flat=0.0)


def test_mr_bg_preset_adds_background_crops_of_the_training_shoulder():
    """``mr_bg``: the speckle preset plus the training MR shoulder again, under a new name, with crops reaching into
    the background; the validation and test splits unchanged."""
    sp, bg = corpus_preset("speckle"), corpus_preset("mr_bg")
    assert bg[: len(sp)] == sp and len(bg) == len(sp) + 1
    (extra,) = bg[len(sp) :]
    shoulder = next(s for s in sp if s.name == "mr_shoulder")
    assert extra == replace(shoulder, name="mr_shoulder_bg", max_flat=0.6, min_black=0.25)
    assert extra.split == "training" and extra.name not in {s.name for s in sp}


def test_foreground_mask_keeps_the_body_and_its_dark_inside():
    """A noisy background (0.02 +- 0.01), a disc of 0.5 holding a dark core (0.01, darker than the background), and a
    bright speck apart from it: the mask is the disc with its core (holes filled) and neither the background nor the
    speck (largest component only)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:96, :96]
    img = 0.02 + 0.01 * rng.standard_normal((96, 96))
    disc = (yy - 48) ** 2 + (xx - 40) ** 2 <= 30**2
    core = (yy - 48) ** 2 + (xx - 40) ** 2 <= 8**2
    img[disc] = 0.5
    img[core] = 0.01
    img[2:6, 88:92] = 0.9  # a 4 x 4 speck
    fg = pc.foreground_mask(img, 0.05)
    assert fg.dtype == bool and fg.shape == img.shape
    assert fg[core].all() and fg[disc].mean() > 0.99
    assert not fg[2:6, 88:92].any()
    outside = ~disc & ((yy - 48) ** 2 + (xx - 40) ** 2 > 34**2)  # 4 px beyond the edge (smoothing, closing)
    assert not fg[outside].any()
    assert not pc.foreground_mask(img, 0.95).any()  # nothing above the threshold


def test_mask_background_zeroes_the_pristine_background(tmp_path):
    """A source with ``mask_background`` gives pristines whose background is exactly 0; the noise ladder then puts
    noise into it. The threshold is validated."""
    src = CorpusSource("nat_camera", "natural", "training", "skimage", "camera", 1, 128, max_flat=0.9, min_black=0.3)
    fams = {"natural": ("gaussian_noise",)}
    for name, s in (("plain", src), ("masked", replace(src, mask_background=0.45))):
        build_pretrain_corpus(tmp_path / name, seed=1, image_size=64, sources_=(s,), families=fams, levels=1, log=None)
    read = lambda name, f: np.asarray(Image.open(tmp_path / name / "images/training/nat_camera_f0_c0" / f))  # noqa: E731
    assert (read("plain", "pristine.png") == 0).mean() < 0.05
    masked = read("masked", "pristine.png")
    assert 0.3 <= (masked == 0).mean() <= 0.9
    assert (read("masked", "gaussian_noise_1.png")[masked == 0] > 0).mean() > 0.3
    with pytest.raises(ValueError, match="mask_background"):
        CorpusSource("x", "MR", "training", "dicom", "f.dcm", 1, mask_background=1.0)


def test_mr_mask_preset_masks_the_background_crops():
    """``mr_mask``: the ``mr_bg`` background source under a new name with its background masked; nothing else."""
    bg, mask = corpus_preset("mr_bg"), corpus_preset("mr_mask")
    assert mask[:-1] == bg[:-1] and len(mask) == len(bg)
    assert mask[-1] == replace(bg[-1], name="mr_shoulder_mask", mask_background=0.05)


def test_ct_kspace_preset_adds_ct_head_background_crops_with_kspace():
    """``ct_kspace``: ``mr_mask`` plus background crops of the training CT head with the k-space family; the CT head's
    anatomy crops, and every held-out source, are those of ``mr_mask``."""
    mask, ct = corpus_preset("mr_mask"), corpus_preset("ct_kspace")
    assert ct[:-1] == mask
    new = ct[-1]
    assert (new.name, new.modality, new.split, new.file) == ("ct_head_bg", "CT", "training", "693_UNCR.dcm")
    assert "kspace_undersampling" in new.extra_families and "kspace_undersampling" not in MODALITY_FAMILIES["CT"]
    assert new.min_black > 0 and new.max_flat > 0.3
    assert len({s.name for s in ct}) == len(ct)  # the split unit stays unique


def test_ct_kspace_x2_preset_doubles_the_ct_head_background_crops():
    """``ct_kspace_x2``: ``ct_kspace`` with 18 CT head background crops instead of 9, nothing else."""
    one, two = corpus_preset("ct_kspace"), corpus_preset("ct_kspace_x2")
    assert two[:-1] == one[:-1] and two[-1] == replace(one[-1], crops=2 * one[-1].crops)


def test_ct_kspace_mni_preset_adds_mni_brain_slices_on_a_black_background():
    """``ct_kspace_mni``: ``ct_kspace`` plus 10 axial slices of nilearn's MNI T1 template (one background crop each,
    MR families, no speckle); every held-out source is that of ``ct_kspace``."""
    ct, mni = corpus_preset("ct_kspace"), corpus_preset("ct_kspace_mni")
    assert mni[:-1] == ct
    new = mni[-1]
    assert (new.name, new.modality, new.split, new.kind) == ("mr_brain_mni", "MR", "training", "nifti")
    assert new.file.startswith("nilearn/") and new.file.endswith(".nii.gz")
    assert new.frames == tuple(range(35, 135, 10)) and new.crops == 1
    assert new.extra_families == () and new.min_black > 0 and new.max_flat > 0.3
    assert [s for s in mni if s.split != "training"] == [s for s in ct if s.split != "training"]
    assert len({s.name for s in mni}) == len(mni)


def test_noise_floor_gives_the_pristine_a_rician_background(tmp_path):
    """``noise_floor``: the same crop as without it, its zero background turned into a Rayleigh floor (std 0.655 sigma,
    mean 1.25 sigma), its anatomy barely changed; every ladder degrades that noisy pristine. Validated."""
    src = CorpusSource(
        "nat_camera", "natural", "training", "skimage", "camera", 1, 128, max_flat=0.9, min_black=0.3,
        mask_background=0.45,
    )  # fmt: skip
    fams = {"natural": ("gaussian_blur",)}
    sigma = 0.03
    for name, s in (("clean", src), ("floor", replace(src, noise_floor=sigma))):
        build_pretrain_corpus(tmp_path / name, seed=1, image_size=64, sources_=(s,), families=fams, levels=1, log=None)
    read = lambda name, f: np.asarray(Image.open(tmp_path / name / "images/training/nat_camera_f0_c0" / f), float)  # noqa: E731
    clean, floor = read("clean", "pristine.png"), read("floor", "pristine.png")
    bg = clean == 0
    assert bg.mean() > 0.3  # a black background to put the floor in
    g = 255 * sigma
    assert abs(floor[bg].std() - 0.655 * g) < 0.15 * g and abs(floor[bg].mean() - 1.2533 * g) < 0.1 * g
    assert np.abs(floor[~bg] - clean[~bg]).mean() < 1.5 * g  # the same crop, with noise
    lift = read("floor", "gaussian_blur_1.png")[bg].mean() - read("clean", "gaussian_blur_1.png")[bg].mean()
    assert abs(lift - 1.2533 * g) < 0.15 * g  # the blur ladder starts from the noisy pristine (its floor's mean)
    with pytest.raises(ValueError, match="noise_floor"):
        CorpusSource("x", "MR", "training", "dicom", "f.dcm", 1, noise_floor=-0.1)


def test_ct_kspace_mni_floor_presets_add_a_noise_floor_to_the_mni_crops_only():
    """``ct_kspace_mni_floor`` and ``ct_kspace_mni_floor_half``: ``ct_kspace_mni`` with a noise floor (0.011, 0.0055)
    on the MNI source, under the same name (so the same crops); nothing else."""
    mni, floor = corpus_preset("ct_kspace_mni"), corpus_preset("ct_kspace_mni_floor")
    assert floor[:-1] == mni[:-1] and floor[-1] == replace(mni[-1], noise_floor=0.011)
    assert all(s.noise_floor == 0 for s in floor[:-1])
    half = corpus_preset("ct_kspace_mni_floor_half")  # stop 40: the same crops at half the floor
    assert half[:-1] == mni[:-1] and half[-1] == replace(mni[-1], noise_floor=0.0055)
