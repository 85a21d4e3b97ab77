"""Classic NR-IQA metrics (NIQE, BRISQUE, PIQE, variance of the Laplacian, blur effect) against reference values.

References and tolerances:
- The spec's table (``iqa_peers_and_data.md`` section 1(a)) on scikit-image ``camera``: clean, Gaussian **blur**
  sigma 2 and 4, Gaussian noise var 0.02 (``random_noise(..., rng=0)``), each quantised to 8 bits by truncation
  (``(x * 255).astype(np.uint8)``): that recipe reproduces the table (except PIQE clean: 40.0 there, 40.14 with
  both ours and pypiqe, so that row is left out). NIQE (pyiqa with the basicsr
  model) 3.10 / 8.04 / 10.19 / 12.70, BRISQUE (``brisque`` 0.2.0, the model we ship) -7.88 / 63.31 / 80.17 / 70.45,
  PIQE 84.8 / 100 / 73.1, blur effect 0.29 / 0.60 / 0.80 / 0.16; tolerances of about half a unit of the last digit
  shown. (The issue text says "noise sigma 2 / 4" for the NIQE values; the spec table, which produced them, says
  blur, and blur reproduces them.)
- NIQE on the five TID2013 distorted images: pyiqa's calibration ("ours") values, tolerance 0.1 (I19 is the worst,
  0.08; pyiqa's own gap to MATLAB there is 0.44).
- PIQE: the ``pypiqe`` package (MIT) to 1e-6, and MATLAB's ``piqe`` on the five TID2013 images to 1e-3.
- Variance of the Laplacian and blur effect: OpenCV's ``Laplacian(...).var()`` and ``skimage.measure.blur_effect``.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import data as skdata
from skimage import filters, measure, util

from monai_iqad.metrics import NR_IQA_METRICS, blur_effect, brisque, laplacian_variance, niqe, piqe
from monai_iqad.metrics.nss import downsample_matlab, downsample_opencv
from monai_iqad.metrics.params import PARAMS_FILE, PARAMS_SHA256, load_params

ROOT = Path(__file__).resolve().parents[1]
TID_NAMES = ("I03", "I04", "I06", "I08", "I19")
PIQE_MATLAB_TID = (100.0, 21.6242, 35.8646, 41.147, 76.9485)
NIQE_PYIQA_TID = (15.6538, 3.6549, 3.2342, 3.1921, 9.0722)


@pytest.fixture(scope="module")
def camera() -> np.ndarray:
    return skdata.camera()


def _to8(x: np.ndarray) -> np.ndarray:
    """``[0, 1]`` float -> uint8 by truncation, as the spec's measurements did (``(x * 255).astype(np.uint8)``)."""
    return (x * 255).astype(np.uint8)


def _blur8(img: np.ndarray, sigma: float) -> np.ndarray:
    return _to8(filters.gaussian(img, sigma=sigma)) if sigma else img


def _noise8(img: np.ndarray, var: float, seed: int = 0) -> np.ndarray:
    return _to8(util.random_noise(img, var=var, rng=seed)) if var else img


def test_params_file_checksum_and_content():
    assert hashlib.sha256(PARAMS_FILE.read_bytes()).hexdigest() == PARAMS_SHA256
    p = load_params()
    assert p["niqe_mu"].shape == (36,) and p["niqe_cov"].shape == (36, 36)
    assert torch.allclose(p["niqe_cov"], p["niqe_cov"].T)
    assert p["brisque_sv"].shape == (770, 36) and p["brisque_coef"].shape == (770,)
    assert float(p["brisque_rho"]) == pytest.approx(-155.845) and float(p["brisque_gamma"]) == pytest.approx(0.05)
    assert bool((p["brisque_max"] > p["brisque_min"]).all())


def test_params_file_tampered(tmp_path):
    bad = tmp_path / "params.npz"
    raw = bytearray(PARAMS_FILE.read_bytes())
    raw[-10] ^= 0xFF
    bad.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="sha256"):
        load_params(bad, sha256=PARAMS_SHA256)
    with pytest.raises(FileNotFoundError, match="fetch_nr_iqa_params"):
        load_params(tmp_path / "missing.npz")


