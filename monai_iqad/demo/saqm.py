"""The SAQM domain-adaptation demo: natural images (source) → ultrasound (target), see ``docs/demo_data.md``.

Source domain = scikit-image natural images with graded TID2013-#9-like "denoising" distortions (plus noise, blur,
JPEG); target domain = real ultrasound frames from pydicom's (and, when installed, pydicom-data's) test files with
speckle / denoising / blur / JPEG distortions. The MOS is a documented deterministic function of the severity
(:func:`source_mos`, :func:`target_mos`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from monai_iqad.data import write_datalist
from monai_iqad.transforms.degradations import degrade

from . import sources
from .utils import item_rng, resize, save_png, to_gray

__all__ = ["SOURCE_MOS_RANGE", "TARGET_MOS_RANGE", "make_demo_data", "source_mos", "target_mos"]

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
    found = [c for c in candidates if sources.dicom_path(c.name) is not None]
    # OBXXXX1A.dcm holds exactly the pixels of examples_palette.dcm (plus black rows): only a fallback for it.
    if use_pydicom_data and not any(f.scene == "ob" for f in found) and sources.dicom_path("OBXXXX1A.dcm") is not None:
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
        path = str(sources.dicom_path(f.name))
        frame_ids = f.frames if f.frames is not None else (0,)
        arrays = sources.dicom_frames(path, f.frames)
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
                        image=resize(np.clip(crop, 0.0, 1.0), (image_size, image_size)),
                        source=f.name,
                    )
                )
    if not out:
        warnings.warn(
            "no ultrasound DICOM found (pydicom < 3 without pydicom-data): the SAQM demo target domain uses "
            f"simulated B-mode images instead; `{sources.INSTALL_HINT}` gives real ones.",
            RuntimeWarning,
            stacklevel=3,
        )
        for g in range(10):
            for k in range(2):
                rng = item_rng(seed, "simulated_us", g, k)
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
    refs = [n for n in sources.NATURAL_IMAGES if sources.skimage_image(n) is not None]
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
        irng = item_rng(seed, "source", ref)
        img = sources.skimage_image(ref)
        h, w = img.shape[:2]
        side = int(min(h, w) * irng.uniform(0.75, 1.0))
        y0, x0 = int(irng.integers(0, h - side + 1)), int(irng.integers(0, w - side + 1))
        crop = img[y0 : y0 + side, x0 : x0 + side]
        if crop.ndim == 3 and not source_rgb:
            crop = to_gray(crop)
        clean = resize(crop, (image_size, image_size))
        other = _SOURCE_OTHER_KINDS[i % len(_SOURCE_OTHER_KINDS)]
        for kind in ("denoise", other):
            for severity in range(1, 6):
                krng = item_rng(seed, "source", ref, kind, severity)
                rel = f"source/{ref}_{kind}_s{severity}.png"
                save_png(out / rel, degrade(clean, kind, severity, krng, spatial_scale=scale))
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
            krng = item_rng(seed, "target", p.name, severity)
            if severity == 0:
                rel, img, k = f"target/{p.name}_pristine.png", p.image, "none"
            else:
                rel = f"target/{p.name}_{kind}_s{severity}.png"
                img, k = degrade(p.image, kind, severity, krng, spatial_scale=scale), kind
            save_png(out / rel, img)
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

    target_files = sorted({p.source for p in pristines})
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
        "target_images": target_files,
        "splits": {g: split_of[g] for g in sorted(split_of)},
        "training": source_train + train_t,
        "source_validation": source_val,
        "validation": target["validation"],
        "test": target["test"],
    }
    path = out / "datalist.json"
    write_datalist(path, datalist, base_dir=out)
    return path
