"""Small demo data sets built offline from real images shipped inside Python packages (see ``docs/demo_data.md``).

- :func:`make_demo_data`: the SAQM domain-adaptation demo. Source domain = scikit-image natural images with graded
  TID2013-#9-like "denoising" distortions (plus noise/blur/JPEG); target domain = real ultrasound frames from
  pydicom's (and, when installed, pydicom-data's) test files with speckle/denoising/blur/JPEG distortions. The MOS is a
  documented deterministic function of the severity (:func:`source_mos`, :func:`target_mos`).
- :func:`make_iqad_demo_data`: the MKCNet quality-aware diagnosis demos (``eyeq``, ``deepdr``, ``drac``, ``iqad_ct``,
  ``iqad_cxr``). Diagnosis labels come from SIMULATED lesions inserted into real (fundus, CT, CR) or procedural (OCTA)
  images; quality labels come from graded degradations applied after the lesions, so low quality hides lesions.

Nothing is downloaded. Everything is deterministic for a seed (PNG files and datalists are byte-identical).
Command line: ``python -m monai_iqad.data.demo --out DIR [--dataset saqm|eyeq|deepdr|drac|iqad_ct|iqad_cxr|all]``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

__all__ = [
    "NATURAL_IMAGES",
    "IQAD_DEMO_DATASETS",
    "IQAD_DEMO_DEGRADATIONS",
    "IQAD_DEMO_QUALITY_NAMES",
    "SOURCE_MOS_RANGE",
    "TARGET_MOS_RANGE",
    "available_sources",
    "source_mos",
    "target_mos",
    "make_demo_data",
    "make_iqad_demo_data",
    "simulate_iqad_sample",
    "main",
]

# ----------------------------------------------------------------------------------------------------------------------
# real images available offline

#: scikit-image images inside the wheel used as pristine natural references (source domain); all CC0, public domain
#: or "no known copyright restrictions" per their docstrings. Left out: ``clock`` (real motion blur), ``page``
#: (uneven illumination), ``moon`` (low contrast, no licence note), ``stereo_motorcycle`` (Middlebury licence).
NATURAL_IMAGES: tuple[str, ...] = (
    "astronaut", "brick", "camera", "cell", "chelsea", "coffee", "coins",
    "grass", "gravel", "hubble_deep_field", "immunohistochemistry", "rocket", "text",
)  # fmt: skip

_PYDICOM_FILES = ("examples_ybr_color.dcm", "examples_rgb_color.dcm", "examples_palette.dcm", "CT_small.dcm")
_PYDICOM_DATA_FILES = (
    "US1_UNCR.dcm", "OBXXXX1A.dcm", "color3d_jpeg_baseline.dcm", "RG1_UNCR.dcm", "RG3_UNCR.dcm", "693_UNCR.dcm",
)  # fmt: skip

_INSTALL_HINT = "pip install pydicom-data"


@functools.cache
def _skimage_image(name: str) -> np.ndarray | None:
    """A scikit-image data image as float64 in [0, 1] (``(H, W)`` or ``(H, W, 3)``), or None if it cannot load."""
    import skimage.data

    try:
        img = getattr(skimage.data, name)()
    except Exception:  # pooch-backed images fail offline: treat as absent
        return None
    if isinstance(img, tuple):  # e.g. stereo_motorcycle -> (left, right, disparity)
        img = img[0]
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[..., :3]
    if img.dtype == np.uint8:
        out = img.astype(np.float64) / 255.0
    else:
        out = img.astype(np.float64)
        out = (out - out.min()) / max(float(np.ptp(out)), 1e-12)
    out.setflags(write=False)
    return out


def _pydicom_data_dir() -> Path | None:
    """The data folder of the optional ``pydicom-data`` package (module ``data_store``), or None."""
    import importlib.util

    spec = importlib.util.find_spec("data_store")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "data"
    return folder if folder.is_dir() else None


def _dicom_path(name: str) -> Path | None:
    """Locate a pydicom test file without any network access (pydicom's own files, then pydicom-data)."""
    import pydicom.data

    local = Path(pydicom.data.__file__).parent / "test_files" / name
    if local.is_file():
        return local
    folder = _pydicom_data_dir()
    if folder is not None and (folder / name).is_file():
        return folder / name
    return None


def available_sources() -> dict[str, bool]:
    """Which real images the demos can use on this machine (nothing is downloaded).

    Returns:
        ``{"skimage:<name>": bool, "pydicom:<file>": bool, "pydicom-data:<file>": bool}``. The SAQM demo needs no
        pydicom-data (it falls back to simulated B-mode frames when no ultrasound file is found at all, e.g. with
        pydicom 2.x, which does not ship the ``examples_*`` files); ``iqad_cxr`` needs pydicom-data (``RG1``/``RG3``)
        and ``iqad_ct`` uses only ``CT_small.dcm`` without it.
    """
    out: dict[str, bool] = {}
    for name in (*NATURAL_IMAGES, "retina"):
        out[f"skimage:{name}"] = _skimage_image(name) is not None
    for name in _PYDICOM_FILES:
        out[f"pydicom:{name}"] = _dicom_path(name) is not None
    folder = _pydicom_data_dir()
    for name in _PYDICOM_DATA_FILES:
        out[f"pydicom-data:{name}"] = folder is not None and (folder / name).is_file()
    return out


def _pydicom_major() -> int:
    """Major version of the installed pydicom (2 or 3)."""
    import pydicom

    return int(str(pydicom.__version__).split(".")[0])


def _to_rgb_compat(arr: np.ndarray, ds: Any) -> np.ndarray:
    """pydicom compat shim: YBR → RGB (pydicom 2.x returns JPEG YBR_FULL_422 undecoded) and palette → RGB."""
    pi = str(ds.PhotometricInterpretation)
    if pi == "PALETTE COLOR":
        try:
            from pydicom.pixels import apply_color_lut
        except ImportError:  # pragma: no cover - pydicom 2.x
            from pydicom.pixel_data_handlers.util import apply_color_lut
        return apply_color_lut(arr, ds)
    if pi.startswith("YBR_FULL") and _pydicom_major() < 3:  # pragma: no cover - pydicom 2.x
        from pydicom.pixel_data_handlers.util import convert_color_space

        return convert_color_space(arr, pi, "RGB")
    return arr


@functools.lru_cache(maxsize=32)
def _dicom_frames(path: str, frames: tuple[int, ...] | None = None) -> tuple[np.ndarray, ...]:
    """Decode frames of a DICOM file as arrays (RGB for colour files); one decode per (file, frames) per process.

    pydicom 3 decodes only the requested frames; pydicom 2.x decodes the whole cine once.
    """
    import pydicom

    ds = pydicom.dcmread(path)
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if n_frames == 1:
        out = (_to_rgb_compat(ds.pixel_array, ds),)
    else:
        wanted = frames if frames is not None else tuple(range(n_frames))
        if _pydicom_major() >= 3:
            from pydicom.pixels import pixel_array

            out = tuple(_to_rgb_compat(pixel_array(ds, index=i), ds) for i in wanted)
        else:  # pragma: no cover - pydicom 2.x
            full = ds.pixel_array
            out = tuple(_to_rgb_compat(full[i], ds) for i in wanted)
    for arr in out:
        arr.setflags(write=False)
    return out


def _dicom_meta(path: str) -> dict[str, Any]:
    """Rescale slope/intercept and photometric interpretation of a DICOM file (header only)."""
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return {
        "slope": float(ds.get("RescaleSlope", 1) or 1),
        "intercept": float(ds.get("RescaleIntercept", 0) or 0),
        "photometric": str(ds.get("PhotometricInterpretation", "")),
    }


# ----------------------------------------------------------------------------------------------------------------------
# small image helpers


def _degrade(img: np.ndarray, kind: str, severity: int, rng: np.random.Generator, spatial_scale: float) -> np.ndarray:
    """:func:`monai_iqad.transforms.degradations.degrade`, imported lazily: ``data/`` never imports ``transforms/``
    at import time (layering of ``docs/architecture.md``); the demo builders are the one place that use it."""
    from monai_iqad.transforms.degradations import degrade

    return degrade(img, kind, severity, rng, spatial_scale=spatial_scale)


def _item_rng(seed: int, *parts: Any) -> np.random.Generator:
    """A Generator that depends only on the seed and a stable name, so items don't depend on build order."""
    key = zlib.crc32("/".join(str(p) for p in parts).encode("utf-8"))
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, key])


