"""BRISQUE, the Blind/Referenceless Image Spatial Quality Evaluator (lower is better).

Re-implementation of BRISQUE based on: A. Mittal, A. K. Moorthy, A. C. Bovik, "No-Reference Image Quality Assessment
in the Spatial Domain", IEEE Transactions on Image Processing 21(12), 2012. The regressor is the RBF epsilon-SVR and
feature scaling of the ``brisque`` 0.2.0 package (Apache-2.0, https://github.com/rehanguha/brisque), converted to
plain arrays by ``scripts/fetch_nr_iqa_params.py``; the feature extraction follows that package so its scores are
reproduced: BT.709 luma (scikit-image ``rgb2gray``), MSCN with a 7x7 Gaussian window (sigma 7/6, zero padding,
``C = 1/255`` on the 0..1 scale), 18 AGGD features (MSCN: shape and variance; four neighbour products without
wrap-around: shape, mean, left and right variances; shape solved exactly), at full and half resolution (OpenCV bicubic
``resize`` by 0.5), scaled to ``[-1, 1]`` and fed to the SVR. This model is not the LIVE ``allmodel`` of the original
release (GPL redistributions only); its scores are close to it but not identical (e.g. camera -7.88 vs -7.31).
"""

from __future__ import annotations

import os
from typing import Any

import torch

from monai_iqad.metrics.nss import (
    LUMA_BT709,
    aggd_alpha,
    aggd_moments,
    aggd_params,
    as_batch,
    downsample_opencv,
    finish,
    gaussian_window,
    mscn,
    to_luma,
)
from monai_iqad.metrics.params import load_params

__all__ = ["brisque", "brisque_features"]


def _moments(m: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """AGGD moment statistics of one scale's MSCN ``(B, 1, H, W)`` and its four neighbour products (no wrap-around)."""
    m = m[:, 0]
    sets = (
        m,
        m[:, :, :-1] * m[:, :, 1:],  # horizontal
        m[:, :-1, :] * m[:, 1:, :],  # vertical
        m[:, :-1, :-1] * m[:, 1:, 1:],  # main diagonal
        m[:, 1:, :-1] * m[:, :-1, 1:],  # secondary diagonal
    )
    return [aggd_moments(s.flatten(1), "exact") for s in sets]


def brisque_features(luma: torch.Tensor) -> torch.Tensor:
    """The 36 BRISQUE features ``(B, 36)`` of a luma batch ``(B, 1, H, W)`` on the 0..255 scale.

    Raises:
        ValueError: the image is smaller than 8x8 pixels (the half-resolution MSCN map would be degenerate).
    """
    h, w = luma.shape[-2:]
    if min(h, w) < 8:
        raise ValueError(f"BRISQUE needs an image of at least 8x8 pixels, got {h}x{w}")
    window = gaussian_window(7, 7.0 / 6.0)
    moments = _moments(mscn(luma, window, 1.0, "zeros")) + _moments(mscn(downsample_opencv(luma), window, 1.0, "zeros"))
    # one bisection for the 10 shape parameters of every image
    alphas = aggd_alpha(torch.cat([r for r, _, _ in moments]), "exact").reshape(len(moments), -1)
    feats = []
    for k, (alpha, (_, lstd, rstd)) in enumerate(zip(alphas, moments, strict=True)):
        _, mean, var_l, var_r = aggd_params(alpha, lstd, rstd, variance=True)
        feats += [alpha, (var_l + var_r) / 2] if k % 5 == 0 else [alpha, mean, var_l, var_r]
    return torch.stack(feats, dim=-1)


def brisque(image: Any, data_range: float = 255.0, params: str | os.PathLike | None = None) -> torch.Tensor | float:
    """BRISQUE score of each image (lower is better; roughly 0..100, below 0 for very clean natural photographs).

    Args:
        image: ``(C, H, W)`` or ``(B, C, H, W)`` tensor or array, ``C`` = 1 or 3 (RGB), values in
            ``[0, data_range]``. RGB is reduced to BT.709 luma (``0.2125 R + 0.7154 G + 0.0721 B``, scikit-image
            ``rgb2gray``, as the ``brisque`` package does).
        data_range: the value of white (255 for 8-bit data, 1 for ``[0, 1]`` tensors).
        params: NIQE/BRISQUE parameter npz; default the shipped, checksummed one.

    Returns:
        ``(B,)`` float32 tensor, or a Python float for a single ``(C, H, W)``/``(H, W)`` image. NaN for an image
        whose features are undefined (e.g. constant).

    Raises:
        ValueError: bad shape or values, or an image smaller than 8x8.
    """
    x, single = as_batch(image, "brisque")
    p = load_params(params)
    feats = brisque_features(to_luma(x, LUMA_BT709, data_range))
    lo, hi = p["brisque_min"], p["brisque_max"]
    scaled = -1 + 2 * (feats - lo) / (hi - lo)
    dist2 = torch.cdist(scaled, p["brisque_sv"]).square()
    scores = torch.exp(-p["brisque_gamma"] * dist2) @ p["brisque_coef"] - p["brisque_rho"]
    return finish(scores, single)
