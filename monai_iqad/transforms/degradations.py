"""Graded image degradations for the demo data sets and for quality augmentation.

Every operation takes a float image in ``[0, 1]`` shaped ``(H, W)`` or ``(H, W, C)`` (channel LAST, like
scikit-image) and returns a new array with the same shape and dtype, clipped to ``[0, 1]``. Random operations take a
``numpy.random.Generator`` (or a seed) and are deterministic for it.

``degrade(img, kind, severity, rng)`` maps an integer severity ``0..5`` to the parameters of one kind through
``SEVERITY_TABLE`` (severity 0 is the identity). The table is tuned for images of about 64–128 pixels;
``spatial_scale`` multiplies the spatial parameters (blur sigmas, motion length, speckle grain) for other sizes.

| kind | parameter | s=1 | s=2 | s=3 | s=4 | s=5 |
|---|---|---|---|---|---|---|
| ``gaussian_noise`` | sigma (additive, intensity units) | 0.02 | 0.04 | 0.07 | 0.10 | 0.15 |
| ``speckle_noise`` | sigma (multiplicative, correlated) | 0.05 | 0.10 | 0.16 | 0.24 | 0.34 |
| ``gaussian_blur`` | sigma (px) | 0.6 | 1.0 | 1.5 | 2.2 | 3.0 |
| ``motion_blur`` | length (px), random angle | 3 | 5 | 7 | 10 | 14 |
| ``jpeg`` | Pillow quality | 50 | 30 | 18 | 10 | 5 |
| ``denoise`` | noise sigma / NL-means strength | 0.03/0.55 | 0.05/0.75 | 0.08/1.0 | 0.12/1.25 | 0.16/1.5 |
| ``low_contrast`` | amount of contrast removed | 0.15 | 0.30 | 0.45 | 0.60 | 0.75 |
| ``uneven_illumination`` | shading strength | 0.15 | 0.30 | 0.45 | 0.60 | 0.75 |
| ``poisson_noise`` | photon count at intensity 1 (quantum noise, X-ray) | 800 | 300 | 120 | 50 | 20 |
| ``rician_noise`` | sigma of the complex noise (MR magnitude) | 0.02 | 0.04 | 0.06 | 0.09 | 0.13 |
| ``low_dose_ct`` | noise sigma / streak amplitude (CT) | .015/.01 | .03/.02 | .05/.035 | .075/.05 | .10/.07 |
| ``jpeg2000`` | compression ratio (Pillow OpenJPEG) | 6 | 12 | 24 | 40 | 64 |
| ``resample`` | down-sampling factor, then back (bicubic) | 1.5 | 2 | 3 | 4 | 6 |
| ``gamma`` | gamma exponent (shadows crushed) | 1.3 | 1.6 | 2.0 | 2.5 | 3.2 |
| ``gibbs_ringing`` | fraction of k-space kept (sharp cut-off, MR) | 0.6 | 0.45 | 0.35 | 0.25 | 0.18 |
| ``kspace_undersampling`` | acceleration (random phase-encode lines, MR) | 1.5 | 2 | 3 | 4 | 6 |
| ``banding`` | grey levels kept (posterisation) | 48 | 24 | 12 | 8 | 5 |

The MONAI wrappers (``Degrade``, ``Degraded``, ``RandDegrade``, ``RandDegraded``) take channel-FIRST ``(C, H, W)``
arrays, tensors or ``MetaTensor`` s (MONAI convention) and keep their type and metadata.
"""

from __future__ import annotations

import io
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable, RandomizableTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_numpy
from PIL import Image
from scipy import ndimage

__all__ = [
    "DEGRADATION_KINDS",
    "SEVERITY_TABLE",
    "MAX_SEVERITY",
    "gaussian_noise",
    "speckle_noise",
    "gaussian_blur",
    "motion_blur",
    "jpeg_compress",
    "denoise_artifacts",
    "contrast_reduction",
    "uneven_illumination",
    "poisson_noise",
    "rician_noise",
    "low_dose_ct",
    "jpeg2000_compress",
    "resample",
    "gamma_contrast",
    "gibbs_ringing",
    "kspace_undersampling",
    "banding",
    "degrade",
    "severity_params",
    "Degrade",
    "Degraded",
    "RandDegrade",
    "RandDegraded",
]

MAX_SEVERITY = 5