def _resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Anti-aliased resize (Pillow Lanczos on float32 planes) of an ``(H, W)`` or ``(H, W, C)`` image to (h, w)."""
    h, w = size
    if img.shape[:2] == (h, w):
        return img.astype(np.float64)

    def plane(p: np.ndarray) -> np.ndarray:
        resized = Image.fromarray(np.ascontiguousarray(p, dtype=np.float32)).resize((w, h), Image.LANCZOS)
        return np.asarray(resized, dtype=np.float64)

    out = plane(img) if img.ndim == 2 else np.stack([plane(img[..., c]) for c in range(img.shape[2])], -1)
    return np.clip(out, 0.0, 1.0)


def _save_png(path: Path, img: np.ndarray) -> None:
    """Write an 8-bit PNG (``L`` for 2-D, ``RGB`` for ``(H, W, 3)``); byte-identical for identical input."""
    u8 = np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(u8)).save(path, format="PNG")


def _write_json(path: Path, obj: dict) -> None:
    """Write a datalist as indented UTF-8 JSON (deterministic: insertion order, no timestamps)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def _gray(img: np.ndarray) -> np.ndarray:
    """ITU-R 601 luminance of an RGB image (2-D images are returned as they are)."""
    if img.ndim == 2:
        return img
    return img[..., 0] * 0.299 + img[..., 1] * 0.587 + img[..., 2] * 0.114


def _affine_warp(
    img: np.ndarray,
    out_size: int,
    rng: np.random.Generator,
    rotation: float,
    zoom: tuple[float, float],
    shift: float,
    flip: bool,
    cval: float | None,
) -> np.ndarray:
    """Random similarity transform of a square-ish working image into an ``out_size`` square (bilinear).

    ``rotation`` is the max absolute angle in degrees, ``zoom`` the (min, max) magnification, ``shift`` the max
    translation as a fraction of the output size; ``cval=None`` reflects at the borders instead of padding.
    """
    from skimage.transform import warp

    img = np.array(img, dtype=np.float64)  # writable copy (cached bases are read-only)
    h, w = img.shape[:2]
    angle = np.deg2rad(rng.uniform(-rotation, rotation))
    z = rng.uniform(*zoom)
    ty, tx = rng.uniform(-shift, shift, size=2) * min(h, w)
    do_flip = flip and bool(rng.integers(2))
    scale = min(h, w) / (out_size * z)  # input pixels per output pixel
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    fx = -1.0 if do_flip else 1.0
    oc = (out_size - 1) / 2.0
    # inverse map (x, y) output -> input, in skimage's (col, row) convention
    matrix = np.array(
        [[c * fx, -s, (w - 1) / 2.0 + tx - (c * fx * oc - s * oc)],
         [s * fx, c, (h - 1) / 2.0 + ty - (s * fx * oc + c * oc)],
         [0.0, 0.0, 1.0]]
    )  # fmt: skip
    kwargs: dict[str, Any] = {"mode": "reflect"} if cval is None else {"mode": "constant", "cval": cval}
    out = warp(img, matrix, output_shape=(out_size, out_size), order=1, preserve_range=True, **kwargs)
    return np.clip(out, 0.0, 1.0)


