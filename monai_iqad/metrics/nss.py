"""Shared pieces of the classic no-reference IQA metrics: input batching, colour -> luma, Gaussian/MSCN filtering and
the asymmetric generalised Gaussian (AGGD) moment fit of natural-scene statistics (NSS).

Everything works on ``float64`` torch tensors of shape ``(B, 1, H, W)`` so a batch is filtered and fitted at once.
The MSCN (mean subtracted, contrast normalised) coefficients and the AGGD fit are those of Mittal et al.,
"No-Reference Image Quality Assessment in the Spatial Domain", IEEE TIP 2012 (BRISQUE) and "Making a 'Completely
Blind' Image Quality Analyzer", IEEE SPL 2013 (NIQE).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "LUMA_BT601",
    "LUMA_BT709",
    "as_batch",
    "to_luma",
    "finish",
    "gaussian_window",
    "filter2d",
    "mscn",
    "aggd_ratio",
    "aggd_moments",
    "aggd_alpha",
    "aggd_fit",
    "aggd_params",
    "aggd_features",
    "downsample_matlab",
    "downsample_opencv",
]

LUMA_BT601 = (0.298936021293775, 0.587043074451121, 0.114020904255103)
"""MATLAB ``rgb2gray`` / OpenCV ``COLOR_RGB2GRAY`` / YIQ ``Y`` weights (ITU-R BT.601)."""
LUMA_BT709 = (0.2125, 0.7154, 0.0721)
"""scikit-image ``rgb2gray`` weights (ITU-R BT.709 primaries)."""


def as_batch(image: Any, name: str = "image") -> tuple[torch.Tensor, bool]:
    """Convert ``image`` to a ``float64`` CPU tensor ``(B, C, H, W)``.

    Args:
        image: ``(C, H, W)`` or ``(B, C, H, W)`` tensor or array (any real dtype), ``C`` = 1 or 3 (RGB);
            a 2D ``(H, W)`` array is read as one gray image.
        name: name used in error messages.

    Returns:
        ``(batch, single)``: ``single`` is True when the input was one image (2D or 3D).

    Raises:
        ValueError: wrong number of dimensions, channel count other than 1 or 3, or non-finite values.
    """
    if isinstance(image, torch.Tensor):
        x = image.detach().cpu().as_subclass(torch.Tensor)  # a MetaTensor becomes a plain tensor (no meta tracking)
    else:
        arr = np.asarray(image)
        if arr.dtype == np.bool_ or np.iscomplexobj(arr) or not np.issubdtype(arr.dtype, np.number):
            raise ValueError(f"{name}: expected a real-valued image, got dtype {arr.dtype}")
        x = torch.from_numpy(np.array(arr, dtype=np.float64))  # a copy: read-only arrays are fine
    if x.dtype == torch.bool or x.is_complex():
        raise ValueError(f"{name}: expected a real-valued image, got dtype {x.dtype}")
    x = x.to(torch.float64)
    single = x.ndim in (2, 3)
    if x.ndim == 2:
        x = x[None, None]
    elif x.ndim == 3:
        x = x[None]
    elif x.ndim != 4:
        raise ValueError(f"{name}: expected (C, H, W) or (B, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[1] not in (1, 3):
        raise ValueError(f"{name}: expected 1 (gray) or 3 (RGB) channels, got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name}: the image contains NaN or infinite values")
    return x, single


def to_luma(x: torch.Tensor, weights: tuple[float, float, float], data_range: float = 255.0) -> torch.Tensor:
    """Luma ``(B, 1, H, W)`` on the 0..255 scale of a ``(B, C, H, W)`` batch with values in ``[0, data_range]``.

    Gray input is only rescaled; RGB input is the weighted sum of its channels with ``weights``.

    Raises:
        ValueError: ``data_range`` is not positive.
    """
    if not data_range > 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    if x.shape[1] == 3:
        w = torch.tensor(weights, dtype=x.dtype).view(1, 3, 1, 1)
        x = (x * w).sum(dim=1, keepdim=True)
    return x * (255.0 / data_range)


def finish(scores: torch.Tensor, single: bool) -> torch.Tensor | float:
    """Return ``scores`` ``(B,)`` as a ``float32`` tensor, or a Python float for a single input image."""
    scores = scores.reshape(-1)
    return float(scores[0]) if single else scores.to(torch.float32)


def gaussian_window(size: int = 7, sigma: float = 7.0 / 6.0) -> torch.Tensor:
    """Normalised ``(size, size)`` Gaussian window, sampled at integer offsets (MATLAB ``fspecial('gaussian')``)."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    w = g[:, None] * g[None, :]
    return w / w.sum()


