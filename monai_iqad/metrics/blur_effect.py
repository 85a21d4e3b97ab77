"""Blur effect, the perceptual blur metric of Crete-Roffet et al. (higher is blurrier, 0..1).

Re-implementation based on: F. Crete-Roffet, T. Dolmiere, P. Ladret, M. Nicolas, "The Blur Effect: Perception and
Estimation with a New No-Reference Perceptual Blur Metric", SPIE Human Vision and Electronic Imaging XII, 2007, as
computed by scikit-image's ``skimage.measure.blur_effect`` (default ``h_size=11``, maximum over the two axes): the
image is re-blurred with an 11-tap box filter along each axis, and the blur is the relative loss of absolute Sobel
gradient variation that the re-blurring causes (a sharp image loses much, a blurred one little). Colour is reduced to
BT.709 luma (scikit-image ``rgb2gray``); borders are half-sample mirrored (``scipy.ndimage`` ``reflect``); two
border rows/columns are left out of the sums as in scikit-image.
"""

from __future__ import annotations

from typing import Any

import torch

from monai_iqad.metrics.nss import LUMA_BT709, as_batch, filter2d, finish, to_luma

__all__ = ["blur_effect"]


def blur_effect(image: Any, data_range: float = 255.0, h_size: int = 11) -> torch.Tensor | float:
    """Blur effect of each image (higher is blurrier; 0 sharp .. 1 fully blurred).

    Args:
        image: ``(C, H, W)`` or ``(B, C, H, W)`` tensor or array, ``C`` = 1 or 3 (RGB), values in
            ``[0, data_range]``; RGB is reduced to BT.709 luma (scikit-image ``rgb2gray``).
        data_range: the value of white (the metric is a ratio, so only the luma weights depend on it).
        h_size: length of the re-blurring box filter (11, scikit-image's default and the paper's value).

    Returns:
        ``(B,)`` float32 tensor, or a Python float for a single ``(C, H, W)``/``(H, W)`` image. NaN for a
        constant image.

    Raises:
        ValueError: bad shape or values, ``h_size`` < 1, or an image smaller than 4x4.
    """
    if h_size < 1:
        raise ValueError(f"h_size must be >= 1, got {h_size}")
    x, single = as_batch(image, "blur_effect")
    if min(x.shape[-2:]) < 4:
        raise ValueError(f"blur_effect needs an image of at least 4x4 pixels, got shape {tuple(x.shape)}")
    y = to_luma(x, LUMA_BT709, data_range) / 255.0
    box = torch.full((h_size,), 1.0 / h_size, dtype=torch.float64)
    edge = torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64)
    smooth = torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64) / 4
    h, w = y.shape[-2:]
    inner = (..., slice(2, h - 1), slice(2, w - 1))
    blurs = []
    for axis in (0, 1):  # gradient and re-blurring along rows (axis 0), then along columns (axis 1)
        reblur = box[:, None] if axis == 0 else box[None, :]
        sobel = torch.outer(edge, smooth) if axis == 0 else torch.outer(smooth, edge)
        sharp = filter2d(y, sobel, "symmetric").abs()
        soft = filter2d(filter2d(y, reblur, "symmetric"), sobel, "symmetric").abs()
        m1 = sharp[inner].flatten(1).sum(-1)
        m2 = (sharp - soft).clamp(min=0)[inner].flatten(1).sum(-1)
        blurs.append((m1 - m2).abs() / m1)
    return finish(torch.stack(blurs, dim=-1).amax(dim=-1), single)
