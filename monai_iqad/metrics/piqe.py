"""PIQE, the Perception-based Image Quality Evaluator (lower is better, 0..100).

Re-implementation of PIQE based on: N. Venkatanath, D. Praneeth, M. C. Bh, S. S. Channappayya, S. S. Medasani,
"Blind Image Quality Evaluation Using Perception Based Features", NCC 2015, following MATLAB's ``piqe`` (Image
Processing Toolbox) as ported by ``pypiqe`` (MIT) and pyiqa: gray/BT.601 luma, symmetric padding to whole 16x16 blocks,
rescaling to ``round(255 * x / max(x))``, MSCN (7x7 Gaussian, sigma 7/6, replicated borders, C = 1); a block is active
when its MSCN variance exceeds 0.1; an active block is distorted by "noticeable artifacts" when a 6-pixel segment of
one of its edges has a standard deviation below 0.1, and by noise when its standard deviation exceeds twice the
centre-surround deviation criterion (MATLAB's centre/surround columns, including its choice of surround). The score
is ``100 * (sum of block distortions + 1) / (number of active blocks + 1)``. No model file is needed.
"""

from __future__ import annotations

from typing import Any

import torch

from monai_iqad.metrics.nss import LUMA_BT601, as_batch, finish, gaussian_window, mscn, to_luma

__all__ = ["piqe"]

BLOCK = 16
ACTIVITY_THRESHOLD = 0.1
IMPAIRED_THRESHOLD = 0.1
SEGMENT = 6


def _std(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return x.std(dim=dim, correction=1)


def piqe(image: Any, data_range: float = 255.0) -> torch.Tensor | float:
    """PIQE score of each image (lower is better; 0..100, 100 for a uniform image).

    Args:
        image: ``(C, H, W)`` or ``(B, C, H, W)`` tensor or array, ``C`` = 1 or 3 (RGB). RGB is reduced to BT.601 luma
            (MATLAB ``rgb2gray``; MATLAB rounds it for 8-bit input, we do not: on the TID2013 calibration images the
            scores still agree with MATLAB's to 5e-4).
        data_range: the value of white. The score does not depend on the intensity scale (each image is rescaled
            by its maximum); the argument keeps the signature of the other metrics.

    Returns:
        ``(B,)`` float32 tensor, or a Python float for a single ``(C, H, W)``/``(H, W)`` image.

    Raises:
        ValueError: bad shape or values.
    """
    x, single = as_batch(image, "piqe")
    y = to_luma(x, LUMA_BT601, data_range)
    b, _, h, w = y.shape
    pad_h, pad_w = (-h) % BLOCK, (-w) % BLOCK
    if pad_h or pad_w:  # MATLAB padarray(..., 'symmetric', 'post')
        rows = torch.cat([torch.arange(h), torch.arange(h - 1, h - 1 - pad_h, -1)])
        cols = torch.cat([torch.arange(w), torch.arange(w - 1, w - 1 - pad_w, -1)])
        y = y[..., rows[:, None], cols[None, :]]
    peak = y.amax(dim=(1, 2, 3), keepdim=True)
    y = torch.round(255 * y / peak)
    norm = mscn(y, gaussian_window(7, 7.0 / 6.0), 1.0, "replicate")[:, 0]
    nh, nw = norm.shape[1] // BLOCK, norm.shape[2] // BLOCK
    blocks = norm.reshape(b, nh, BLOCK, nw, BLOCK).transpose(2, 3).reshape(b, nh * nw, BLOCK, BLOCK)
    var = blocks.flatten(2).var(dim=-1, correction=1)
    active = var > ACTIVITY_THRESHOLD
    # noticeable artifacts: any 6-pixel segment of the four block edges with a low standard deviation
    edges = torch.stack([blocks[..., 0, :], blocks[..., :, -1], blocks[..., -1, :], blocks[..., :, 0]], dim=2)
    segments = edges.unfold(-1, SEGMENT, 1)  # (b, n, 4, 11, 6)
    impaired = (_std(segments) < IMPAIRED_THRESHOLD).flatten(2).any(dim=-1)
    # noise: block std against the centre-surround deviation (MATLAB's columns 8, 9 vs all but 8 and 10, 1-based)
    c1 = (BLOCK - 1 + 1) // 2 - 1
    centre = blocks[..., :, c1 : c1 + 2].transpose(-1, -2).flatten(2)
    keep = [j for j in range(BLOCK) if j not in (c1, c1 + 2)]
    surround = blocks[..., :, keep].flatten(2)
    ratio = torch.nan_to_num(_std(centre) / _std(surround), nan=0.0, posinf=float("inf"))
    sigma = var.sqrt()
    beta = (sigma - ratio).abs() / torch.maximum(sigma, ratio)
    noisy = sigma > 2 * beta
    dist = active * (impaired * (1 - var) + noisy * var)
    dist = torch.where(active, dist, torch.zeros_like(dist))
    score = (dist.sum(-1) + 1) / (active.sum(-1) + 1) * 100
    return finish(score, single)