#: Parameters of each kind for severities 1..5 (index ``severity - 1``); severity 0 is the identity.
SEVERITY_TABLE: dict[str, dict[str, tuple[float, ...]]] = {
    "gaussian_noise": {"sigma": (0.02, 0.04, 0.07, 0.10, 0.15)},
    "speckle_noise": {"sigma": (0.05, 0.10, 0.16, 0.24, 0.34)},
    "gaussian_blur": {"sigma": (0.6, 1.0, 1.5, 2.2, 3.0)},
    "motion_blur": {"length": (3.0, 5.0, 7.0, 10.0, 14.0)},
    "jpeg": {"quality": (50, 30, 18, 10, 5)},
    "denoise": {"sigma_noise": (0.03, 0.05, 0.08, 0.12, 0.16), "strength": (0.55, 0.75, 1.0, 1.25, 1.5)},
    "low_contrast": {"amount": (0.15, 0.30, 0.45, 0.60, 0.75)},
    "uneven_illumination": {"strength": (0.15, 0.30, 0.45, 0.60, 0.75)},
    "poisson_noise": {"photons": (800.0, 300.0, 120.0, 50.0, 20.0)},
    "rician_noise": {"sigma": (0.02, 0.04, 0.06, 0.09, 0.13)},
    "low_dose_ct": {"sigma": (0.015, 0.03, 0.05, 0.075, 0.10), "streaks": (0.01, 0.02, 0.035, 0.05, 0.07)},
    "jpeg2000": {"ratio": (6.0, 12.0, 24.0, 40.0, 64.0)},
    "resample": {"factor": (1.5, 2.0, 3.0, 4.0, 6.0)},
    "gamma": {"gamma": (1.3, 1.6, 2.0, 2.5, 3.2)},
    "gibbs_ringing": {"keep": (0.6, 0.45, 0.35, 0.25, 0.18)},
    "kspace_undersampling": {"acceleration": (1.5, 2.0, 3.0, 4.0, 6.0)},
    "banding": {"levels": (48, 24, 12, 8, 5)},
}

#: Names accepted by :func:`degrade`.
DEGRADATION_KINDS: tuple[str, ...] = tuple(SEVERITY_TABLE)

_SPATIAL_PARAMS = {("gaussian_blur", "sigma"), ("motion_blur", "length")}


# ----------------------------------------------------------------------------------------------------------------------
# helpers


def _as_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    """Return ``rng`` if it is a Generator, else a new Generator seeded with it."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def _check_image(img: np.ndarray) -> np.ndarray:
    """Validate a channel-last float image.

    Raises:
        TypeError: when ``img`` is not a floating-point numpy array.
        ValueError: when ``img`` is not 2-D or 3-D.
    """
    img = np.asarray(img)
    if not np.issubdtype(img.dtype, np.floating):
        raise TypeError(f"degradations expect a float image in [0, 1], got dtype {img.dtype}.")
    if img.ndim not in (2, 3):
        raise ValueError(f"degradations expect an (H, W) or (H, W, C) image, got shape {img.shape}.")
    return img


def _finish(out: np.ndarray, like: np.ndarray) -> np.ndarray:
    """Clip to [0, 1] and cast back to the dtype of ``like``."""
    return np.clip(out, 0.0, 1.0).astype(like.dtype, copy=False)


def _spatial_sigma(img: np.ndarray, sigma: float) -> tuple[float, ...]:
    """A per-axis sigma that never blurs across channels."""
    return (sigma, sigma) if img.ndim == 2 else (sigma, sigma, 0.0)


# ----------------------------------------------------------------------------------------------------------------------
# operations (channel-last numpy)


def gaussian_noise(img: np.ndarray, sigma: float, rng: np.random.Generator | int | None = None) -> np.ndarray:
    """Additive white Gaussian noise, independent per pixel and channel.

    Args:
        img: float image in [0, 1], ``(H, W)`` or ``(H, W, C)``.
        sigma: noise standard deviation in intensity units (0 = identity).
        rng: numpy Generator (or seed) for the noise.

    Returns:
        The noisy image, same shape and dtype, clipped to [0, 1].
    """
    img = _check_image(img)
    if sigma <= 0:
        return img.copy()
    noise = _as_rng(rng).standard_normal(img.shape)
    return _finish(img + sigma * noise, img)


def speckle_noise(
    img: np.ndarray, sigma: float, rng: np.random.Generator | int | None = None, grain: float = 0.8
) -> np.ndarray:
    """Multiplicative, spatially correlated noise, as in B-mode ultrasound: ``img * (1 + sigma * n)``.

    ``n`` is white Gaussian noise smoothed with a Gaussian of ``grain`` pixels and renormalised to unit variance, so
    the speckle has a grain of about one resolution cell; one field is shared by all channels (speckle modulates the
    echo amplitude, not the colour). Dark (anechoic) regions stay dark, as in real speckle.

    Args:
        img: float image in [0, 1], ``(H, W)`` or ``(H, W, C)``.
        sigma: relative standard deviation of the multiplicative field (0 = identity).
        rng: numpy Generator (or seed).
        grain: correlation length of the field in pixels (default 0.8).

    Returns:
        The speckled image, same shape and dtype, clipped to [0, 1].
    """
    img = _check_image(img)
    if sigma <= 0:
        return img.copy()
    field = _as_rng(rng).standard_normal(img.shape[:2])
    if grain > 0:
        field = ndimage.gaussian_filter(field, grain, mode="reflect")
    field /= max(float(field.std()), 1e-12)
    if img.ndim == 3:
        field = field[..., None]
    return _finish(img * (1.0 + sigma * field), img)


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Isotropic Gaussian blur (defocus), applied to every channel.

    Args:
        img: float image in [0, 1], ``(H, W)`` or ``(H, W, C)``.
        sigma: standard deviation of the kernel in pixels (0 = identity).

    Returns:
        The blurred image, same shape and dtype.
    """
    img = _check_image(img)
    if sigma <= 0:
        return img.copy()
    return _finish(ndimage.gaussian_filter(img, _spatial_sigma(img, sigma), mode="reflect"), img)