def _blob(size: int, cy: float, cx: float, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """An anisotropic Gaussian blob (peak 1) with random elongation and orientation."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    ratio = rng.uniform(0.7, 1.4)
    theta = rng.uniform(0.0, np.pi)
    dy, dx = yy - cy, xx - cx
    u = dy * np.cos(theta) + dx * np.sin(theta)
    v = -dy * np.sin(theta) + dx * np.cos(theta)
    return np.exp(-(u**2 / (2 * (sigma * ratio) ** 2) + v**2 / (2 * (sigma / ratio) ** 2)))


def _irregular(blob: np.ndarray, rng: np.random.Generator, grain: float) -> np.ndarray:
    """Modulate a blob with smooth noise so it looks patchy (consolidation / ground glass) rather than round."""
    noise = ndimage.gaussian_filter(rng.standard_normal(blob.shape), grain)
    noise /= max(float(noise.std()), 1e-12)
    return blob * np.clip(0.7 + 0.3 * noise, 0.0, 1.3)


def _sample_positions(mask: np.ndarray, count: int, rng: np.random.Generator) -> list[tuple[float, float]]:
    """``count`` random (y, x) positions inside ``mask`` (anywhere if the mask is empty)."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        ys, xs = np.nonzero(np.ones_like(mask, dtype=bool))
    picks = rng.integers(0, ys.size, size=count)
    return [(float(ys[i]) + rng.uniform(-0.5, 0.5), float(xs[i]) + rng.uniform(-0.5, 0.5)) for i in picks]


# ----------------------------------------------------------------------------------------------------------------------
# SAQM demo: MOS model

#: MOS scales written raw in the datalist (TID2013 uses 0..9; the target is a 1..5 ACR scale like MD72).
SOURCE_MOS_RANGE: tuple[float, float] = (0.0, 9.0)
TARGET_MOS_RANGE: tuple[float, float] = (1.0, 5.0)

_SOURCE_KIND_WEIGHT = {"denoise": 1.0, "gaussian_noise": 1.05, "gaussian_blur": 0.95, "jpeg": 0.9}
_TARGET_KIND_WEIGHT = {"speckle_noise": 1.0, "denoise": 1.0, "gaussian_blur": 0.95, "jpeg": 0.9}
_SOURCE_OTHER_KINDS = ("gaussian_noise", "gaussian_blur", "jpeg")
_TARGET_KINDS = ("speckle_noise", "denoise", "gaussian_blur", "jpeg")


def source_mos(kind: str, severity: int, rng: np.random.Generator | None = None) -> float:
    """Source-domain (TID2013-like, 0..9) MOS: ``clip(7 - 1.2 * w[kind] * severity + U(-0.2, 0.2), 0, 9)``.

    ``w`` = denoise 1.0, gaussian_noise 1.05, gaussian_blur 0.95, jpeg 0.9 (1.0 for other kinds). The jitter (absent
    when ``rng`` is None) is smaller than half a severity step, so the MOS is strictly decreasing in the severity
    for a fixed kind.
    """
    jitter = float(rng.uniform(-0.2, 0.2)) if rng is not None else 0.0
    value = 7.0 - 1.2 * _SOURCE_KIND_WEIGHT.get(kind, 1.0) * severity + jitter
    return round(float(np.clip(value, *SOURCE_MOS_RANGE)), 3)


def target_mos(kind: str, severity: int, rng: np.random.Generator | None = None) -> float:
    """Target-domain (ultrasound, 1..5) MOS: ``clip(4.6 - 0.7 * w[kind] * severity + U(-0.1, 0.1), 1, 5)``.

    ``w`` = speckle_noise 1.0, denoise 1.0, gaussian_blur 0.95, jpeg 0.9 (1.0 otherwise); severity 0 is the pristine
    frame (MOS about 4.6). Strictly decreasing in the severity for a fixed kind.
    """
    jitter = float(rng.uniform(-0.1, 0.1)) if rng is not None else 0.0
    value = 4.6 - 0.7 * _TARGET_KIND_WEIGHT.get(kind, 1.0) * severity + jitter
    return round(float(np.clip(value, *TARGET_MOS_RANGE)), 3)


# ----------------------------------------------------------------------------------------------------------------------
# SAQM demo: ultrasound pristine frames


@dataclass(frozen=True)
class _UsFile:
    """One ultrasound DICOM: the scene it shows, the scale of its pixels relative to the scene's reference file,
    and the frames used (None = single frame)."""

    name: str
    scene: str
    scale: float
    frames: tuple[int, ...] | None


# Regions (y0, x0, size) in the pixel grid of each scene's reference file (pydicom's examples_*), chosen inside the
# imaged field and away from text overlays. pydicom-data's files show the SAME scenes (US1_UNCR = examples_rgb_color
# at 2x, color3d_jpeg_baseline = the examples_ybr_color cine at 2x and 4x the frames), so they join the same groups:
# a group = (scene, region) never straddles two splits.
_US_REGIONS: dict[str, tuple[tuple[int, int, int], ...]] = {
    "echo": ((60, 105, 60), (60, 170, 60), (125, 100, 60), (125, 165, 60)),
    "lymph": ((84, 47, 54), (84, 102, 54), (84, 162, 54), (84, 216, 54)),  # inside the two Doppler ROI boxes
    "ob": ((80, 362, 56), (96, 432, 56), (82, 500, 56)),
}


def _us_files(frames_per_cine: int, use_pydicom_data: bool) -> list[_UsFile]:
    """The ultrasound files present, with the frames used (evenly spaced; pydicom-data's cine at other times)."""
    n = max(1, int(frames_per_cine))
    ybr = tuple(int(i) for i in np.linspace(0, 30, n, endpoint=False))
    c3d = tuple(int(round((i + 15 / n) * 4)) % 120 for i in ybr)  # same cine, 4x frames: the in-between times
    candidates = [
        _UsFile("examples_ybr_color.dcm", "echo", 1.0, ybr),
        _UsFile("examples_rgb_color.dcm", "lymph", 1.0, None),
        _UsFile("examples_palette.dcm", "ob", 1.0, None),
    ]
    if use_pydicom_data:
        candidates += [
            _UsFile("color3d_jpeg_baseline.dcm", "echo", 2.0, c3d),
            _UsFile("US1_UNCR.dcm", "lymph", 2.0, None),
        ]
    found = [c for c in candidates if _dicom_path(c.name) is not None]
    # OBXXXX1A.dcm holds exactly the pixels of examples_palette.dcm (plus black rows): only a fallback for it.
    if use_pydicom_data and not any(f.scene == "ob" for f in found) and _dicom_path("OBXXXX1A.dcm") is not None:
        found.append(_UsFile("OBXXXX1A.dcm", "ob", 1.0, None))
    return found


def _us_gray(frame: np.ndarray) -> np.ndarray:
    """Ultrasound frame → gray in [0, 1]. Gray B-mode pixels are kept (per-pixel minimum over RGB); colour-Doppler
    pixels are replaced by hypoechoic speckle (half the local mean of the surrounding gray pixels times a Rayleigh
    envelope; vessels are dark in B-mode); saturated white graphics (markers, text) are replaced by a 7x7 local
    median."""
    arr = np.asarray(frame)
    scale = 65535.0 if arr.dtype == np.uint16 else 255.0
    arr = arr.astype(np.float64) / scale
    if arr.ndim == 2:
        gray = arr
    else:
        gray = arr.min(axis=-1)
        colour = ndimage.binary_dilation(np.ptp(arr, axis=-1) > 0.12)
        if colour.any():  # Doppler overlay: hypoechoic speckle filled in from the surrounding gray pixels
            valid = (~colour).astype(np.float64)
            fill = ndimage.gaussian_filter(gray * valid, 4.0) / np.maximum(ndimage.gaussian_filter(valid, 4.0), 1e-3)
            rng = np.random.default_rng(gray.shape)  # fixed: the same frame always gets the same fill
            grain = 0.8 * max(1.0, gray.shape[1] / 320)
            env = np.hypot(*(ndimage.gaussian_filter(rng.standard_normal(gray.shape), grain) for _ in range(2)))
            gray = np.where(colour, 0.5 * fill * env / env.mean(), gray)
    # saturated white graphics (markers, text) -> local median
    overlay = ndimage.binary_dilation(gray > 0.95)
    if overlay.any():
        gray = gray.copy()
        gray[overlay] = ndimage.median_filter(gray, size=7)[overlay]
    return gray


def _simulated_us(size: int, rng: np.random.Generator) -> np.ndarray:
    """Fallback B-mode-like image (no ultrasound file available): smooth echogenicity map with anechoic cysts and a
    bright interface, times a Rayleigh speckle envelope, log-compressed."""
    echo = ndimage.gaussian_filter(rng.standard_normal((size, size)), size / 10)
    echo = 0.35 + 0.25 * echo / max(float(echo.std()), 1e-12)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for _ in range(int(rng.integers(1, 4))):
        cy, cx, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.06, 0.15)
        echo *= 1 - 0.9 * (((yy - cy) ** 2 + (xx - cx) ** 2) < r**2)
    line_y = rng.uniform(0.3, 0.7) + 0.1 * np.sin(2 * np.pi * (xx + rng.uniform()))
    echo += 0.6 * np.exp(-((yy - line_y) ** 2) / (2 * 0.012**2))
    re = ndimage.gaussian_filter(rng.standard_normal((size, size)), (1.2, 0.8))
    im = ndimage.gaussian_filter(rng.standard_normal((size, size)), (1.2, 0.8))
    env = np.hypot(re, im)
    env /= env.mean()
    img = np.log1p(20 * np.clip(echo, 0, None) * env) / np.log1p(20 * 2.5)
    return np.clip(img, 0.0, 1.0)


@dataclass
class _Pristine:
    """A pristine target image: its content group (split unit), unique name, pixels and source file."""

    group: str
    name: str
    image: np.ndarray  # (S, S) float in [0, 1]
    source: str


