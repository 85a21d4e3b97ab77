"""Registry of the classic no-reference IQA metrics: ``NR_IQA_METRICS[name]`` -> :class:`NRIQAMetric`.

The keys are the names of ``monai-iqad score --metric``: ``niqe``, ``brisque``, ``piqe``, ``lapvar`` (variance of
the Laplacian) and ``blur`` (blur effect). Each entry records the function and whether a lower score means a better
image (``lower_better``; negate such scores before correlating them with MOS, as pyiqa does). See
``docs/metrics.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from monai_iqad.metrics.blur_effect import blur_effect
from monai_iqad.metrics.brisque import brisque
from monai_iqad.metrics.laplacian_variance import laplacian_variance
from monai_iqad.metrics.niqe import niqe
from monai_iqad.metrics.piqe import piqe

__all__ = ["NRIQAMetric", "NR_IQA_METRICS"]


@dataclass(frozen=True)
class NRIQAMetric:
    """One classic NR-IQA metric.

    Attributes:
        name: registry key (``--metric`` name).
        fn: ``fn(image, data_range=255.0) -> (B,) tensor | float`` on ``(C, H, W)`` or ``(B, C, H, W)`` images.
        lower_better: True when a lower score means a better image.
        min_size: smallest image side the metric accepts.
        description: one line for help texts.
    """

    name: str
    fn: Callable[..., torch.Tensor | float]
    lower_better: bool
    min_size: int
    description: str

    def __call__(self, image: Any, data_range: float = 255.0) -> torch.Tensor | float:
        return self.fn(image, data_range=data_range)


NR_IQA_METRICS: dict[str, NRIQAMetric] = {
    m.name: m
    for m in (
        NRIQAMetric("niqe", niqe, True, 96, "NIQE (Mittal et al. 2013), LIVE pristine model"),
        NRIQAMetric("brisque", brisque, True, 8, "BRISQUE (Mittal et al. 2012), brisque 0.2.0 SVR"),
        NRIQAMetric("piqe", piqe, True, 1, "PIQE (Venkatanath et al. 2015), MATLAB piqe"),
        NRIQAMetric("lapvar", laplacian_variance, False, 2, "variance of the Laplacian (higher is sharper)"),
        NRIQAMetric("blur", blur_effect, True, 4, "blur effect (Crete-Roffet et al. 2007, higher is blurrier)"),
    )
}