def _motion_kernel(length: float, angle: float) -> np.ndarray:
    """A normalised line kernel of ``length`` pixels at ``angle`` degrees (anti-aliased by bilinear splatting)."""
    half = int(np.ceil(length / 2.0))
    size = 2 * half + 1
    kernel = np.zeros((size, size), dtype=np.float64)
    theta = np.deg2rad(angle)
    ts = np.linspace(-(length - 1) / 2.0, (length - 1) / 2.0, max(8, int(4 * length)))
    ys = half - ts * np.sin(theta)
    xs = half + ts * np.cos(theta)
    y0 = np.floor(ys).astype(int)
    x0 = np.floor(xs).astype(int)
    fy = ys - y0
    fx = xs - x0
    for dy, dx, w in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        yy = np.clip(y0 + dy, 0, size - 1)
        xx = np.clip(x0 + dx, 0, size - 1)
        np.add.at(kernel, (yy, xx), w)
    return kernel / kernel.sum()


def motion_blur(
    img: np.ndarray, length: float, angle: float | None = None, rng: np.random.Generator | int | None = None
) -> np.ndarray:
    """Linear motion blur: convolution with a line of ``length`` pixels.

    Args:
        img: float image in [0, 1], ``(H, W)`` or ``(H, W, C)``.
        length: blur length in pixels (``<= 1`` = identity).
        angle: direction in degrees (0 = horizontal). ``None`` draws it uniformly in [0, 180) from ``rng``.
        rng: numpy Generator (or seed), only used when ``angle`` is None.

    Returns:
        The blurred image, same shape and dtype.
    """
    img = _check_image(img)
    if length <= 1:
        return img.copy()
    if angle is None:
        angle = float(_as_rng(rng).uniform(0.0, 180.0))
    kernel = _motion_kernel(float(length), float(angle))
    if img.ndim == 3:
        kernel = kernel[..., None]
    return _finish(ndimage.convolve(img.astype(np.float64), kernel, mode="reflect"), img)


def _jpeg_plane(plane: np.ndarray, quality: int, mode: str) -> np.ndarray:
    """JPEG round-trip of one uint8 plane (``L``) or RGB image through an in-memory buffer."""
    buffer = io.BytesIO()
    Image.fromarray(plane).save(buffer, format="JPEG", quality=int(quality))  # uint8 (H, W) -> L, (H, W, 3) -> RGB
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert(mode))


def jpeg_compress(img: np.ndarray, quality: int) -> np.ndarray:
    """JPEG compression artefacts (blocking, ringing, colour bleeding) with Pillow, in memory.

    Gray images are coded as ``L``, 3-channel images as ``RGB`` (with Pillow's default chroma subsampling), other
    channel counts plane by plane. The image is quantised to 8 bits first.

    Args:
        img: float image in [0, 1], ``(H, W)`` or ``(H, W, C)``.
        quality: Pillow JPEG quality, 1 (worst) to 95 (best); values above 95 are clamped by the encoder.

    Returns:
        The decoded image, same shape and dtype.

    Raises:
        ValueError: when ``quality`` is outside 1..100.
    """
    img = _check_image(img)
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"jpeg quality must be in 1..100, got {quality}.")
    u8 = np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)
    if img.ndim == 2:
        out = _jpeg_plane(u8, quality, "L")
    elif img.shape[2] == 3:
        out = _jpeg_plane(np.ascontiguousarray(u8), quality, "RGB")
    else:
        out = np.stack([_jpeg_plane(np.ascontiguousarray(u8[..., c]), quality, "L") for c in range(img.shape[2])], -1)
    return (out.astype(np.float64) / 255.0).astype(img.dtype)


def denoise_artifacts(
    img: np.ndarray, sigma_noise: float, strength: float, rng: np.random.Generator | int | None = None
) -> np.ndarray:
    """The "image denoising" distortion (TID2013 distortion #9; the MD72 ultrasound set is made of denoised images).

    White Gaussian noise of ``sigma_noise`` is added, then removed with scikit-image's fast non-local means
    (patch 5, search distance 4, ``h = strength * sigma_noise``). A strength below ~0.8 leaves residual noise; above
    ~1 the filter over-smooths fine texture and produces the flat, "painted" patches typical of denoised images;
    both grow with the severity in ``SEVERITY_TABLE``, as TID2013's denoised images combine residual noise and
    detail loss.

    Args:
        img: float image in [0, 1], ``(H, W)`` or ``(H, W, C)``.
        sigma_noise: standard deviation of the noise added before denoising (0 = identity).
        strength: filter strength relative to ``sigma_noise`` (NL-means ``h``).
        rng: numpy Generator (or seed) for the noise.

    Returns:
        The denoised image, same shape and dtype.
    """
    from skimage.restoration import denoise_nl_means

    img = _check_image(img)
    if sigma_noise <= 0:
        return img.copy()
    noisy = np.clip(img + sigma_noise * _as_rng(rng).standard_normal(img.shape), 0.0, 1.0)
    out = denoise_nl_means(
        noisy,
        h=max(strength, 1e-3) * sigma_noise,
        sigma=sigma_noise,
        patch_size=5,
        patch_distance=4,
        fast_mode=True,
        channel_axis=-1 if img.ndim == 3 else None,
    )
    return _finish(out, img)