def _us_pristines(image_size: int, frames_per_cine: int, use_pydicom_data: bool, seed: int) -> list[_Pristine]:
    """All pristine target images: one crop per (file, region, frame), or simulated frames as a fallback."""
    out: list[_Pristine] = []
    for f in _us_files(frames_per_cine, use_pydicom_data):
        path = str(_dicom_path(f.name))
        frame_ids = f.frames if f.frames is not None else (0,)
        arrays = _dicom_frames(path, f.frames)
        stem = f.name.split(".")[0]
        for fid, arr in zip(frame_ids, arrays):
            gray = _us_gray(arr)
            for r, (y0, x0, sz) in enumerate(_US_REGIONS[f.scene]):
                y, x, s = (int(round(v * f.scale)) for v in (y0, x0, sz))
                crop = gray[y : y + s, x : x + s]
                crop = crop / max(float(np.percentile(crop, 99.5)), 0.2)  # display gain per crop
                out.append(
                    _Pristine(
                        group=f"{f.scene}_r{r}",
                        name=f"{f.scene}_r{r}_{stem}_f{fid:03d}",
                        image=_resize(np.clip(crop, 0.0, 1.0), (image_size, image_size)),
                        source=f.name,
                    )
                )
    if not out:
        warnings.warn(
            "no ultrasound DICOM found (pydicom < 3 without pydicom-data): the SAQM demo target domain uses "
            f"simulated B-mode images instead; `{_INSTALL_HINT}` gives real ones.",
            RuntimeWarning,
            stacklevel=3,
        )
        for g in range(10):
            for k in range(2):
                rng = _item_rng(seed, "simulated_us", g, k)
                out.append(_Pristine(f"sim_r{g}", f"sim_r{g}_f{k:03d}", _simulated_us(image_size, rng), "simulated"))
    return out


def _split_groups(groups: Sequence[str], seed: int) -> dict[str, str]:
    """Assign groups to splits: shuffle within each scene, concatenate scenes, then deal
    train/validation/test/train/train... so every split gets groups and (where possible) several scenes."""
    by_scene: dict[str, list[str]] = {}
    for g in sorted(set(groups)):
        by_scene.setdefault(g.rsplit("_r", 1)[0], []).append(g)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 7])
    ordered: list[str] = []
    for scene in sorted(by_scene):
        members = by_scene[scene]
        ordered += [members[i] for i in rng.permutation(len(members))]
    pattern = ("training", "validation", "test", "training", "training")
    return {g: pattern[i % len(pattern)] for i, g in enumerate(ordered)}


def make_demo_data(
    out_dir: str | os.PathLike,
    seed: int = 0,
    image_size: int = 96,
    *,
    num_source_validation: int = 4,
    frames_per_cine: int = 3,
    labeled_fraction: float = 0.3,
    label_all: bool = False,
    use_pydicom_data: bool = True,
    source_rgb: bool = False,
) -> Path:
    """Build the SAQM demo (natural images → ultrasound) under ``out_dir`` and return the datalist path.

    Source domain (TID2013 #9 analogue): every scikit-image natural image (``NATURAL_IMAGES``) is cropped (random
    square, 75–100 % of the short side), resized to ``image_size`` and degraded with ``denoise`` at severities 1–5
    plus one other kind (gaussian_noise / gaussian_blur / jpeg, rotating) at 1–5. MOS: :func:`source_mos` (0–9).
    ``num_source_validation`` references (and all their versions) are held out as ``"source_validation"``.

    Target domain: ultrasound crops (regions of the echocardiography cine, lymph-node and obstetric frames from
    pydicom's test files; pydicom-data's higher-resolution versions of the same scenes when installed), each kept
    pristine (severity 0) and degraded with one of speckle_noise / denoise / gaussian_blur / jpeg at 1–5. MOS:
    :func:`target_mos` (1–5). Splits are by (scene, region) group, so no content is shared between training,
    validation and test. Only ``labeled_fraction`` of the target training items carry a MOS (the others have
    ``"mos": null``) unless ``label_all``.

    Args:
        out_dir: output folder (created); files are overwritten.
        seed: random seed; the same seed gives byte-identical files.
        image_size: side of the square images (default 96).
        num_source_validation: natural references held out for the source-domain validation section.
        frames_per_cine: frames taken from each cine loop.
        labeled_fraction: fraction of target training items with a MOS (semi-supervised DA).
        label_all: give every target training item its MOS (supervised target).
        use_pydicom_data: also use pydicom-data's files when installed.
        source_rgb: keep colour natural images as RGB PNGs (default: convert to gray like the target).

    Returns:
        Path of ``out_dir/datalist.json``.

    Raises:
        ValueError: for a bad ``image_size``, ``labeled_fraction`` or ``num_source_validation``.
        RuntimeError: when no scikit-image natural image can be loaded.
    """
    if image_size < 32:
        raise ValueError(f"image_size must be >= 32, got {image_size}.")
    if not 0.0 <= labeled_fraction <= 1.0:
        raise ValueError(f"labeled_fraction must be in [0, 1], got {labeled_fraction}.")
    out = Path(out_dir)
    refs = [n for n in NATURAL_IMAGES if _skimage_image(n) is not None]
    if not refs:
        raise RuntimeError("no scikit-image data image could be loaded; reinstall scikit-image.")
    if not 1 <= num_source_validation < len(refs):
        raise ValueError(f"num_source_validation must be in [1, {len(refs) - 1}], got {num_source_validation}.")
    scale = image_size / 96.0

    # ---------------- source domain
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 1])
    order = [refs[i] for i in rng.permutation(len(refs))]
    held_out = set(order[:num_source_validation])
    source_train: list[dict] = []
    source_val: list[dict] = []
    for i, ref in enumerate(order):
        irng = _item_rng(seed, "source", ref)
        img = _skimage_image(ref)
        h, w = img.shape[:2]
        side = int(min(h, w) * irng.uniform(0.75, 1.0))
        y0, x0 = int(irng.integers(0, h - side + 1)), int(irng.integers(0, w - side + 1))
        crop = img[y0 : y0 + side, x0 : x0 + side]
        if crop.ndim == 3 and not source_rgb:
            crop = _gray(crop)
        clean = _resize(crop, (image_size, image_size))
        other = _SOURCE_OTHER_KINDS[i % len(_SOURCE_OTHER_KINDS)]
        for kind in ("denoise", other):
            for severity in range(1, 6):
                krng = _item_rng(seed, "source", ref, kind, severity)
                rel = f"source/{ref}_{kind}_s{severity}.png"
                _save_png(out / rel, _degrade(clean, kind, severity, krng, spatial_scale=scale))
                item = {
                    "image": rel,
                    "mos": source_mos(kind, severity, krng),
                    "domain": "source",
                    "kind": kind,
                    "severity": severity,
                    "group": ref,
                    "reference": ref,
                }
                (source_val if ref in held_out else source_train).append(item)

    # ---------------- target domain
    pristines = _us_pristines(image_size, frames_per_cine, use_pydicom_data, seed)
    split_of = _split_groups([p.group for p in pristines], seed)
    target: dict[str, list[dict]] = {"training": [], "validation": [], "test": []}
    for j, p in enumerate(pristines):
        kind = _TARGET_KINDS[(j + int(seed)) % len(_TARGET_KINDS)]
        for severity in range(0, 6):
            krng = _item_rng(seed, "target", p.name, severity)
            if severity == 0:
                rel, img, k = f"target/{p.name}_pristine.png", p.image, "none"
            else:
                rel = f"target/{p.name}_{kind}_s{severity}.png"
                img, k = _degrade(p.image, kind, severity, krng, spatial_scale=scale), kind
            _save_png(out / rel, img)
            target[split_of[p.group]].append(
                {
                    "image": rel,
                    "mos": target_mos(k, severity, krng),
                    "domain": "target",
                    "kind": k,
                    "severity": severity,
                    "group": p.group,
                    "reference": p.name,
                }
            )

    # semi-supervised: hide the MOS of part of the target training items
    train_t = target["training"]
    if not label_all and train_t:
        n_lab = max(1, int(round(labeled_fraction * len(train_t)))) if labeled_fraction > 0 else 0
        lrng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 3])
        labelled = set(lrng.permutation(len(train_t))[:n_lab].tolist())
        for idx, item in enumerate(train_t):
            if idx not in labelled:
                item["mos"] = None

    sources = sorted({p.source for p in pristines})
    datalist = {
        "name": "monai_iqad SAQM demo: natural images (source) -> ultrasound (target)",
        "description": (
            "Synthetic-distortion demo for validating the SAQM domain-adaptation pipeline, NOT a clinical data set. "
            "MOS values are a deterministic function of the distortion severity (see docs/demo_data.md)."
        ),
        "seed": int(seed),
        "image_size": int(image_size),
        "mos_range": {"source": list(SOURCE_MOS_RANGE), "target": list(TARGET_MOS_RANGE)},
        "mos_formula": {
            "source": "clip(7 - 1.2 * w[kind] * severity + U(-0.2, 0.2), 0, 9)",
            "target": "clip(4.6 - 0.7 * w[kind] * severity + U(-0.1, 0.1), 1, 5)",
        },
        "source_images": [f"skimage:{r}" for r in refs],
        "target_images": sources,
        "splits": {g: split_of[g] for g in sorted(split_of)},
        "training": source_train + train_t,
        "source_validation": source_val,
        "validation": target["validation"],
        "test": target["test"],
    }
    path = out / "datalist.json"
    _write_json(path, datalist)
    return path