def _fetch_script():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import fetch_nr_iqa_params
    finally:
        sys.path.pop(0)
    return fetch_nr_iqa_params


def _test_cache() -> Path:
    return Path(os.environ.get("MONAI_IQAD_TEST_CACHE", Path.home() / ".cache" / "monai_iqad" / "test_data"))


def test_params_file_rebuilds_byte_identical_from_pypi(tmp_path):
    """Provenance: ``scripts/fetch_nr_iqa_params.py`` turns basicsr 1.4.2 + brisque 0.2.0 into the shipped file."""
    fresh = tmp_path / "fresh.npz"
    try:
        _fetch_script().main(["--cache", str(_test_cache() / "nr_iqa_params"), "--out", str(fresh)])
    except (subprocess.SubprocessError, OSError) as e:
        pytest.skip(f"pip download of basicsr==1.4.2 / brisque==0.2.0 failed (offline?): {e}")
    assert hashlib.sha256(fresh.read_bytes()).hexdigest() == PARAMS_SHA256


def test_libsvm_parser_sparse_rows():
    parse_libsvm_model = _fetch_script().parse_libsvm_model
    text = "svm_type epsilon_svr\nkernel_type rbf\ngamma 0.5\nnr_class 2\ntotal_sv 2\nrho -1.5\nSV\n"
    text += "2 1:0.5 3:-1\n-1 2:0.25 3:1\n"  # libsvm omits zero entries
    m = parse_libsvm_model(text)
    np.testing.assert_array_equal(m["brisque_sv"], [[0.5, 0.0, -1.0], [0.0, 0.25, 1.0]])
    np.testing.assert_array_equal(m["brisque_coef"], [2.0, -1.0])
    assert m["brisque_rho"] == -1.5 and m["brisque_gamma"] == 0.5
    with pytest.raises(ValueError, match="RBF epsilon-SVR"):
        parse_libsvm_model(text.replace("rbf", "linear"))


def _spec_image(camera: np.ndarray, name: str) -> np.ndarray:
    """The four images of the spec's table 1(a): clean, Gaussian blur sigma 2 and 4, Gaussian noise var 0.02."""
    if name == "noise":
        return _noise8(camera, 0.02, seed=0)
    return _blur8(camera, {"clean": 0, "blur2": 2, "blur4": 4}[name])


# (metric, image, spec value, tolerance): the spec rounds to the digits shown, so the tolerance is about half a unit of
# the last digit, plus the small gap between two implementations (e.g. ours vs pyiqa NIQE, BRISQUE blur4: 0.011).
# blur2 sits at the edge: on the 2026-12-05 package set (same code, numpy 2.4.6 / scipy 1.17.1 / scikit-image 0.26,
# also with 2.3.5 / 1.16.3 / 0.25.2) NIQE gives 8.0508 and BRISQUE 63.2898, so their tolerance is twice that gap.
SPEC_TABLE = [
    ("niqe", "clean", 3.10, 0.01),
    ("niqe", "blur2", 8.04, 0.02),
    ("niqe", "blur4", 10.19, 0.01),
    ("niqe", "noise", 12.70, 0.01),
    ("brisque", "clean", -7.88, 0.02),
    ("brisque", "blur2", 63.31, 0.04),
    ("brisque", "blur4", 80.17, 0.02),
    ("brisque", "noise", 70.45, 0.02),
    ("piqe", "blur2", 84.8, 0.05),
    ("piqe", "blur4", 100.0, 0.05),
    ("piqe", "noise", 73.1, 0.05),
    ("blur", "clean", 0.29, 0.005),
    ("blur", "blur2", 0.60, 0.005),
    ("blur", "blur4", 0.80, 0.005),
    ("blur", "noise", 0.16, 0.005),
]


@pytest.mark.parametrize("metric, image, expected, tol", SPEC_TABLE)
def test_camera_matches_spec_table(camera, metric, image, expected, tol):
    """NIQE: pyiqa + basicsr model; BRISQUE: the ``brisque`` 0.2.0 package; PIQE: pypiqe/pyiqa; blur: skimage."""
    assert NR_IQA_METRICS[metric](_spec_image(camera, image)[None]) == pytest.approx(expected, abs=tol)