def contrast_reduction(img: np.ndarray, amount: float) -> np.ndarray:
    """Contrast loss towards each channel's mean: ``mean + (1 - amount) * (img - mean)``.

    Args:
        img: float image in [0, 1], ``(H, W)`` or ``(H, W, C)``.
        amount: fraction of the contrast removed, in [0, 1] (0 = identity, 1 = flat image).

    Returns:
        The low-contrast image, same shape and dtype.

    Raises:
        ValueError: when ``amount`` is outside [0, 1].
    """
    img = _check_image(img)
    if not 0.0 <= amount <= 1.0:
        raise ValueError(f"contrast reduction amount must be in [0, 1], got {amount}.")
    mean = img.mean(axis=(0, 1), keepdims=True)
    return _finish(mean + (1.0 - amount) * (img - mean), img)


def uneven_illumination(img: np.ndarray, strength: float, rng: np.random.Generator | int | None = None) -> np.ndarray:
    """Uneven illumination as in fundus photographs / OCTA: a smooth shading field plus a faint glare.

    The shading ``s`` in [0, 1] is the mean of a radial fall-off around a random centre and a linear ramp in a random
    direction; the glare ``g`` is a broad Gaussian spot at a random position. The output is
    ``img * (1 - strength * s) + 0.25 * strength * g``, i.e. part of the image darkens (lesions there lose contrast)
    and a hazy bright spot washes out another part.

    Args:
        img: float image in [0, 1], ``(H, W)`` or ``(H, W, C)``.
        strength: depth of the shading in [0, 1] (0 = identity).
        rng: numpy Generator (or seed) for the field geometry.

    Returns:
        The shaded image, same shape and dtype.
    """
    img = _check_image(img)
    if strength <= 0:
        return img.copy()
    rng = _as_rng(rng)
    h, w = img.shape[:2]
    yy, xx = np.meshgrid(np.linspace(-1.0, 1.0, h), np.linspace(-1.0, 1.0, w), indexing="ij")
    cy, cx = rng.uniform(-0.5, 0.5, size=2)
    radial = np.clip(((yy - cy) ** 2 + (xx - cx) ** 2) / 2.0, 0.0, 1.0)
    theta = rng.uniform(0.0, 2.0 * np.pi)
    ramp = yy * np.sin(theta) + xx * np.cos(theta)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-12)
    shading = 0.5 * radial + 0.5 * ramp
    shading /= max(float(shading.max()), 1e-12)
    gy, gx = rng.uniform(-0.6, 0.6, size=2)
    glare = np.exp(-((yy - gy) ** 2 + (xx - gx) ** 2) / (2 * 0.3**2))
    if img.ndim == 3:
        shading = shading[..., None]
        glare = glare[..., None]
    return _finish(img * (1.0 - strength * shading) + 0.25 * strength * glare, img)


def poisson_noise(img: np.ndarray, photons: float, rng: np.random.Generator | int | None = None) -> np.ndarray:
    """Quantum (shot) noise as in projection radiography: ``Poisson(img * photons) / photons``.

    Args:
        img: float image in [0, 1], ``(H, W)`` or ``(H, W, C)``.
        photons: expected count at intensity 1; fewer photons = more noise (``<= 0`` or ``inf`` = identity).
        rng: numpy Generator (or seed).

    Returns:
        The noisy image, same shape and dtype, clipped to [0, 1].
    """
    img = _check_image(img)
    if not 0 < photons < np.inf:
        return img.copy()
    counts = _as_rng(rng).poisson(np.clip(img, 0.0, 1.0).astype(np.float64) * photons)
    return _finish(counts / photons, img)


def rician_noise(img: np.ndarray, sigma: float, rng: np.random.Generator | int | None = None) -> np.ndarray:
    """Rician noise of MR magnitude images: ``|img + sigma * (n1 + i n2)|`` (the background gets a noise floor).

    Args:
        img: float image in [0, 1], ``(H, W)`` or ``(H, W, C)``.
        sigma: standard deviation of each of the real and imaginary noise parts (0 = identity).
        rng: numpy Generator (or seed).

    Returns:
        The noisy magnitude image, same shape and dtype, clipped to [0, 1].
    """
    img = _check_image(img)
    if sigma <= 0:
        return img.copy()
    rng = _as_rng(rng)
    real = img + sigma * rng.standard_normal(img.shape)
    imag = sigma * rng.standard_normal(img.shape)
    return _finish(np.hypot(real, imag), img)