# ----------------------------------------------------------------------------------------------------------------------
# IQAD demos (MKCNet)


#: Degradation kinds that define the quality grades of each IQAD demo (class counts, channels and diagnosis names
#: come from :data:`monai_iqad.data.datasets.IQAD_DATASETS`).
IQAD_DEMO_DEGRADATIONS: dict[str, tuple[str, ...]] = {
    "eyeq": ("gaussian_blur", "uneven_illumination", "low_contrast", "gaussian_noise"),
    "deepdr": ("gaussian_blur", "uneven_illumination", "low_contrast", "gaussian_noise"),
    "drac": ("motion_blur", "gaussian_blur", "gaussian_noise", "low_contrast"),
    "iqad_ct": ("jpeg", "gaussian_blur", "low_contrast", "gaussian_noise"),
    "iqad_cxr": ("gaussian_blur", "gaussian_noise", "low_contrast", "jpeg"),
}

#: What the quality grades mean in the demos (0 = worst): 2 grades = degraded / clean, 3 = strong / mild / clean.
IQAD_DEMO_QUALITY_NAMES: dict[int, tuple[str, ...]] = {
    2: ("degraded (one kind at severity 4-5 + another at 2-3)", "clean"),
    3: ("strongly degraded (one kind at severity 4-5 + another at 2-3)", "mildly degraded (one kind at 2-3)", "clean"),
}

#: Names accepted by :func:`make_iqad_demo_data`.
IQAD_DEMO_DATASETS: tuple[str, ...] = tuple(IQAD_DEMO_DEGRADATIONS)


@dataclass(frozen=True)
class _DemoSpec:
    """What one IQAD demo simulates: modality, class counts, channels, diagnosis names and quality kinds."""

    modality: str
    num_diagnosis: int
    num_quality: int
    channels: int
    diagnosis_names: tuple[str, ...]
    kinds: tuple[str, ...]


def _quality_plan(
    num_quality: int, quality: int, kinds: Sequence[str], rng: np.random.Generator
) -> list[tuple[str, int]]:
    """Degradations ``[(kind, severity), ...]`` for a quality grade (applied in order, after the lesions).

    - best grade (``num_quality - 1``): none;
    - 3 grades, middle (1): one kind at severity 2–3;
    - worst grade (0): one kind at severity 4–5 followed by a different kind at severity 2–3.
    """
    if quality == num_quality - 1:
        return []
    first, second = (kinds[i] for i in rng.permutation(len(kinds))[:2])
    if num_quality == 3 and quality == 1:
        return [(first, int(rng.integers(2, 4)))]
    return [(first, int(rng.integers(4, 6))), (second, int(rng.integers(2, 4)))]


# ---------------- base images (cached at a working resolution of 2x the output size)


@functools.lru_cache(maxsize=8)
def _retina_base(work: int) -> tuple[np.ndarray, np.ndarray]:
    """skimage ``retina`` (CC0 fundus photograph) at ``work`` px and its field-of-view mask."""
    img = _skimage_image("retina")
    if img is None:  # pragma: no cover - inside the wheel
        raise RuntimeError("scikit-image's 'retina' image is not available.")
    small = _resize(img, (work, work))
    fov = (ndimage.gaussian_filter(_gray(small), 1.0) > 0.06).astype(np.float64)
    small.setflags(write=False)
    fov.setflags(write=False)
    return small, fov


