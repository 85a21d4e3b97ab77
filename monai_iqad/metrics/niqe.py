"""NIQE, the Natural Image Quality Evaluator (lower is better).

Re-implementation of NIQE based on: A. Mittal, R. Soundararajan, A. C. Bovik, "Making a 'Completely Blind' Image
Quality Analyzer", IEEE Signal Processing Letters 20(3), 2013. The pristine model (mean and covariance of 36 NSS
features over 96x96 patches of pristine images) is that of the official LIVE release, as shipped in basicsr 1.4.2
(Apache-2.0); see ``monai_iqad/metrics/params.py``. The processing follows basicsr/pyiqa, which reproduce the
official MATLAB code: luma rounded to integers on the 0..255 scale, 96x96 blocks without overlap (the image is cropped
to whole blocks), MSCN with a 7x7 Gaussian window (sigma 7/6, replicated borders, C = 1), 18 AGGD features per block
(MSCN plus four neighbour products with circular shifts inside the block, alpha on the grid 0.2:0.001:10), at full and
half resolution (MATLAB antialiased bicubic), then the Mahalanobis-like distance between the two Gaussian models.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from monai_iqad.metrics.nss import LUMA_BT601, aggd_features, as_batch, downsample_matlab, finish, mscn, to_luma
from monai_iqad.metrics.params import load_params

__all__ = ["niqe", "niqe_features"]

_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))


def _block_features(blocks: torch.Tensor) -> torch.Tensor:
    """18 NSS features of each MSCN block ``(N, b, b)`` -> ``(N, 18)``."""
    flat = blocks.flatten(1)
    alpha, _, beta_l, beta_r = aggd_features(flat, "grid")
    feats = [alpha, (beta_l + beta_r) / 2]
    for shift in _SHIFTS:
        prod = flat * torch.roll(blocks, shift, dims=(1, 2)).flatten(1)
        feats.extend(aggd_features(prod, "grid"))
    return torch.stack(feats, dim=-1)


def niqe_features(luma: torch.Tensor, window: torch.Tensor, block_size: int = 96) -> torch.Tensor:
    """Per-block NIQE features ``(B, N_blocks, 36)`` of a luma batch ``(B, 1, H, W)`` on the 0..255 scale.

    Raises:
        ValueError: the image is smaller than one block, or ``block_size`` is not a positive even number.
    """
    if block_size <= 0 or block_size % 2:
        raise ValueError(f"block_size must be a positive even number, got {block_size}")
    b, _, h, w = luma.shape
    nh, nw = h // block_size, w // block_size
    if nh == 0 or nw == 0:
        raise ValueError(f"NIQE needs at least one {block_size}x{block_size} block, got an image of {h}x{w}")
    y = luma[..., : nh * block_size, : nw * block_size]
    per_scale = []
    for scale in (1, 2):
        s = block_size // scale
        m = mscn(y, window, 1.0, "replicate")
        blocks = m.reshape(b, nh, s, nw, s).permute(0, 1, 3, 2, 4).reshape(b * nh * nw, s, s)
        per_scale.append(_block_features(blocks).reshape(b, nh * nw, 18))
        if scale == 1:
            y = downsample_matlab(y)
    return torch.cat(per_scale, dim=-1)


def _nan_mean_cov(feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MATLAB ``nanmean`` (per feature) and ``nancov`` (rows with a NaN dropped) of ``(N, D)``.

    A single finite row gives a zero covariance (pyiqa's ``cov`` drops the correction for one sample), so an image of
    exactly one block still gets a score; no finite row gives NaN.
    """
    mean = torch.nanmean(feats, dim=0)
    rows = feats[~torch.isnan(feats).any(dim=1)]
    if rows.shape[0] == 0:
        return mean, torch.full((feats.shape[1], feats.shape[1]), float("nan"), dtype=feats.dtype)
    return mean, torch.cov(rows.T, correction=1 if rows.shape[0] > 1 else 0)


def niqe(
    image: Any, data_range: float = 255.0, block_size: int = 96, params: str | os.PathLike | None = None
) -> torch.Tensor | float:
    """NIQE score of each image (lower is better; about 3 for pristine natural photographs).

    Args:
        image: ``(C, H, W)`` or ``(B, C, H, W)`` tensor or array, ``C`` = 1 or 3 (RGB), values in
            ``[0, data_range]``. RGB is reduced to BT.601 luma (``0.299 R + 0.587 G + 0.114 B``, MATLAB
            ``rgb2gray``, pyiqa's NIQE), then rounded on the 0..255 scale.
        data_range: the value of white (255 for 8-bit data, 1 for ``[0, 1]`` tensors).
        block_size: patch size of the features; 96 (default) is the size the pristine model was fitted on.
        params: NIQE/BRISQUE parameter npz; default the shipped, checksummed one.

    Returns:
        ``(B,)`` float32 tensor, or a Python float when ``image`` is a single ``(C, H, W)``/``(H, W)`` image. NaN
        when no block has finite features (e.g. a constant image).

    Raises:
        ValueError: bad shape or values, or an image smaller than ``block_size`` in either dimension.
    """
    x, single = as_batch(image, "niqe")
    p = load_params(params)
    luma = to_luma(x, LUMA_BT601, data_range).round()
    feats = niqe_features(luma, p["niqe_window"], block_size)
    mu_p, cov_p = p["niqe_mu"], p["niqe_cov"]
    scores = []
    for f in feats:
        mu_d, cov_d = _nan_mean_cov(f)
        diff = mu_p - mu_d
        if torch.isnan(cov_d).any() or torch.isnan(diff).any():
            scores.append(torch.tensor(float("nan"), dtype=torch.float64))
            continue
        scores.append(torch.sqrt(diff @ torch.linalg.pinv((cov_p + cov_d) / 2) @ diff))
    return finish(torch.stack(scores), single)