def low_dose_ct(
    img: np.ndarray, sigma: float, streaks: float, rng: np.random.Generator | int | None = None, num_views: int = 16
) -> np.ndarray:
    """Low-dose CT look: spatially correlated quantum noise plus streaks.

    Filtered back-projection spreads the noise of each projection along its rays; we model it as
    ``sigma * n`` (white noise smoothed with a 0.7 px Gaussian, renormalised: the fine-grained CT noise texture) plus
    ``streaks * sum_v p_v(x cos t_v + y sin t_v) / sqrt(V)``: ``num_views`` random view angles, each with a 1-D white
    profile smeared along its rays. One field for all channels.

    Args:
        img: float image in [0, 1], ``(H, W)`` or ``(H, W, C)``.
        sigma: standard deviation of the noise (0 with ``streaks`` 0 = identity).
        streaks: standard deviation of the streak field.
        rng: numpy Generator (or seed).
        num_views: number of streak directions.

    Returns:
        The degraded image, same shape and dtype, clipped to [0, 1].
    """
    img = _check_image(img)
    if sigma <= 0 and streaks <= 0:
        return img.copy()
    rng = _as_rng(rng)
    h, w = img.shape[:2]
    noise = ndimage.gaussian_filter(rng.standard_normal((h, w)), 0.7)
    noise /= max(float(noise.std()), 1e-12)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    yy -= h / 2.0
    xx -= w / 2.0
    length = int(np.ceil(np.hypot(h, w))) + 2
    field = np.zeros((h, w))
    for theta in rng.uniform(0.0, np.pi, size=int(num_views)):
        profile = rng.standard_normal(length)
        coord = np.clip(np.round(xx * np.cos(theta) + yy * np.sin(theta) + length / 2.0).astype(int), 0, length - 1)
        field += profile[coord]
    field /= np.sqrt(max(int(num_views), 1))
    total = sigma * noise + streaks * field
    if img.ndim == 3:
        total = total[..., None]
    return _finish(img + total, img)


def jpeg2000_compress(img: np.ndarray, ratio: float) -> np.ndarray:
    """JPEG 2000 (lossy, irreversible wavelet) round trip with Pillow's OpenJPEG codec, in memory.

    Gray images are coded as ``L``, 3-channel images as ``RGB``, other channel counts plane by plane; the image is
    quantised to 8 bits first. Artefacts: blur and ringing along edges, no blocking.

    Args:
        img: float image in [0, 1], ``(H, W)`` or ``(H, W, C)``.
        ratio: compression ratio (``<= 1`` = identity).

    Returns:
        The decoded image, same shape and dtype.
    """
    img = _check_image(img)
    if ratio <= 1:
        return img.copy()
    u8 = np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)

    def code(plane: np.ndarray, mode: str) -> np.ndarray:
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(plane)).save(
            buffer, format="JPEG2000", quality_mode="rates", quality_layers=[float(ratio)], irreversible=True
        )
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            return np.asarray(decoded.convert(mode))

    if img.ndim == 2:
        out = code(u8, "L")
    elif img.shape[2] == 3:
        out = code(u8, "RGB")
    else:
        out = np.stack([code(u8[..., c], "L") for c in range(img.shape[2])], -1)
    return (out.astype(np.float64) / 255.0).astype(img.dtype)


def _resize_planes(img: np.ndarray, size: tuple[int, int], resample_filter: int) -> np.ndarray:
    """Resize every channel of a channel-last float image to ``size`` = (h, w) with a Pillow filter."""
    h, w = size

    def plane(p: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(np.ascontiguousarray(p, np.float32)).resize((w, h), resample_filter))

    if img.ndim == 2:
        return plane(img).astype(np.float64)
    return np.stack([plane(img[..., c]) for c in range(img.shape[2])], -1).astype(np.float64)


def resample(img: np.ndarray, factor: float) -> np.ndarray:
    """Loss of resolution: anti-aliased down-sampling by ``factor`` (Pillow box filter), then bicubic up-sampling back.

    Args:
        img: float image in [0, 1], ``(H, W)`` or ``(H, W, C)``.
        factor: down-sampling factor (``<= 1`` = identity).

    Returns:
        The resampled image, same shape and dtype.
    """
    img = _check_image(img)
    if factor <= 1:
        return img.copy()
    h, w = img.shape[:2]
    small = _resize_planes(img, (max(1, round(h / factor)), max(1, round(w / factor))), Image.BOX)
    return _finish(_resize_planes(small, (h, w), Image.BICUBIC), img)


def gamma_contrast(img: np.ndarray, gamma: float) -> np.ndarray:
    """Gamma mis-calibration: ``img ** gamma`` (gamma > 1 crushes the shadows, gamma < 1 washes them out).

    Args:
        img: float image in [0, 1], ``(H, W)`` or ``(H, W, C)``.
        gamma: positive exponent (1 = identity).

    Returns:
        The image, same shape and dtype.

    Raises:
        ValueError: when ``gamma`` is not positive.
    """
    img = _check_image(img)
    if not gamma > 0:
        raise ValueError(f"gamma must be positive, got {gamma}.")
    if gamma == 1:
        return img.copy()
    return _finish(np.clip(img, 0.0, 1.0) ** gamma, img)