def test_piqe_matches_pypiqe(camera):
    pypiqe = pytest.importorskip("pypiqe", reason="pypiqe (test extra) is not installed")
    for img in (camera, _blur8(camera, 2), _noise8(camera, 0.01), camera[:300, :250], skdata.coins()):
        assert piqe(img[None]) == pytest.approx(pypiqe.piqe(img)[0], abs=1e-6)


def test_lapvar_and_blur_effect_match_opencv_and_skimage(camera):
    cv2 = pytest.importorskip("cv2", reason="OpenCV (pulled in by pypiqe, test extra) is not installed")
    for img in (camera, _blur8(camera, 2), camera[:77, :50]):
        assert laplacian_variance(img[None]) == pytest.approx(cv2.Laplacian(img.astype(np.float64), cv2.CV_64F).var())
        assert blur_effect(img[None]) == pytest.approx(measure.blur_effect(img), abs=1e-9)
    rgb = skdata.astronaut()
    assert blur_effect(rgb.transpose(2, 0, 1)) == pytest.approx(measure.blur_effect(rgb, channel_axis=-1), abs=1e-9)


def test_resampling_matches_opencv():
    cv2 = pytest.importorskip("cv2", reason="OpenCV (pulled in by pypiqe, test extra) is not installed")
    rng = np.random.default_rng(0)
    for shape in ((37, 50), (64, 51), (8, 9)):
        a = rng.random(shape)
        ours = downsample_opencv(torch.from_numpy(a)[None, None])[0, 0].numpy()
        np.testing.assert_allclose(ours, cv2.resize(a, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_CUBIC), atol=1e-12)


def test_matlab_half_resize_on_ramp():
    # an antialiased bicubic halving of a linear ramp is the ramp sampled at the new pixel centres (away from borders)
    ramp = torch.arange(32, dtype=torch.float64).repeat(32, 1)[None, None]
    out = downsample_matlab(ramp)[0, 0]
    assert out.shape == (16, 16)
    torch.testing.assert_close(out[:, 2:-2], (2 * torch.arange(16, dtype=torch.float64) + 0.5)[2:-2].repeat(16, 1))


@pytest.mark.parametrize("name", sorted(NR_IQA_METRICS))
def test_monotone_in_graded_blur_and_noise(camera, name):
    metric = NR_IQA_METRICS[name]
    crop = camera[64:448, 64:448]
    blur = [metric(_blur8(crop, s)[None]) for s in (0, 1, 2, 4)]
    noise = [metric(_noise8(crop, v)[None]) for v in (0, 0.002, 0.01, 0.05)]
    worse_blur = np.diff(blur) > 0 if metric.lower_better else np.diff(blur) < 0
    assert worse_blur.all(), (name, blur)
    # sharpness measures read noise as detail: lapvar grows and blur effect falls with noise (spec table 1(a))
    noise_up = name in ("niqe", "brisque", "piqe", "lapvar")
    assert (np.diff(noise) > 0).all() if noise_up else (np.diff(noise) < 0).all(), (name, noise)


@pytest.mark.parametrize("name", sorted(NR_IQA_METRICS))
def test_batch_shapes_colour_and_range(name):
    metric = NR_IQA_METRICS[name]
    rgb = skdata.astronaut()[:200, :200].transpose(2, 0, 1)
    gray = skdata.camera()[:200, :200][None]
    single = metric(rgb)
    assert isinstance(single, float) and np.isfinite(single)
    batch = metric.fn(torch.from_numpy(np.stack([rgb, rgb[:, ::-1].copy()])))
    assert batch.shape == (2,) and batch.dtype == torch.float32
    assert float(batch[0]) == pytest.approx(single, rel=1e-5)
    # [0, 1] data with data_range=1 gives the 8-bit score
    assert metric(gray.astype(np.float32) / 255, data_range=1.0) == pytest.approx(metric(gray), rel=1e-4, abs=1e-4)
    # a gray image given as three equal channels is its own luma (weights sum to 1)
    assert metric(np.repeat(gray, 3, axis=0)) == pytest.approx(metric(gray), rel=1e-4, abs=1e-4)


