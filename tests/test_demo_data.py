"""Embedded demo data: SAQM (natural → ultrasound) and the five MKCNet IQAD demos."""

from __future__ import annotations

import json
import runpy
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from monai_iqad import demo
from monai_iqad.data import load_datalist
from monai_iqad.data.datasets import IQAD_DATASETS
from monai_iqad.demo import make_demo_data, make_iqad_demo_data, sources

HAVE_PYDICOM_DATA = sources.pydicom_data_dir() is not None
SPLITS = ("training", "validation", "test")
needs_pydicom_data = pytest.mark.skipif(not HAVE_PYDICOM_DATA, reason="pydicom-data is not installed")


@pytest.fixture(scope="module")
def saqm(tmp_path_factory) -> tuple[Path, dict, float]:
    out = tmp_path_factory.mktemp("saqm")
    start = time.perf_counter()
    path = make_demo_data(out, seed=0)
    elapsed = time.perf_counter() - start
    return path, json.loads(path.read_text()), elapsed


def _all_items(datalist: dict) -> list[dict]:
    return [it for key in ("training", "source_validation", "validation", "test") for it in datalist[key]]


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------------------------------------------------
# SAQM demo


def test_saqm_builds_fast_and_files_are_readable(saqm):
    path, dl, elapsed = saqm
    assert path.name == "datalist.json"
    assert elapsed < 30.0
    items = _all_items(dl)
    assert 150 <= len(items) <= 600
    sizes = set()
    for it in items:
        with Image.open(path.parent / it["image"]) as im:
            assert im.mode == "L"  # gray PNGs by default (the model repeats gray to 3 channels)
            sizes.add(im.size)
    assert sizes == {(96, 96)}


def test_saqm_datalist_is_valid(saqm):
    path, dl, _ = saqm
    lo_s, hi_s = dl["mos_range"]["source"]
    lo_t, hi_t = dl["mos_range"]["target"]
    assert (lo_s, hi_s) == (0.0, 9.0) and (lo_t, hi_t) == (1.0, 5.0)
    # the project's own loader accepts every section
    train = load_datalist(path, "training", require_mos="source")
    assert {it["domain"] for it in train} == {"source", "target"}
    for key in ("source_validation", "validation", "test"):
        assert all(np.isfinite(it["mos"]) for it in load_datalist(path, key, require_mos=True))
    assert {it["domain"] for it in dl["source_validation"]} == {"source"}
    assert {it["domain"] for it in dl["validation"] + dl["test"]} == {"target"}
    for it in _all_items(dl):
        if it["mos"] is None:
            continue
        lo, hi = (lo_s, hi_s) if it["domain"] == "source" else (lo_t, hi_t)
        assert lo <= it["mos"] <= hi
    # semi-supervised: part of the target training items are unlabelled, the rest labelled
    target_train = [it for it in dl["training"] if it["domain"] == "target"]
    labelled = [it for it in target_train if it["mos"] is not None]
    assert 0 < len(labelled) < len(target_train)
    assert all(it["mos"] is not None for it in dl["training"] if it["domain"] == "source")
    # no content leak: pristine groups are disjoint between target splits, references between source sections
    groups = {key: {it["group"] for it in dl[key] if it["domain"] == "target"} for key in ("training", "validation")}
    groups["test"] = {it["group"] for it in dl["test"]}
    assert groups["training"] and groups["validation"] and groups["test"]
    assert not groups["training"] & groups["validation"]
    assert not groups["training"] & groups["test"]
    assert not groups["validation"] & groups["test"]
    src_train = {it["group"] for it in dl["training"] if it["domain"] == "source"}
    assert not src_train & {it["group"] for it in dl["source_validation"]}
    # every target split holds pristine and degraded frames
    for key in ("validation", "test"):
        assert {it["severity"] for it in dl[key]} == set(range(6))


def test_saqm_mos_is_monotone_in_severity(saqm):
    _, dl, _ = saqm
    by_series: dict[tuple, list[tuple[int, float]]] = {}
    for it in _all_items(dl):
        if it["mos"] is None:
            continue
        if it["domain"] == "source":
            key = ("source", it["reference"], it["kind"])
        else:  # the pristine frame (severity 0) heads the series of its degraded versions
            key = ("target", it["reference"])
        by_series.setdefault(key, []).append((it["severity"], it["mos"]))
    checked = 0
    for series in by_series.values():
        series.sort()
        if len(series) > 1:
            checked += 1
            assert all(a[1] > b[1] for a, b in zip(series, series[1:])), series
    assert checked > 20
    assert demo.source_mos("denoise", 5) < demo.source_mos("denoise", 1) < 7.0
    assert demo.target_mos("speckle_noise", 0) == pytest.approx(4.6)


