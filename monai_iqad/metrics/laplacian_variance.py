"""Variance of the Laplacian, a sharpness measure (higher is sharper; lower is blurrier).

Based on: J. L. Pech-Pacheco, G. Cristobal, J. Chamorro-Martinez, J. Fernandez-Valdivia, "Diatom autofocusing in
brightfield microscopy: a comparative study", ICPR 2000 (the ``LAP4`` focus measure), in its common OpenCV form
``cv2.Laplacian(gray, cv2.CV_64F).var()``: BT.601 luma on the 0..255 scale, the 4-neighbour Laplacian
``[[0, 1, 0], [1, -4, 1], [0, 1, 0]]`` with OpenCV's default border (``BORDER_REFLECT_101``), and the population
variance of the response over the whole image. The value grows with the square of contrast and with noise.
"""

from __future__ import annotations

from typing import Any

import torch

from monai_iqad.metrics.nss import LUMA_BT601, as_batch, filter2d, finish, to_luma

__all__ = ["laplacian_variance"]

_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)


def laplacian_variance(image: Any, data_range: float = 255.0) -> torch.Tensor | float:
    """Variance of the Laplacian of each image (higher is sharper).

    Args:
        image: ``(C, H, W)`` or ``(B, C, H, W)`` tensor or array, ``C`` = 1 or 3 (RGB), values in
            ``[0, data_range]``; RGB is reduced to BT.601 luma (OpenCV ``COLOR_RGB2GRAY``).
        data_range: the value of white; the image is put on the 0..255 scale first, so the value is comparable with
            the usual 8-bit OpenCV figure.

    Returns:
        ``(B,)`` float32 tensor, or a Python float for a single ``(C, H, W)``/``(H, W)`` image.

    Raises:
        ValueError: bad shape or values, or an image smaller than 2x2 (the reflected border needs 2 pixels).
    """
    x, single = as_batch(image, "laplacian_variance")
    if min(x.shape[-2:]) < 2:
        raise ValueError(f"laplacian_variance needs an image of at least 2x2 pixels, got shape {tuple(x.shape)}")
    response = filter2d(to_luma(x, LUMA_BT601, data_range), _LAPLACIAN, "reflect")
    return finish(response.flatten(1).var(dim=-1, correction=0), single)