def _kspace_apply(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Magnitude of the inverse FFT of each channel's centred k-space times ``mask`` (H, W)."""
    planes = img[..., None] if img.ndim == 2 else img
    out = np.empty(planes.shape, dtype=np.float64)
    for c in range(planes.shape[2]):
        k = np.fft.fftshift(np.fft.fft2(planes[..., c].astype(np.float64)))
        out[..., c] = np.abs(np.fft.ifft2(np.fft.ifftshift(k * mask)))
    return out[..., 0] if img.ndim == 2 else out


def gibbs_ringing(img: np.ndarray, keep: float) -> np.ndarray:
    """Gibbs ringing / truncation artefact of MR: only the central ``keep`` fraction of k-space is acquired (in both
    directions, sharp cut-off, zero-filled reconstruction, magnitude).

    Args:
        img: float image in [0, 1], ``(H, W)`` or ``(H, W, C)``.
        keep: fraction of k-space kept along each axis, in (0, 1] (1 = identity).

    Returns:
        The ringing image, same shape and dtype.

    Raises:
        ValueError: when ``keep`` is outside (0, 1].
    """
    img = _check_image(img)
    if not 0 < keep <= 1:
        raise ValueError(f"gibbs_ringing keep must be in (0, 1], got {keep}.")
    if keep == 1:
        return img.copy()
    h, w = img.shape[:2]
    ky = np.abs(np.arange(h) - h // 2) <= keep * h / 2
    kx = np.abs(np.arange(w) - w // 2) <= keep * w / 2
    return _finish(_kspace_apply(img, np.outer(ky, kx).astype(np.float64)), img)


def kspace_undersampling(
    img: np.ndarray, acceleration: float, rng: np.random.Generator | int | None = None, center_fraction: float = 0.08
) -> np.ndarray:
    """Cartesian k-space undersampling of MR: a random ``1 / acceleration`` of the phase-encode lines (rows) is kept,
    always including the central ``center_fraction`` of them; zero-filled reconstruction (magnitude) gives aliasing
    ghosts and blur.

    Args:
        img: float image in [0, 1], ``(H, W)`` or ``(H, W, C)``.
        acceleration: undersampling factor (``<= 1`` = identity).
        rng: numpy Generator (or seed) for the line pattern.
        center_fraction: fraction of the lines around the k-space centre that is always kept.

    Returns:
        The undersampled image, same shape and dtype.
    """
    img = _check_image(img)
    if acceleration <= 1:
        return img.copy()
    h, w = img.shape[:2]
    rows = np.zeros(h, dtype=bool)
    half = max(1, int(round(center_fraction * h / 2)))
    rows[h // 2 - half : h // 2 + half + 1] = True
    wanted = max(int(round(h / acceleration)), int(rows.sum()))
    others = np.flatnonzero(~rows)
    extra = wanted - int(rows.sum())
    if extra > 0:
        rows[_as_rng(rng).choice(others, size=min(extra, others.size), replace=False)] = True
    mask = np.repeat(rows[:, None], w, axis=1).astype(np.float64)
    return _finish(_kspace_apply(img, mask), img)


def banding(img: np.ndarray, levels: int) -> np.ndarray:
    """Banding / posterisation: intensities quantised to ``levels`` grey levels (false contours in smooth regions).

    Args:
        img: float image in [0, 1], ``(H, W)`` or ``(H, W, C)``.
        levels: number of levels kept, at least 2 (256 or more = identity at 8 bits).

    Returns:
        The quantised image, same shape and dtype.

    Raises:
        ValueError: when ``levels < 2``.
    """
    img = _check_image(img)
    if int(levels) < 2:
        raise ValueError(f"banding needs at least 2 levels, got {levels}.")
    if int(levels) >= 256:
        return img.copy()
    step = int(levels) - 1
    return _finish(np.round(np.clip(img, 0.0, 1.0) * step) / step, img)


# ----------------------------------------------------------------------------------------------------------------------
# dispatcher


def severity_params(kind: str, severity: int, spatial_scale: float = 1.0) -> dict[str, float]:
    """The parameters of ``kind`` at ``severity`` (see ``SEVERITY_TABLE``); empty for severity 0.

    Args:
        kind: one of ``DEGRADATION_KINDS``.
        severity: integer 0..5.
        spatial_scale: multiplies the spatial parameters (blur sigma, motion length).

    Raises:
        ValueError: for an unknown kind or a severity outside 0..5.
    """
    if kind not in SEVERITY_TABLE:
        raise ValueError(f"unknown degradation kind {kind!r}; expected one of {DEGRADATION_KINDS}.")
    if isinstance(severity, bool) or int(severity) != severity or not 0 <= int(severity) <= MAX_SEVERITY:
        raise ValueError(f"severity must be an integer in 0..{MAX_SEVERITY}, got {severity!r}.")
    severity = int(severity)
    if severity == 0:
        return {}
    params = {}
    for name, values in SEVERITY_TABLE[kind].items():
        value = values[severity - 1]
        params[name] = value * spatial_scale if (kind, name) in _SPATIAL_PARAMS else value
    return params


def degrade(
    img: np.ndarray,
    kind: str,
    severity: int,
    rng: np.random.Generator | int | None = None,
    spatial_scale: float = 1.0,
) -> np.ndarray:
    """Apply ``kind`` at an integer ``severity`` (0 = identity, 5 = worst) with the parameters of ``SEVERITY_TABLE``.

    Args:
        img: float image in [0, 1], ``(H, W)`` or ``(H, W, C)`` (channel last).
        kind: one of ``DEGRADATION_KINDS``.
        severity: integer 0..5.
        rng: numpy Generator (or seed) for the random kinds.
        spatial_scale: multiplies blur sigmas, motion length and speckle grain, e.g. ``image_size / 96``.

    Returns:
        A new degraded image with the shape and dtype of ``img``.

    Raises:
        ValueError: for an unknown kind or a severity outside 0..5.
        TypeError: when ``img`` is not floating point.
    """
    params = severity_params(kind, severity, spatial_scale)
    img = _check_image(img)
    if not params:
        return img.copy()
    rng = _as_rng(rng)
    if kind == "gaussian_noise":
        return gaussian_noise(img, params["sigma"], rng)
    if kind == "speckle_noise":
        return speckle_noise(img, params["sigma"], rng, grain=0.8 * spatial_scale)
    if kind == "gaussian_blur":
        return gaussian_blur(img, params["sigma"])
    if kind == "motion_blur":
        return motion_blur(img, params["length"], rng=rng)
    if kind == "jpeg":
        return jpeg_compress(img, int(params["quality"]))
    if kind == "denoise":
        return denoise_artifacts(img, params["sigma_noise"], params["strength"], rng)
    if kind == "low_contrast":
        return contrast_reduction(img, params["amount"])
    if kind == "uneven_illumination":
        return uneven_illumination(img, params["strength"], rng)
    if kind == "poisson_noise":
        return poisson_noise(img, params["photons"], rng)
    if kind == "rician_noise":
        return rician_noise(img, params["sigma"], rng)
    if kind == "low_dose_ct":
        return low_dose_ct(img, params["sigma"], params["streaks"], rng)
    if kind == "jpeg2000":
        return jpeg2000_compress(img, params["ratio"])
    if kind == "resample":
        return resample(img, params["factor"])
    if kind == "gamma":
        return gamma_contrast(img, params["gamma"])
    if kind == "gibbs_ringing":
        return gibbs_ringing(img, params["keep"])
    if kind == "kspace_undersampling":
        return kspace_undersampling(img, params["acceleration"], rng)
    return banding(img, int(params["levels"]))


# ----------------------------------------------------------------------------------------------------------------------
# MONAI wrappers (channel-first)


def _degrade_channel_first(img: Any, kind: str, severity: int, seed: int, spatial_scale: float) -> Any:
    """Run :func:`degrade` on a channel-first ``(C, H, W)`` array/tensor/MetaTensor and keep its type."""
    arr = convert_to_numpy(img)
    if arr.ndim != 3:
        raise ValueError(f"Degrade expects a channel-first (C, H, W) image, got shape {tuple(arr.shape)}.")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
    hwc = np.moveaxis(arr, 0, -1)
    if hwc.shape[-1] == 1:
        hwc = hwc[..., 0]
    out = degrade(np.ascontiguousarray(hwc), kind, severity, np.random.default_rng(seed), spatial_scale)
    out = out[None] if out.ndim == 2 else np.moveaxis(out, -1, 0)
    return convert_to_dst_type(np.ascontiguousarray(out), dst=img, dtype=arr.dtype)[0]


class Degrade(Randomizable, Transform):
    """Degrade a channel-first image ``(C, H, W)`` in [0, 1] with one kind at a fixed severity.

    The noise realisation comes from the transform's random state (``set_random_state``), so a pipeline seeded with
    MONAI's ``set_determinism`` is reproducible.

    Args:
        kind: one of ``DEGRADATION_KINDS``.
        severity: integer 0..5 (0 = identity).
        spatial_scale: multiplies the spatial parameters (see :func:`degrade`).

    Raises:
        ValueError: for an unknown kind or a severity outside 0..5.
    """

    backend = [TransformBackends.NUMPY, TransformBackends.TORCH]

    def __init__(self, kind: str, severity: int, spatial_scale: float = 1.0) -> None:
        severity_params(kind, severity)
        self.kind = kind
        self.severity = int(severity)
        self.spatial_scale = float(spatial_scale)
        self._seed = 0

    def randomize(self, data: Any = None) -> None:
        """Draw the seed of the next noise realisation."""
        self._seed = int(self.R.randint(0, 2**31 - 1))

    def __call__(self, img: Any, randomize: bool = True) -> Any:
        """Args: img: ``(C, H, W)`` array, tensor or MetaTensor. Returns: the same type and shape."""
        if randomize:
            self.randomize()
        return _degrade_channel_first(img, self.kind, self.severity, self._seed, self.spatial_scale)


class Degraded(Randomizable, MapTransform):
    """Dictionary version of :class:`Degrade`; every key gets the same noise realisation.

    Args:
        keys: keys of the channel-first images to degrade.
        kind: one of ``DEGRADATION_KINDS``.
        severity: integer 0..5.
        spatial_scale: multiplies the spatial parameters.
        allow_missing_keys: do not fail on absent keys.
    """

    backend = Degrade.backend

    def __init__(
        self,
        keys: KeysCollection,
        kind: str,
        severity: int,
        spatial_scale: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.degrader = Degrade(kind, severity, spatial_scale)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> Degraded:
        """Seed this transform and its array transform."""
        super().set_random_state(seed, state)
        self.degrader.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        """Draw the seed shared by all keys of the next call."""
        self.degrader.randomize()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Degrade ``keys`` of ``data``; returns a shallow copy."""
        d = dict(data)
        self.randomize()
        for key in self.key_iterator(d):
            d[key] = self.degrader(d[key], randomize=False)
        return d


class RandDegrade(RandomizableTransform):
    """With probability ``prob``, degrade a channel-first image with a random kind and severity (augmentation).

    Args:
        kinds: kinds to draw from (default: all of ``DEGRADATION_KINDS``).
        severity_range: inclusive ``(low, high)`` severities to draw from (default ``(1, 5)``).
        prob: probability of applying a degradation.
        spatial_scale: multiplies the spatial parameters.

    Raises:
        ValueError: for an unknown kind or a severity range outside 0..5.
    """

    backend = Degrade.backend

    def __init__(
        self,
        kinds: Sequence[str] | None = None,
        severity_range: tuple[int, int] = (1, MAX_SEVERITY),
        prob: float = 1.0,
        spatial_scale: float = 1.0,
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        self.kinds = tuple(kinds) if kinds is not None else DEGRADATION_KINDS
        if not self.kinds:
            raise ValueError("kinds must not be empty.")
        low, high = (int(v) for v in severity_range)
        if not 0 <= low <= high <= MAX_SEVERITY:
            raise ValueError(f"severity_range must satisfy 0 <= low <= high <= {MAX_SEVERITY}, got {severity_range}.")
        for kind in self.kinds:
            severity_params(kind, low)
        self.severity_range = (low, high)
        self.spatial_scale = float(spatial_scale)
        self.kind = self.kinds[0]
        self.severity = 0
        self._seed = 0

    def randomize(self, data: Any = None) -> None:
        """Draw whether to apply, the kind, the severity and the noise seed."""
        super().randomize(None)
        self.kind = self.kinds[int(self.R.randint(len(self.kinds)))]
        self.severity = int(self.R.randint(self.severity_range[0], self.severity_range[1] + 1))
        self._seed = int(self.R.randint(0, 2**31 - 1))
        if not self._do_transform:
            self.severity = 0

    def __call__(self, img: Any, randomize: bool = True) -> Any:
        """Args: img: ``(C, H, W)`` array, tensor or MetaTensor. Returns: the same type and shape."""
        if randomize:
            self.randomize()
        if self.severity == 0:
            return img
        return _degrade_channel_first(img, self.kind, self.severity, self._seed, self.spatial_scale)


class RandDegraded(RandomizableTransform, MapTransform):
    """Dictionary version of :class:`RandDegrade`; all keys share the drawn kind, severity and noise.

    Args:
        keys: keys of the channel-first images to degrade.
        kinds: kinds to draw from (default: all).
        severity_range: inclusive severity range (default ``(1, 5)``).
        prob: probability of applying a degradation.
        spatial_scale: multiplies the spatial parameters.
        kind_key: if given, the drawn kind (``"none"`` when not applied) is written under this key.
        severity_key: if given, the drawn severity (0 when not applied) is written under this key.
        allow_missing_keys: do not fail on absent keys.
    """

    backend = Degrade.backend

    def __init__(
        self,
        keys: KeysCollection,
        kinds: Sequence[str] | None = None,
        severity_range: tuple[int, int] = (1, MAX_SEVERITY),
        prob: float = 1.0,
        spatial_scale: float = 1.0,
        kind_key: str | None = None,
        severity_key: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.degrader = RandDegrade(kinds, severity_range, 1.0, spatial_scale)
        self.kind_key = kind_key
        self.severity_key = severity_key

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandDegraded:
        """Seed this transform and its array transform."""
        super().set_random_state(seed, state)
        self.degrader.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        """Draw whether to apply, then the kind, severity and noise seed shared by all keys."""
        super().randomize(None)
        self.degrader.randomize()
        if not self._do_transform:
            self.degrader.severity = 0

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Degrade ``keys`` of ``data``; returns a shallow copy."""
        d = dict(data)
        self.randomize()
        for key in self.key_iterator(d):
            d[key] = self.degrader(d[key], randomize=False)
        if self.kind_key is not None:
            d[self.kind_key] = self.degrader.kind if self.degrader.severity > 0 else "none"
        if self.severity_key is not None:
            d[self.severity_key] = self.degrader.severity
        return d
