"""IQAD demo renderers: one scene per modality (fundus, OCTA, CT, CR), with simulated lesions, before degradation.

Each renderer ``(size, diagnosis, rng) -> (image, lesion_free, fov_mask | None)`` draws a base image (a real image
from :mod:`.sources` warped at random, or a procedural OCTA) and inserts lesions for ``diagnosis > 0``; the builder
(:mod:`.iqad`) degrades both images the same way afterwards. See ``docs/demo_data.md``.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from scipy import ndimage

from . import sources
from .utils import resize, to_gray

__all__ = ["RENDERERS"]


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


# ---------------- base images (cached at a working resolution of 2x the output size)


@functools.lru_cache(maxsize=8)
def _retina_base(work: int) -> tuple[np.ndarray, np.ndarray]:
    """skimage ``retina`` (CC0 fundus photograph) at ``work`` px and its field-of-view mask."""
    img = sources.skimage_image("retina")
    if img is None:  # pragma: no cover - inside the wheel
        raise RuntimeError("scikit-image's 'retina' image is not available.")
    small = resize(img, (work, work))
    fov = (ndimage.gaussian_filter(to_gray(small), 1.0) > 0.06).astype(np.float64)
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
    "CT_small.dcm": (0.85, (0.8, 0.95), (3, 5), (0.07, 0.1)),
    "RG1_UNCR.dcm": (0.9, (0.5, 0.8), (2, 3), (0.06, 0.09)),
    "RG3_UNCR.dcm": (0.9, (0.5, 0.8), (1, 3), (0.05, 0.08)),
}


@functools.lru_cache(maxsize=16)
def _ct_base(name: str, work: int) -> tuple[np.ndarray, np.ndarray]:
    """A thorax CT slice in HU, at the lung window L-600/W1500 in [0, 1] and resized; plus a crude mask of where
    lesions go (1 inside): the two lungs (smoothed 0.02–0.6 window units, two largest components, holes filled)."""
    path = sources.dicom_path(name)
    if path is None:
        raise RuntimeError(f"{name} not found; `{sources.INSTALL_HINT}`.")
    meta = sources.dicom_meta(str(path))
    hu = sources.dicom_frames(str(path))[0].astype(np.float64) * meta["slope"] + meta["intercept"]
    level, width = -600.0, 1500.0
    img = np.clip((hu - (level - width / 2)) / width, 0.0, 1.0)
    out = resize(img, (work, work))
    smooth = ndimage.gaussian_filter(out, work / 128)
    region = ndimage.binary_opening((smooth > 0.02) & (smooth < 0.6), iterations=max(1, work // 64))
    mask = ndimage.binary_fill_holes(_largest_components(region, 2)).astype(np.float64)
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
    path = sources.dicom_path(name)
    if path is None:
        raise RuntimeError(f"{name} (a real radiograph) is needed for the iqad_cxr demo: `{sources.INSTALL_HINT}`.")
    meta = sources.dicom_meta(str(path))
    raw = sources.dicom_frames(str(path))[0].astype(np.float64)
    if meta["photometric"] == "MONOCHROME1":
        raw = raw.max() - raw
    lo, hi = np.percentile(raw, [1.0, 99.5])
    img = np.clip((raw - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    h, w = img.shape
    side = min(h, w)
    img = img[(h - side) // 2 : (h - side) // 2 + side, (w - side) // 2 : (w - side) // 2 + side]
    out = resize(img, (work, work))
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
    n_drop = int(rng.integers(2, 4)) if diagnosis == 1 else int(rng.integers(3, 6))
    for cy, cx in _sample_positions(r > 0.18 * size, n_drop, rng):
        cap *= 1.0 - 0.95 * np.clip(1.5 * _blob(size, cy, cx, rng.uniform(0.07, 0.11) * size, rng), 0, 1)
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
    # one chest base (IQAD-CT is COVID-19 chest CT): a second, very different base (a head CT was used before) left
    # the MKCNet network at chance within the demo budget while VanillaNet learned both (docs/demo_data.md)
    name = "CT_small.dcm"
    base, region = _ct_base(name, 2 * size)
    return _opacity_scene(
        name, base, region, size, diagnosis, rng, (0.9, 1.1), rotation=10.0, zoom=(1.0, 1.25), shift=0.05, flip=True
    )


def _render_cxr(size: int, diagnosis: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, None]:
    have_rg3 = sources.dicom_path("RG3_UNCR.dcm") is not None
    name = "RG3_UNCR.dcm" if have_rg3 and rng.uniform() < 0.25 else "RG1_UNCR.dcm"
    base, region = _cr_base(name, 2 * size)
    return _opacity_scene(
        name, base, region, size, diagnosis, rng, (0.85, 1.15), rotation=6.0, zoom=(1.0, 1.2), shift=0.04, flip=False
    )


#: Renderer of each modality: ``(size, diagnosis, rng) -> (image, lesion_free, fov_mask | None)``.
RENDERERS = {"fundus": _render_fundus, "octa": _render_octa, "ct": _render_ct, "cxr": _render_cxr}