def filter2d(x: torch.Tensor, kernel: torch.Tensor, padding: str = "replicate") -> torch.Tensor:
    """Correlate ``(B, 1, H, W)`` with a 2D ``kernel``, output the same size.

    Args:
        padding: ``replicate`` (MATLAB ``imfilter(..., 'replicate')``, OpenCV ``BORDER_REPLICATE``), ``zeros``
            (``scipy.signal.convolve2d(..., 'same')``), ``reflect`` (whole-sample mirror, OpenCV's default
            ``BORDER_REFLECT_101``) or ``symmetric`` (half-sample mirror, ``scipy.ndimage`` ``reflect``).
    """
    kh, kw = kernel.shape
    pad = (kw // 2, kw - 1 - kw // 2, kh // 2, kh - 1 - kh // 2)
    if padding == "zeros":
        x = F.pad(x, pad)
    elif padding == "symmetric":
        x = _pad_symmetric(x, pad)
    else:
        x = F.pad(x, pad, mode=padding)
    # A rank-1 kernel (Gaussian, box, Sobel) runs as two 1D convolutions; other (small) kernels as weighted sums of
    # shifted views, much faster than torch's float64 2D conv2d on the CPU.
    k = kernel.to(x)
    u, sv, vh = torch.linalg.svd(k)
    if kh > 1 and kw > 1 and sv[1] <= 1e-12 * sv[0]:
        col, row = u[:, 0] * sv[0].sqrt(), vh[0] * sv[0].sqrt()
        return F.conv2d(F.conv2d(x, col.view(1, 1, -1, 1)), row.view(1, 1, 1, -1))
    h, w = x.shape[-2] - kh + 1, x.shape[-1] - kw + 1
    taps = [(i, j, float(k[i, j])) for i in range(kh) for j in range(kw) if k[i, j] != 0]
    return sum(c * x[..., i : i + h, j : j + w] for i, j, c in taps)


def _pad_symmetric(x: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
    left, right, top, bottom = pad
    h, w = x.shape[-2:]
    rows = torch.arange(-top, h + bottom)
    cols = torch.arange(-left, w + right)
    rows = _mirror(rows, h)
    cols = _mirror(cols, w)
    return x[..., rows[:, None], cols[None, :]]


def _mirror(idx: torch.Tensor, n: int) -> torch.Tensor:
    """Half-sample symmetric index map (``d c b a | a b c d | d c b a``), valid for any overshoot."""
    period = 2 * n
    idx = idx % period
    return torch.where(idx >= n, period - 1 - idx, idx)


def mscn(x: torch.Tensor, window: torch.Tensor, c: float = 1.0, padding: str = "replicate") -> torch.Tensor:
    """MSCN coefficients ``(x - mu) / (sigma + c)`` of ``(B, 1, H, W)``; ``mu``/``sigma`` are ``window``-weighted.

    ``sigma = sqrt(|E_w[x^2] - mu^2|)`` as in the reference implementations (the ``abs`` guards round-off).
    """
    mu = filter2d(x, window, padding)
    sigma = (filter2d(x * x, window, padding) - mu * mu).abs().sqrt()
    return (x - mu) / (sigma + c)


def aggd_ratio(alpha: torch.Tensor) -> torch.Tensor:
    """``rho(alpha) = Gamma(2/alpha)^2 / (Gamma(1/alpha) Gamma(3/alpha))``, increasing in ``alpha``."""
    return torch.exp(2 * torch.lgamma(2 / alpha) - torch.lgamma(1 / alpha) - torch.lgamma(3 / alpha))


_GRID = torch.arange(200, 10001, dtype=torch.float64) / 1000.0  # 0.2:0.001:10, the NIQE/BRISQUE MATLAB grid


def aggd_moments(samples: torch.Tensor, solver: str = "grid") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Moment statistics of the AGGD fit of each row of ``samples`` ``(N, M)``: ``(R, left_std, right_std)``.

    ``R`` is the generalised Gaussian ratio estimate (Mittal et al. 2012) that :func:`aggd_alpha` inverts;
    ``left_std = sqrt(mean(x^2 | x < 0))``; ``right_std = sqrt(mean(x^2 | x > 0))`` for the ``grid`` solver
    (basicsr/pyiqa NIQE) and ``sqrt(mean(x^2 | x >= 0))`` for ``exact`` (the ``brisque`` package).
    """
    neg = samples < 0
    pos = samples > 0 if solver == "grid" else samples >= 0
    sq = samples * samples
    left_std = ((sq * neg).sum(-1) / neg.sum(-1)).sqrt()
    right_std = ((sq * pos).sum(-1) / pos.sum(-1)).sqrt()
    gammahat = left_std / right_std
    rhat = samples.abs().mean(-1) ** 2 / sq.mean(-1)
    rhatnorm = rhat * (gammahat**3 + 1) * (gammahat + 1) / (gammahat**2 + 1) ** 2
    return rhatnorm, left_std, right_std


def aggd_alpha(rhatnorm: torch.Tensor, solver: str = "grid") -> torch.Tensor:
    """The AGGD shape ``alpha`` with ``rho(alpha) = R`` for each entry of ``rhatnorm``.

    Args:
        rhatnorm: ``(N,)`` ratio estimates from :func:`aggd_moments`.
        solver: ``grid``: the nearest point of the MATLAB grid ``0.2:0.001:10`` (NIQE, original BRISQUE);
            ``exact``: bisection in ``log(alpha)`` to machine precision (the ``brisque`` package's
            ``scipy.optimize.root``).

    Raises:
        ValueError: unknown ``solver``.
    """
    if solver == "grid":
        table = aggd_ratio(_GRID)
        return _GRID[(table[None, :] - rhatnorm[:, None]).abs().argmin(-1)]
    if solver != "exact":
        raise ValueError(f"solver must be 'grid' or 'exact', got {solver!r}")
    lo = torch.full_like(rhatnorm, math.log(0.02))
    hi = torch.full_like(rhatnorm, math.log(50.0))
    for _ in range(56):  # rho is increasing; 56 halvings of a width-8 interval reach double precision
        mid = (lo + hi) / 2
        below = aggd_ratio(mid.exp()) < rhatnorm
        lo = torch.where(below, mid, lo)
        hi = torch.where(below, hi, mid)
    return ((lo + hi) / 2).exp()


def aggd_fit(samples: torch.Tensor, solver: str = "grid") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Moment-matching AGGD fit of each row of ``samples`` ``(N, M)``: ``(alpha, left_std, right_std)``, each
    ``(N,)`` (see :func:`aggd_moments` and :func:`aggd_alpha`)."""
    rhatnorm, left_std, right_std = aggd_moments(samples, solver)
    return aggd_alpha(rhatnorm, solver), left_std, right_std


def aggd_params(
    alpha: torch.Tensor, left_std: torch.Tensor, right_std: torch.Tensor, variance: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(alpha, mean, left, right)`` features from a fit: ``left``/``right`` are the AGGD scales
    ``beta = std * sqrt(Gamma(1/alpha) / Gamma(3/alpha))`` or, with ``variance=True``, ``std^2``; ``mean = (beta_r -
    beta_l) * Gamma(2/alpha) / Gamma(1/alpha)`` (Mittal et al. 2012, Eq. 8)."""
    const = torch.exp(0.5 * (torch.lgamma(1 / alpha) - torch.lgamma(3 / alpha)))
    beta_l, beta_r = left_std * const, right_std * const
    mean = (beta_r - beta_l) * torch.exp(torch.lgamma(2 / alpha) - torch.lgamma(1 / alpha))
    if variance:
        return alpha, mean, left_std**2, right_std**2
    return alpha, mean, beta_l, beta_r


def aggd_features(
    samples: torch.Tensor, solver: str = "grid", variance: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(alpha, mean, left, right)`` of the AGGD fitted to each row of ``samples`` ``(N, M)`` (see
    :func:`aggd_params`)."""
    return aggd_params(*aggd_fit(samples, solver), variance=variance)


# MATLAB imresize(x, 0.5, 'bicubic') with antialiasing: the cubic kernel (a = -0.5) stretched by 2, sampled at
# half-pixel offsets +-0.5 ... +-3.5, half-sample symmetric borders.
_MATLAB_HALF = torch.tensor([-0.01171875, -0.03515625, 0.11328125, 0.43359375, 0.43359375, 0.11328125, -0.03515625,
                             -0.01171875], dtype=torch.float64)  # fmt: skip
# OpenCV resize(x, fx=0.5, fy=0.5, INTER_CUBIC): the cubic kernel (a = -0.75) at offsets +-0.5, +-1.5, no antialiasing,
# clamped (replicated) borders.
_OPENCV_HALF = torch.tensor([-0.09375, 0.59375, 0.59375, -0.09375], dtype=torch.float64)


def _separable_half(x: torch.Tensor, taps: torch.Tensor, x_pad: torch.Tensor) -> torch.Tensor:
    k = taps.to(x)
    y = F.conv2d(x_pad, k.view(1, 1, -1, 1), stride=(2, 1))
    return F.conv2d(y, k.view(1, 1, 1, -1), stride=(1, 2))


def downsample_matlab(x: torch.Tensor) -> torch.Tensor:
    """MATLAB ``imresize(x, 0.5)`` (bicubic, antialiased) of ``(B, 1, H, W)``.

    Output ``(B, 1, ceil(H/2), ceil(W/2))``.
    """
    return _separable_half(x, _MATLAB_HALF, _pad_symmetric(x, (3, 4, 3, 4)))


def downsample_opencv(x: torch.Tensor) -> torch.Tensor:
    """OpenCV ``cv2.resize(x, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_CUBIC)`` of ``(B, 1, H, W)``.

    Output ``(B, 1, round(H/2), round(W/2))`` (OpenCV's ``cvRound``: halves to even); no antialiasing (OpenCV's
    cubic resize has none).
    """
    h, w = x.shape[-2:]
    y = _separable_half(x, _OPENCV_HALF, F.pad(x, (1, 2, 1, 2), mode="replicate"))
    return y[..., : round(h / 2), : round(w / 2)]