def _largest_components(mask: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` largest 8-connected components of a boolean mask (ties: lowest label first)."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
    if n <= count:
        return mask.astype(bool)
    sizes = ndimage.sum(mask, labels, index=np.arange(1, n + 1))
    keep = np.argsort(-sizes, kind="stable")[:count] + 1
    return np.isin(labels, keep)


#: Lesion settings per CT/CXR base image: target level of the opacities (window units), blend factor range towards
#: it, number of opacities (min, max inclusive) and blob σ range (fraction of the image side).
_OPACITY: dict[str, tuple[float, tuple[float, float], tuple[int, int], tuple[float, float]]] = {
    "693_UNCR.dcm": (0.85, (0.6, 0.9), (1, 3), (0.05, 0.08)),
    "CT_small.dcm": (0.8, (0.7, 0.9), (2, 4), (0.06, 0.09)),
    "RG1_UNCR.dcm": (0.9, (0.5, 0.8), (2, 3), (0.06, 0.09)),
    "RG3_UNCR.dcm": (0.9, (0.5, 0.8), (1, 3), (0.05, 0.08)),
}


@functools.lru_cache(maxsize=16)
def _ct_base(name: str, work: int) -> tuple[np.ndarray, np.ndarray]:
    """A CT slice in HU, windowed to [0, 1] and resized; plus a crude mask of where lesions go (1 inside).

    ``693_UNCR`` (head CT, pydicom-data): window L40/W120, mask = brain parenchyma (smoothed 0.3–0.8 window units,
    largest component, holes filled). ``CT_small`` (upper thorax, pydicom): lung window L-600/W1500, mask = the two
    lungs (smoothed 0.02–0.6, two largest components, holes filled).
    """
    path = _dicom_path(name)
    if path is None:
        raise RuntimeError(f"{name} not found; `{_INSTALL_HINT}`.")
    meta = _dicom_meta(str(path))
    hu = _dicom_frames(str(path))[0].astype(np.float64) * meta["slope"] + meta["intercept"]
    head = name.startswith("693")
    level, width = (40.0, 120.0) if head else (-600.0, 1500.0)
    img = np.clip((hu - (level - width / 2)) / width, 0.0, 1.0)
    out = _resize(img, (work, work))
    smooth = ndimage.gaussian_filter(out, work / 128)
    region = (smooth > 0.3) & (smooth < 0.8) if head else (smooth > 0.02) & (smooth < 0.6)
    region = ndimage.binary_opening(region, iterations=max(1, work // 64))
    mask = ndimage.binary_fill_holes(_largest_components(region, 1 if head else 2)).astype(np.float64)
    out.setflags(write=False)
    mask.setflags(write=False)
    return out, mask


@functools.lru_cache(maxsize=16)
def _cr_base(name: str, work: int) -> tuple[np.ndarray, np.ndarray]:
    """A computed radiograph (MONOCHROME1 → inverted so bone is bright), percentile-windowed and resized; plus a
    crude mask of where lesions go (1 inside).

    ``RG1_UNCR`` (chest): the lung fields = smoothed image darker than its 45th percentile inside the central 80 %
    box, the two largest components, holes filled. ``RG3_UNCR`` (lower leg): the soft tissue = the 20th–60th
    percentile band inside that box, largest component.
    """
    path = _dicom_path(name)
    if path is None:
        raise RuntimeError(f"{name} (a real radiograph) is needed for the iqad_cxr demo: `{_INSTALL_HINT}`.")
    meta = _dicom_meta(str(path))
    raw = _dicom_frames(str(path))[0].astype(np.float64)
    if meta["photometric"] == "MONOCHROME1":
        raw = raw.max() - raw
    lo, hi = np.percentile(raw, [1.0, 99.5])
    img = np.clip((raw - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    h, w = img.shape
    side = min(h, w)
    img = img[(h - side) // 2 : (h - side) // 2 + side, (w - side) // 2 : (w - side) // 2 + side]
    out = _resize(img, (work, work))
    smooth = ndimage.gaussian_filter(out, work / 64)
    box = np.zeros_like(out, dtype=bool)
    m = work // 10
    box[m:-m, m:-m] = True
    it = max(1, work // 64)
    if name.startswith("RG1"):
        region = box & (smooth < np.percentile(smooth[box], 45))
        region = ndimage.binary_opening(region, iterations=3 * it)
        mask = ndimage.binary_fill_holes(_largest_components(region, 2))
    else:
        p_lo, p_hi = np.percentile(smooth[box], [20, 60])
        region = ndimage.binary_opening(box & (smooth > p_lo) & (smooth < p_hi), iterations=it)
        mask = _largest_components(region, 1)
    mask = mask.astype(np.float64)
    out.setflags(write=False)
    mask.setflags(write=False)
    return out, mask


def _opacities(img: np.ndarray, region: np.ndarray, name: str, rng: np.random.Generator) -> np.ndarray:
    """Insert lobulated, flat-topped opacities (consolidation / ground-glass-like) inside ``region``.

    Each opacity is the union of 2–4 anisotropic blobs (σ per :data:`_OPACITY`, 5–9 % of the image) around a centre
    drawn inside the (eroded) region, turned into a plateau with a soft edge (smoothstep of the blob field), made
    slightly patchy and confined to the (softened) region. The image is blended towards the base's target level there:
    ``img + α·o·(target − img)`` (:data:`_OPACITY`), i.e. a clear intensity step that also flattens the underlying
    texture (ribs, vessels), as real consolidations do.
    """
    size = img.shape[0]
    s = size / 64.0
    target, alpha, count, sigmas = _OPACITY[name]
    inside = ndimage.binary_erosion(region > 0.5, iterations=max(1, size // 32))
    soft = ndimage.gaussian_filter(region, 0.75 * s)
    opacity = np.zeros_like(img)
    for cy, cx in _sample_positions(inside, int(rng.integers(count[0], count[1] + 1)), rng):
        sigma = rng.uniform(*sigmas) * size
        field = np.zeros_like(img)
        for _ in range(int(rng.integers(2, 5))):
            oy, ox = rng.normal(0.0, 0.8 * sigma, size=2)
            field = np.maximum(field, _blob(size, cy + oy, cx + ox, sigma * rng.uniform(0.7, 1.0), rng))
        o = np.clip((field - 0.35) / 0.3, 0.0, 1.0)
        opacity = np.maximum(opacity, rng.uniform(*alpha) * o * o * (3.0 - 2.0 * o))
    opacity = _irregular(opacity, rng, 1.5 * s)
    opacity = np.clip(opacity, 0.0, 1.0) * soft
    return np.clip(img + opacity * (target - img), 0.0, 1.0)


# ---------------- per-modality rendering: (with lesions, without lesions), before degradation


def _render_fundus(size: int, diagnosis: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    base, fov = _retina_base(2 * size)
    stacked = np.concatenate([base, fov[..., None]], -1)
    warped = _affine_warp(stacked, size, rng, rotation=180.0, zoom=(0.95, 1.1), shift=0.03, flip=True, cval=0.0)
    img, mask = warped[..., :3], warped[..., 3]
    gains = rng.uniform(0.85, 1.15, size=3)
    gamma = rng.uniform(0.8, 1.25)
    img = np.clip(img * gains, 0.0, 1.0) ** gamma
    clean = img.copy()
    inner = ndimage.binary_erosion(mask > 0.5, iterations=max(2, size // 12))
    if diagnosis > 0:
        # grade 1 (NPDR): a few small red dots (microaneurysms / haemorrhages) and exudates;
        # grade 2 (PDR): many larger blot haemorrhages and exudates.
        n_red = int(rng.integers(2, 5)) if diagnosis == 1 else int(rng.integers(5, 10))
        n_yel = int(rng.integers(1, 4)) if diagnosis == 1 else int(rng.integers(4, 9))
        lo, hi = (0.012, 0.022) if diagnosis == 1 else (0.018, 0.035)
        for cy, cx in _sample_positions(inner, n_red, rng):
            b = rng.uniform(0.6, 0.9) * _blob(size, cy, cx, rng.uniform(lo, hi) * size, rng)
            img = img * (1.0 - b[..., None] * np.array([0.45, 0.8, 0.8]))
        yellow = np.array([1.0, 0.85, 0.3])
        for cy, cx in _sample_positions(inner, n_yel, rng):
            b = rng.uniform(0.5, 0.85) * _blob(size, cy, cx, rng.uniform(lo, hi) * size, rng)
            img = img * (1.0 - b[..., None]) + b[..., None] * yellow * img.max()
    return np.clip(img, 0.0, 1.0), clean, mask


def _render_octa(size: int, diagnosis: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, None]:
    """Procedural 6x6 mm OCTA-like en-face image (dark background, bright vessels).

    Capillaries: zero-crossings of smoothed noise (a labyrinth of thin bright curves). Large vessels: smooth random
    walks from the border towards the fovea. Foveal avascular zone (FAZ): a dark disc near the centre. Lesions:
    capillary dropout (dark non-perfused patches, enlarged FAZ) for NPDR, plus neovascular tufts (dense tangles of
    fine bright loops) for PDR.
    """
    s = size / 64.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    field = ndimage.gaussian_filter(rng.standard_normal((size, size)), 1.6 * s)
    field /= max(float(field.std()), 1e-12)
    capillaries = np.exp(-((field / 0.45) ** 2))
    vessels = np.zeros((size, size))
    c0 = size / 2 + rng.uniform(-0.05, 0.05, size=2) * size
    for _ in range(int(rng.integers(4, 7))):
        ang = rng.uniform(0, 2 * np.pi)
        p = c0 + np.array([np.sin(ang), np.cos(ang)]) * size * 0.7
        heading = np.arctan2(*(c0 - p)) + rng.uniform(-0.4, 0.4)
        for _step in range(int(size * 0.9)):
            heading += rng.normal(0, 0.08)
            p = p + 0.8 * np.array([np.sin(heading), np.cos(heading)])
            iy, ix = int(round(p[0])), int(round(p[1]))
            if np.hypot(*(p - c0)) < 0.14 * size:
                break
            if 0 <= iy < size and 0 <= ix < size:
                vessels[iy, ix] = 1.0
    vessels = ndimage.gaussian_filter(vessels, 1.0 * s)
    vessels /= max(float(vessels.max()), 1e-12)
    r = np.hypot(yy - c0[0], xx - c0[1])
    faz_r = rng.uniform(0.07, 0.1) * size

    def compose(cap: np.ndarray, faz_radius: float, extra: np.ndarray | None = None) -> np.ndarray:
        faz = 1.0 / (1.0 + np.exp(-(r - faz_radius) / (0.8 * s)))
        img = 0.04 + 0.55 * cap * faz + 0.85 * vessels * faz
        if extra is not None:
            img = img + extra
        return np.clip(ndimage.gaussian_filter(img, 0.4 * s), 0.0, 1.0)

    clean = compose(capillaries, faz_r)
    if diagnosis == 0:
        return clean, clean.copy(), None
    cap = capillaries.copy()
    n_drop = int(rng.integers(1, 3)) if diagnosis == 1 else int(rng.integers(2, 5))
    for cy, cx in _sample_positions(r > 0.18 * size, n_drop, rng):
        cap *= 1.0 - 0.95 * np.clip(1.5 * _blob(size, cy, cx, rng.uniform(0.06, 0.1) * size, rng), 0, 1)
    extra = None
    if diagnosis == 2:
        fine = ndimage.gaussian_filter(rng.standard_normal((size, size)), 0.6 * s)
        fine = np.exp(-((fine / max(float(fine.std()), 1e-12) / 0.4) ** 2))
        extra = np.zeros((size, size))
        for cy, cx in _sample_positions((r > 0.2 * size) & (r < 0.42 * size), int(rng.integers(1, 4)), rng):
            extra += 0.8 * fine * _blob(size, cy, cx, rng.uniform(0.04, 0.07) * size, rng)
    return compose(cap, faz_r * rng.uniform(1.3, 1.6), extra), clean, None


def _opacity_scene(
    name: str,
    base: np.ndarray,
    region: np.ndarray,
    size: int,
    diagnosis: int,
    rng: np.random.Generator,
    gamma: tuple[float, float],
    **warp: Any,
) -> tuple[np.ndarray, np.ndarray, None]:
    """CT/CR scene: warp the base image and its lesion mask together (``_affine_warp`` arguments in ``warp``), jitter
    the gamma in ``gamma``, and insert :func:`_opacities` when ``diagnosis == 1``.

    Returns:
        ``(image, lesion_free, None)`` (no field-of-view mask).
    """
    warped = _affine_warp(np.stack([base, region], -1), size, rng, cval=None, **warp)
    img, region = np.clip(warped[..., 0], 0.0, 1.0) ** rng.uniform(*gamma), warped[..., 1]
    clean = img.copy()
    if diagnosis == 1:
        img = _opacities(img, region, name, rng)
    return img, clean, None


def _render_ct(size: int, diagnosis: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, None]:
    names = [n for n in ("693_UNCR.dcm", "CT_small.dcm") if _dicom_path(n) is not None]
    if not names:  # pragma: no cover - CT_small is inside every pydicom wheel
        raise RuntimeError(f"no CT test file found; `{_INSTALL_HINT}`.")
    name = names[int(rng.integers(len(names)))]
    base, region = _ct_base(name, 2 * size)
    return _opacity_scene(
        name, base, region, size, diagnosis, rng, (0.9, 1.1), rotation=10.0, zoom=(1.0, 1.25), shift=0.05, flip=True
    )


def _render_cxr(size: int, diagnosis: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, None]:
    have_rg3 = _dicom_path("RG3_UNCR.dcm") is not None
    name = "RG3_UNCR.dcm" if have_rg3 and rng.uniform() < 0.25 else "RG1_UNCR.dcm"
    base, region = _cr_base(name, 2 * size)
    return _opacity_scene(
        name, base, region, size, diagnosis, rng, (0.85, 1.15), rotation=6.0, zoom=(1.0, 1.2), shift=0.04, flip=False
    )


_RENDERERS = {"fundus": _render_fundus, "octa": _render_octa, "ct": _render_ct, "cxr": _render_cxr}


def simulate_iqad_sample(
    dataset: str,
    diagnosis: int,
    quality: int,
    rng: np.random.Generator | int | None = None,
    image_size: int = 64,
    noise_seed: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one IQAD demo image and its lesion-free twin (same base, same degradations, same noise).

    The base image and the lesions are drawn from ``rng`` BEFORE the quality plan, so the same seed gives the same
    lesioned scene at every quality grade (the best grade is the undegraded scene).

    Args:
        dataset: one of ``IQAD_DEMO_DATASETS``.
        diagnosis: diagnosis grade in ``[0, num_diagnosis)`` (0 = no lesion).
        quality: quality grade in ``[0, num_quality)`` (highest = best = undegraded).
        rng: numpy Generator or seed.
        image_size: side of the square image.
        noise_seed: seed of the degradation noise (default: drawn from ``rng``); another value gives the same scene
            and degradation plan with an independent noise realisation.

    Returns:
        ``(image, lesion_free)``, float64 in [0, 1], ``(S, S, 3)`` for fundus and ``(S, S)`` otherwise.

    Raises:
        ValueError: unknown dataset or label out of range.
        RuntimeError: a required real image (pydicom-data) is missing.
    """
    spec = _iqad_spec(dataset)
    if not 0 <= diagnosis < spec.num_diagnosis or not 0 <= quality < spec.num_quality:
        raise ValueError(
            f"{dataset}: diagnosis must be in [0, {spec.num_diagnosis}) and quality in [0, {spec.num_quality}), "
            f"got ({diagnosis}, {quality})."
        )
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    img, clean, mask = _RENDERERS[spec.modality](image_size, diagnosis, rng)
    plan = _quality_plan(spec.num_quality, quality, spec.kinds, rng)
    drawn = int(rng.integers(0, 2**31 - 1))
    noise_seed = drawn if noise_seed is None else int(noise_seed)
    scale = image_size / 64.0
    outs = []
    for x in (img, clean):
        drng = np.random.default_rng(noise_seed)
        for kind, severity in plan:
            x = _degrade(x, kind, severity, drng, spatial_scale=scale)
        if mask is not None:  # fundus: the camera's field of view stays black
            x = x * (mask[..., None] if x.ndim == 3 else mask)
        outs.append(np.clip(x, 0.0, 1.0))
    return outs[0], outs[1]


def _iqad_spec(dataset: str) -> _DemoSpec:
    """Demo spec of ``dataset`` from the shared dataset constants plus the demo's degradation kinds.

    Raises:
        ValueError: unknown dataset.
    """
    from monai_iqad.data.datasets import get_dataset_info

    key = str(dataset).strip().lower().replace("-", "_")
    if key not in IQAD_DEMO_DEGRADATIONS:
        raise ValueError(f"unknown IQAD demo dataset {dataset!r}; expected one of {IQAD_DEMO_DATASETS}.")
    info = get_dataset_info(key)
    return _DemoSpec(
        info.modality,
        info.num_diagnosis,
        info.num_quality,
        info.channels,
        tuple(info.diagnosis_names),
        IQAD_DEMO_DEGRADATIONS[key],
    )


def make_iqad_demo_data(
    out_dir: str | os.PathLike,
    dataset: str,
    seed: int = 0,
    num_images: int | None = None,
    image_size: int = 64,
    split_fractions: tuple[float, float] = (0.2, 0.2),
) -> Path:
    """Build one quality-aware diagnosis demo (MKCNet) under ``out_dir`` and return the datalist path.

    Images are balanced over the ``num_diagnosis * num_quality`` (diagnosis, quality) pairs, and every pair is split
    ``1 - val - test : val : test`` separately, so each split holds every pair. Diagnosis comes from simulated lesions,
    quality from degradations applied after them (:func:`simulate_iqad_sample`, ``docs/demo_data.md``).

    Args:
        out_dir: output folder (created): ``images/NNNN.png`` and ``datalist.json``; files are overwritten.
        dataset: ``"eyeq"``, ``"deepdr"``, ``"drac"``, ``"iqad_ct"`` or ``"iqad_cxr"``.
        seed: random seed; the same seed gives byte-identical files.
        num_images: total number of images (default ``20 * num_diagnosis * num_quality``); at least 3 per pair.
        image_size: side of the square images (e.g. 64 or 128).
        split_fractions: (validation, test) fractions of each pair (at least one image each).

    Returns:
        Path of ``out_dir/datalist.json``.

    Raises:
        ValueError: unknown dataset, too few images, bad size or fractions.
        RuntimeError: ``iqad_cxr`` without pydicom-data (``pip install pydicom-data``).
    """
    spec = _iqad_spec(dataset)
    key = str(dataset).strip().lower().replace("-", "_")
    pairs = [(d, q) for q in range(spec.num_quality) for d in range(spec.num_diagnosis)]
    if num_images is None:
        num_images = 20 * len(pairs)
    if num_images < 3 * len(pairs):
        raise ValueError(f"{key}: num_images must be >= {3 * len(pairs)} (3 per (diagnosis, quality) pair).")
    if image_size < 32:
        raise ValueError(f"image_size must be >= 32, got {image_size}.")
    val_frac, test_frac = split_fractions
    if val_frac <= 0 or test_frac <= 0 or val_frac + test_frac >= 1:
        raise ValueError(f"split_fractions must be positive and sum to < 1, got {split_fractions}.")
    if spec.modality == "cxr" and _dicom_path("RG1_UNCR.dcm") is None:
        raise RuntimeError(
            f"the iqad_cxr demo needs the real chest radiograph RG1_UNCR.dcm from pydicom-data: `{_INSTALL_HINT}`."
        )
    if spec.modality == "ct" and _dicom_path("693_UNCR.dcm") is None:
        warnings.warn(
            f"pydicom-data is not installed: the iqad_ct demo uses only pydicom's CT_small.dcm (`{_INSTALL_HINT}`).",
            RuntimeWarning,
            stacklevel=2,
        )
    out = Path(out_dir)
    # labels per image: balanced pairs, split per pair
    jobs: list[tuple[int, int, str]] = []
    base_n, extra = divmod(num_images, len(pairs))
    for p, (d, q) in enumerate(pairs):
        n = base_n + (1 if p < extra else 0)
        n_val = max(1, int(round(val_frac * n)))
        n_test = max(1, int(round(test_frac * n)))
        n_train = n - n_val - n_test
        jobs += [(d, q, "training")] * n_train + [(d, q, "validation")] * n_val + [(d, q, "test")] * n_test
    order = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(key.encode())]).permutation(len(jobs))
    sections: dict[str, list[dict]] = {"training": [], "validation": [], "test": []}
    for index, j in enumerate(order):
        d, q, split = jobs[int(j)]
        img, _ = simulate_iqad_sample(key, d, q, _item_rng(seed, key, index), image_size)
        rel = f"images/{index:04d}.png"
        _save_png(out / rel, img)
        sections[split].append({"image": rel, "diagnosis": int(d), "quality": int(q)})
    datalist = {
        "name": f"monai_iqad {key} demo (simulated lesions + graded degradations)",
        "description": (
            "Synthetic quality-aware diagnosis demo for validating the MKCNet pipeline, NOT a clinical data set. "
            "Diagnosis = simulated lesions; quality = degradations applied after them (see docs/demo_data.md)."
        ),
        "dataset": key,
        "modality": spec.modality,
        "num_diagnosis": spec.num_diagnosis,
        "num_quality": spec.num_quality,
        "num_channels": spec.channels,
        "diagnosis_names": list(spec.diagnosis_names),
        "quality_names": list(IQAD_DEMO_QUALITY_NAMES[spec.num_quality]),
        "joint_label": "quality * num_diagnosis + diagnosis",
        "seed": int(seed),
        "image_size": int(image_size),
        **sections,
    }
    path = out / "datalist.json"
    _write_json(path, datalist)
    return path


# ----------------------------------------------------------------------------------------------------------------------
# command line


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m monai_iqad.data.demo --out DIR [--dataset NAME|all] [--seed N] [--image-size N]``.

    Returns:
        The exit status (0).
    """
    parser = argparse.ArgumentParser(prog="python -m monai_iqad.data.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="output folder (for --dataset all: one sub-folder per data set)")
    parser.add_argument("--dataset", default="saqm", choices=("saqm", *IQAD_DEMO_DATASETS, "all"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=None, help="default: 96 (saqm), 64 (IQAD demos)")
    parser.add_argument("--num-images", type=int, default=None, help="IQAD demos only")
    parser.add_argument("--label-all", action="store_true", help="saqm: give every target training image its MOS")
    args = parser.parse_args(argv)
    names = ("saqm", *IQAD_DEMO_DATASETS) if args.dataset == "all" else (args.dataset,)
    for name in names:
        out = Path(args.out) / name if args.dataset == "all" else Path(args.out)
        start = time.perf_counter()
        if name == "saqm":
            path = make_demo_data(out, seed=args.seed, image_size=args.image_size or 96, label_all=args.label_all)
        else:
            try:
                path = make_iqad_demo_data(
                    out, name, seed=args.seed, num_images=args.num_images, image_size=args.image_size or 64
                )
            except RuntimeError as err:
                if args.dataset != "all":
                    raise
                print(f"skipped {name}: {err}")
                continue
        print(f"{name}: {path} ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