def test_saqm_is_deterministic(saqm, tmp_path):
    path, _, _ = saqm
    again = make_demo_data(tmp_path / "again", seed=0)
    assert _tree_bytes(path.parent) == _tree_bytes(again.parent)
    other = make_demo_data(tmp_path / "other", seed=1, label_all=True)
    assert other.read_bytes() != path.read_bytes()
    dl = json.loads(other.read_text())
    assert all(it["mos"] is not None for it in dl["training"])


def test_saqm_without_any_ultrasound_file_falls_back_to_simulation(tmp_path, monkeypatch):
    real = sources.dicom_path
    monkeypatch.setattr(
        sources,
        "dicom_path",
        lambda name: None if name.startswith(("examples", "US1", "color3d", "OBXX")) else real(name),
    )
    with pytest.warns(RuntimeWarning, match="simulated"):
        path = make_demo_data(tmp_path, seed=0, image_size=64, num_source_validation=2)
    dl = json.loads(path.read_text())
    assert dl["target_images"] == ["simulated"]
    assert dl["validation"] and dl["test"]


def test_available_sources():
    found = demo.available_sources()
    assert found["skimage:camera"] and found["skimage:retina"]
    assert found["pydicom:CT_small.dcm"]
    assert found["pydicom-data:RG1_UNCR.dcm"] == HAVE_PYDICOM_DATA


# ----------------------------------------------------------------------------------------------------------------------
# IQAD demos


@pytest.mark.parametrize("dataset", demo.IQAD_DEMO_DATASETS)
def test_iqad_demo_builds_with_all_pairs(dataset, tmp_path):
    info = IQAD_DATASETS[dataset]
    if info.modality in ("cxr",) and not HAVE_PYDICOM_DATA:
        pytest.skip("iqad_cxr needs pydicom-data")
    pairs = info.num_diagnosis * info.num_quality
    path = make_iqad_demo_data(tmp_path, dataset, seed=0, num_images=5 * pairs, image_size=64)
    dl = json.loads(path.read_text())
    assert (dl["num_diagnosis"], dl["num_quality"], dl["num_channels"]) == (
        info.num_diagnosis,
        info.num_quality,
        info.channels,
    )
    expected = {(d, q) for d in range(info.num_diagnosis) for q in range(info.num_quality)}
    for key in ("training", "validation", "test"):
        items = load_datalist(path, key, task="iqad", num_diagnosis=info.num_diagnosis, num_quality=info.num_quality)
        assert {(it["diagnosis"], it["quality"]) for it in items} == expected, key
    counts = Counter((it["diagnosis"], it["quality"]) for it in dl["training"])
    assert len(set(counts.values())) == 1  # balanced
    mode = "RGB" if info.channels == 3 else "L"
    for it in dl["training"][:5]:
        with Image.open(path.parent / it["image"]) as im:
            assert im.mode == mode and im.size == (64, 64)


def test_iqad_demo_is_deterministic(tmp_path):
    a = make_iqad_demo_data(tmp_path / "a", "eyeq", seed=3, num_images=27)
    b = make_iqad_demo_data(tmp_path / "b", "eyeq", seed=3, num_images=27)
    c = make_iqad_demo_data(tmp_path / "c", "eyeq", seed=4, num_images=27)
    assert _tree_bytes(a.parent) == _tree_bytes(b.parent)
    assert _tree_bytes(a.parent) != _tree_bytes(c.parent)


