"""Graded degradations: shape/dtype/range, determinism, identity at severity 0, monotone severity, MONAI wrappers."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from scipy import ndimage
from skimage import data, transform

from monai_iqad.transforms import (
    DEGRADATION_KINDS,
    Degrade,
    Degraded,
    RandDegrade,
    RandDegraded,
    degrade,
    gaussian_blur,
    jpeg_compress,
)
from monai_iqad.transforms.degradations import MAX_SEVERITY, contrast_reduction, severity_params

RANDOM_KINDS = ("gaussian_noise", "speckle_noise", "denoise", "uneven_illumination", "motion_blur")


@pytest.fixture(scope="module")
def gray() -> np.ndarray:
    return transform.resize(data.camera()[40:360, 80:400], (128, 128), anti_aliasing=True).astype(np.float32)


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    return transform.resize(data.astronaut()[:400, 50:450], (128, 128), anti_aliasing=True).astype(np.float64)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def _laplacian_variance(img: np.ndarray) -> float:
    g = img if img.ndim == 2 else img.mean(-1)
    return float(ndimage.laplace(g.astype(np.float64)).var())


@pytest.mark.parametrize("kind", DEGRADATION_KINDS)
@pytest.mark.parametrize("which", ["gray", "rgb"])
def test_shape_dtype_range_and_determinism(kind, which, gray, rgb):
    img = gray if which == "gray" else rgb
    out = degrade(img, kind, 3, np.random.default_rng(7))
    assert out.shape == img.shape and out.dtype == img.dtype
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert out is not img and not np.shares_memory(out, img)
    again = degrade(img, kind, 3, np.random.default_rng(7))
    np.testing.assert_array_equal(out, again)
    if kind in RANDOM_KINDS:
        other = degrade(img, kind, 3, np.random.default_rng(8))
        assert not np.array_equal(out, other)


@pytest.mark.parametrize("kind", DEGRADATION_KINDS)
def test_severity_zero_is_identity(kind, gray, rgb):
    for img in (gray, rgb):
        out = degrade(img, kind, 0, np.random.default_rng(0))
        np.testing.assert_array_equal(out, img)
        assert out.dtype == img.dtype


@pytest.mark.parametrize("kind", DEGRADATION_KINDS)
def test_psnr_decreases_with_severity(kind, gray, rgb):
    for img in (gray, rgb):
        psnrs = [_psnr(img, degrade(img, kind, s, np.random.default_rng(3))) for s in range(MAX_SEVERITY + 1)]
        assert psnrs[0] == float("inf")
        assert all(a > b for a, b in zip(psnrs, psnrs[1:])), (kind, psnrs)


@pytest.mark.parametrize("kind", ["gaussian_blur", "motion_blur", "denoise"])
def test_blur_reduces_sharpness(kind, gray):
    sharp = [_laplacian_variance(degrade(gray, kind, s, np.random.default_rng(1))) for s in (0, 1, 3, 5)]
    if kind == "denoise":  # residual noise can add high frequencies at low severity; the worst is over-smoothed
        assert sharp[-1] < 0.5 * sharp[0]
    else:
        assert all(a > b for a, b in zip(sharp, sharp[1:])), sharp


def test_each_op_is_fast(gray, rgb):
    for img in (gray, rgb):
        for kind in DEGRADATION_KINDS:
            degrade(img, kind, 5, np.random.default_rng(0))  # warm-up (imports)
            start = time.perf_counter()
            degrade(img, kind, 5, np.random.default_rng(0))
            # the target is < 50 ms on 128x128; generous bound for a loaded 2-core CI machine
            assert time.perf_counter() - start < 0.5, kind


def test_parameters_and_validation(gray):
    assert severity_params("gaussian_blur", 0) == {}
    assert severity_params("gaussian_blur", 2, spatial_scale=2.0)["sigma"] == pytest.approx(2.0)
    assert severity_params("jpeg", 2, spatial_scale=2.0)["quality"] == 30  # not spatial
    with pytest.raises(ValueError, match="unknown degradation kind"):
        degrade(gray, "sharpen", 1)
    for bad in (-1, 6, 2.5, True):
        with pytest.raises(ValueError, match="severity"):
            degrade(gray, "gaussian_noise", bad)
    with pytest.raises(TypeError, match="float"):
        degrade((gray * 255).astype(np.uint8), "gaussian_noise", 1)
    with pytest.raises(ValueError, match="shape"):
        degrade(gray[None, None], "gaussian_noise", 1)
    with pytest.raises(ValueError, match="quality"):
        jpeg_compress(gray, 0)
    with pytest.raises(ValueError, match="amount"):
        contrast_reduction(gray, 1.5)
    # spatial_scale makes blur stronger
    assert _psnr(gray, degrade(gray, "gaussian_blur", 2, spatial_scale=2.0)) < _psnr(gray, gaussian_blur(gray, 1.0))


def test_jpeg_handles_other_channel_counts(gray):
    two = np.stack([gray, 1 - gray], -1)
    out = jpeg_compress(two, 20)
    assert out.shape == two.shape and out.dtype == two.dtype


def test_degrade_array_transform_keeps_type_and_meta(gray):
    mt = MetaTensor(torch.from_numpy(gray[None].copy()), meta={"filename_or_obj": "x.png"})
    t = Degrade("gaussian_noise", 3)
    t.set_random_state(0)
    out = t(mt)
    assert isinstance(out, MetaTensor) and out.shape == (1, 128, 128) and out.dtype == torch.float32
    assert out.meta["filename_or_obj"] == "x.png"
    assert not torch.equal(out, mt)
    # reproducible through MONAI's random state
    t2 = Degrade("gaussian_noise", 3)
    t2.set_random_state(0)
    assert torch.equal(t2(mt), out)
    # numpy in -> numpy out; 3-channel tensor in -> tensor out
    np_out = Degrade("gaussian_blur", 2)(gray[None])
    assert isinstance(np_out, np.ndarray) and np_out.shape == (1, 128, 128)
    rgb_t = torch.rand(3, 40, 48)
    assert Degrade("jpeg", 4)(rgb_t).shape == (3, 40, 48)
    assert torch.equal(Degrade("speckle_noise", 0)(rgb_t), rgb_t)
    with pytest.raises(ValueError, match="channel-first"):
        Degrade("gaussian_blur", 1)(gray)


def test_dict_transforms(gray):
    img = MetaTensor(torch.from_numpy(gray[None].copy()))
    d = Degraded(["a", "b"], "gaussian_noise", 4).set_random_state(1)({"a": img, "b": img.clone(), "label": 3})
    assert d["label"] == 3 and isinstance(d["a"], MetaTensor)
    assert torch.equal(d["a"], d["b"])  # same noise realisation for every key
    assert not torch.equal(d["a"], img)

    rand = RandDegraded("a", kinds=["gaussian_blur", "jpeg"], severity_range=(2, 4), kind_key="k", severity_key="s")
    rand.set_random_state(5)
    seen = set()
    for _ in range(12):
        out = rand({"a": img})
        assert out["k"] in ("gaussian_blur", "jpeg") and 2 <= out["s"] <= 4
        seen.add((out["k"], out["s"]))
    assert len(seen) > 1
    off = RandDegraded("a", prob=0.0, kind_key="k", severity_key="s")({"a": img})
    assert off["s"] == 0 and off["k"] == "none" and torch.equal(off["a"], img)

    arr = RandDegrade(kinds=["low_contrast"], severity_range=(5, 5)).set_random_state(0)(gray[None])
    assert arr.std() < gray.std()
    with pytest.raises(ValueError, match="severity_range"):
        RandDegrade(severity_range=(3, 7))
    with pytest.raises(ValueError, match="unknown degradation kind"):
        RandDegraded("a", kinds=["nope"])