def test_bad_input_errors():
    with pytest.raises(ValueError, match="96x96"):
        niqe(np.zeros((1, 64, 200)))
    with pytest.raises(ValueError, match="channels"):
        piqe(np.zeros((2, 32, 32)))
    with pytest.raises(ValueError, match="NaN"):
        brisque(np.full((1, 32, 32), np.nan))
    with pytest.raises(ValueError, match="shape"):
        blur_effect(np.zeros((1, 1, 1, 8, 8)))
    with pytest.raises(ValueError, match="real-valued"):
        piqe(np.zeros((1, 32, 32), dtype=bool))
    assert piqe(np.zeros((1, 40, 40))) == 100.0  # uniform image: MATLAB's documented score


def test_metatensor_and_read_only_input():
    from monai.data import MetaTensor

    img = skdata.camera()[:128, :128][None]
    frozen = img.copy()
    frozen.setflags(write=False)
    out = laplacian_variance(MetaTensor(torch.from_numpy(img.astype(np.float32))[None]))
    assert type(out) is torch.Tensor and out.shape == (1,)
    assert float(out[0]) == pytest.approx(laplacian_variance(frozen), rel=1e-6)


def _pyiqa_wheel() -> Path:
    """The pyiqa 0.1.16 wheel (for its five TID2013 BMPs only), downloaded once into a cache folder."""
    cache = _test_cache()
    found = sorted(cache.glob("pyiqa-0.1.16-*.whl"))
    if not found:
        cache.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "pyiqa==0.1.16", "-d", str(cache), "-q"]
        try:
            subprocess.run(cmd, check=True, capture_output=True, timeout=300)
        except (subprocess.SubprocessError, OSError) as e:
            pytest.skip(f"pip download pyiqa==0.1.16 failed (offline?), TID2013 calibration images unavailable: {e}")
        found = sorted(cache.glob("pyiqa-0.1.16-*.whl"))
    if not found:
        pytest.skip("pip download pyiqa==0.1.16 saved no wheel")
    return found[0]


@pytest.fixture(scope="module")
def tid2013_distorted() -> list[np.ndarray]:
    from PIL import Image

    with zipfile.ZipFile(_pyiqa_wheel()) as zf:
        return [
            np.asarray(Image.open(io.BytesIO(zf.read(f"ResultsCalibra/dist_dir/{n}.bmp"))).convert("RGB"))
            .transpose(2, 0, 1)
            .copy()
            for n in TID_NAMES
        ]


def test_piqe_matches_matlab_on_tid2013(tid2013_distorted):
    ours = piqe(np.stack(tid2013_distorted)).numpy()
    np.testing.assert_allclose(ours, PIQE_MATLAB_TID, atol=1e-3)


def test_niqe_matches_pyiqa_on_tid2013(tid2013_distorted):
    """Within 1 % (+ 0.05) of pyiqa's NIQE: on the 2026-12-05 package set the heavily distorted I03 gives 15.786
    against pyiqa's 15.654 (0.8 %), the others within 0.015; the two implementations resize differently."""
    ours = niqe(np.stack(tid2013_distorted)).numpy()
    np.testing.assert_allclose(ours, NIQE_PYIQA_TID, rtol=0.01, atol=0.05)


def test_speed_benchmark_quick(tmp_path, capsys):
    """``benchmarks/nr_iqa_speed.py --quick`` runs and writes only its own section."""
    import importlib.util

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location("nr_iqa_speed", ROOT / "benchmarks" / "nr_iqa_speed.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.pop(0)
    out = tmp_path / "benchmarks.md"
    out.write_text("# Benchmarks\n\n<!-- other:start -->\nkeep\n<!-- other:end -->\n")
    assert module.main(["--quick", "--rounds", "1", "--output", str(out)]) == 0
    text = out.read_text()
    assert "keep" in text and "<!-- nr_iqa_speed:start -->" in text
    assert all(f"`{name}`" in text for name in NR_IQA_METRICS)