def test_iqad_demo_validation(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown IQAD demo dataset"):
        make_iqad_demo_data(tmp_path, "kvasir")
    with pytest.raises(ValueError, match="num_images"):
        make_iqad_demo_data(tmp_path, "eyeq", num_images=10)
    with pytest.raises(ValueError, match="together"):
        make_iqad_demo_data(tmp_path, "iqad_ct", num_train=8, num_val=8)
    with pytest.raises(ValueError, match="together"):
        make_iqad_demo_data(tmp_path, "iqad_ct", num_images=40, num_train=8, num_val=8, num_test=8)
    with pytest.raises(ValueError, match=r"'validation': 3"):
        make_iqad_demo_data(tmp_path, "iqad_ct", num_train=8, num_val=3, num_test=8)
    with pytest.raises(ValueError, match="diagnosis"):
        demo.simulate_iqad_sample("deepdr", 3, 0)
    real = sources.dicom_path
    monkeypatch.setattr(sources, "dicom_path", lambda name: None if name[:2] in ("RG", "69") else real(name))
    with pytest.raises(RuntimeError, match="pip install pydicom-data"):
        make_iqad_demo_data(tmp_path, "iqad_cxr", num_images=18)
    # the CT demo needs only pydicom's own CT_small.dcm
    assert make_iqad_demo_data(tmp_path / "ct", "iqad_ct", num_images=12).is_file()


def test_iqad_demo_split_sizes(tmp_path):
    """Explicit split sizes: exact counts, every pair in every split, the remainder on the first pairs."""
    path = make_iqad_demo_data(tmp_path, "iqad_ct", seed=1, num_train=8, num_val=5, num_test=12, image_size=32)
    dl = json.loads(path.read_text())
    pairs = [(d, q) for q in range(2) for d in range(2)]  # quality-major, as the builder orders them
    for split, size in (("training", 8), ("validation", 5), ("test", 12)):
        counts = Counter((it["diagnosis"], it["quality"]) for it in dl[split])
        assert sum(counts.values()) == size and set(counts) == set(pairs), split
        base, extra = divmod(size, len(pairs))
        assert [counts[p] for p in pairs] == [base + (i < extra) for i in range(len(pairs))], split
    images = [it["image"] for key in ("training", "validation", "test") for it in dl[key]]
    assert len(set(images)) == 25 and all((path.parent / im).is_file() for im in images)


_QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


def _probe_features(img: np.ndarray) -> np.ndarray:
    """Simple global features per channel: intensity quantiles, quantiles of a difference of Gaussians (blob
    response, σ 1 vs 3 px) and of the 5×5 local standard deviation (texture), and the mean gradient magnitude."""
    planes = img.reshape(img.shape[0], img.shape[1], -1)
    feats: list[float] = []
    for c in range(planes.shape[-1]):
        x = planes[..., c]
        dog = ndimage.gaussian_filter(x, 1.0) - ndimage.gaussian_filter(x, 3.0)
        local = ndimage.uniform_filter(x, 5)
        local_std = np.sqrt(np.maximum(ndimage.uniform_filter(x * x, 5) - local**2, 0.0))
        grad = np.hypot(ndimage.sobel(x, 0), ndimage.sobel(x, 1))
        feats += [*np.quantile(x, _QUANTILES), *np.quantile(dog, _QUANTILES), *np.quantile(local_std, _QUANTILES)]
        feats.append(float(grad.mean()))
    return np.asarray(feats)


def _probe(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Out-of-fold class probabilities of a standardised logistic regression (5-fold stratified CV)."""
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    return cross_val_predict(model, features, labels, cv=folds, method="predict_proba")


@pytest.mark.parametrize("dataset", demo.IQAD_DEMO_DATASETS)
def test_diagnosis_learnable_and_grade_predictable(dataset):
    """A linear probe on simple image features detects the lesions (any diagnosis > 0 vs none) from high-quality
    images alone, and predicts the quality grade from the images of all grades."""
    info = IQAD_DATASETS[dataset]
    if info.modality == "cxr" and not HAVE_PYDICOM_DATA:
        pytest.skip("iqad_cxr needs pydicom-data")
    n, best = 40, info.num_quality - 1
    features, lesion, grade = [], [], []
    for q in (best, 0) if info.num_quality == 2 else (best, 1, 0):
        for k in range(n if q != best else 2 * n):  # 80 best-grade images (diagnosis probe), 40 per other grade
            d = 0 if k % 2 == 0 else 1 + (k // 2) % (info.num_diagnosis - 1)
            img, _ = demo.simulate_iqad_sample(dataset, d, q, 1000 * q + k)
            features.append(_probe_features(img))
            lesion.append(int(d > 0))
            grade.append(q)
    x, y, g = np.asarray(features), np.asarray(lesion), np.asarray(grade)
    hq = g == best
    auc = roc_auc_score(y[hq], _probe(x[hq], y[hq])[:, 1])
    assert auc > 0.7, f"{dataset}: lesions not learnable from high-quality images (probe AUC {auc:.3f})"
    accuracy = float(np.mean(_probe(x, g).argmax(1) == g))
    assert accuracy > 0.9, f"{dataset}: grade not predictable (probe accuracy {accuracy:.3f})"


def _lesion_visibility(dataset: str, quality: int, n: int = 12) -> tuple[float, float]:
    """Matched-filter view of how visible the simulated lesions are at one quality grade.

    For each lesioned scene: t = lesion signal before degradation (clean image with lesions − clean without).
    Returns (signal, d'): ``signal`` = mean fraction of the matched-filter response <img − lesion_free, t> / <t, t>
    that survives the degradation (1 = undegraded); ``d'`` = signal / noise of that response, the noise being
    estimated from two independent noise realisations of the lesion-free image, plus a 5 % internal-noise floor.
    """
    info = IQAD_DATASETS[dataset]
    best = info.num_quality - 1
    signal, noise = [], []
    for k in range(n):
        d = 1 + k % (info.num_diagnosis - 1)
        img, free = demo.simulate_iqad_sample(dataset, d, quality, k)
        img0, free0 = demo.simulate_iqad_sample(dataset, d, best, k)  # same scene, undegraded
        _, free2 = demo.simulate_iqad_sample(dataset, d, quality, k, noise_seed=10_000 + k)
        t = (img0 - free0).ravel()
        tt = float(t @ t)
        assert tt > 0
        signal.append(float((img - free).ravel() @ t) / tt)
        noise.append(float((free2 - free).ravel() @ t) / tt / np.sqrt(2))
    s = float(np.mean(signal))
    return s, s / float(np.sqrt(np.mean(np.square(noise)) + 0.05**2))


@pytest.mark.parametrize("dataset", demo.IQAD_DEMO_DATASETS)
def test_low_quality_hides_lesions(dataset):
    info = IQAD_DATASETS[dataset]
    if info.modality == "cxr" and not HAVE_PYDICOM_DATA:
        pytest.skip("iqad_cxr needs pydicom-data")
    stats = [_lesion_visibility(dataset, q) for q in range(info.num_quality)]
    signal = [s for s, _ in stats]
    dprime = [d for _, d in stats]
    assert signal[-1] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(signal, signal[1:])), signal
    assert all(a < b for a, b in zip(dprime, dprime[1:])), dprime
    assert signal[0] < 0.85 and dprime[0] < 0.7 * dprime[-1]


def test_same_seed_same_scene_across_quality():
    img_good, free_good = demo.simulate_iqad_sample("eyeq", 2, 2, 11)
    img_bad, free_bad = demo.simulate_iqad_sample("eyeq", 2, 0, 11)
    assert img_good.shape == (64, 64, 3) and not np.allclose(img_good, img_bad)
    # degrading both scenes with the same plan: the lesion-free twin differs from the lesioned image only by lesions
    assert np.abs(img_good - free_good).max() > 0.1
    gray, _ = demo.simulate_iqad_sample("drac", 0, 1, 2, image_size=32)
    assert gray.shape == (32, 32)


def test_cli(tmp_path, capsys, monkeypatch):
    assert demo.main(["--out", str(tmp_path / "d"), "--dataset", "deepdr", "--num-images", "18", "--seed", "2"]) == 0
    split_args = ["--num-train", "6", "--num-val", "6", "--num-test", "12", "--image-size", "32"]
    assert demo.main(["--out", str(tmp_path / "s"), "--dataset", "deepdr", *split_args]) == 0
    sizes = {k: len(v) for k, v in json.loads((tmp_path / "s" / "datalist.json").read_text()).items() if k in SPLITS}
    assert sizes == {"training": 6, "validation": 6, "test": 12}
    assert (tmp_path / "d" / "datalist.json").is_file()
    assert "deepdr" in capsys.readouterr().out
    # the older entry point `python -m monai_iqad.data` runs the same command line and writes the same files
    argv = ["python -m monai_iqad.data", "--out", str(tmp_path / "e"), "--dataset", "deepdr", "--num-images", "18"]
    monkeypatch.setattr(sys, "argv", [*argv, "--seed", "2"])
    with pytest.raises(SystemExit) as stop:
        runpy.run_module("monai_iqad.data", run_name="__main__")
    assert stop.value.code == 0
    assert _tree_bytes(tmp_path / "d") == _tree_bytes(tmp_path / "e")
