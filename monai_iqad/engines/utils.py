"""Small engine helpers."""

from __future__ import annotations

import math

__all__ = ["finite_metric_cmp"]


def finite_metric_cmp(current_metric: float, prev_best: float) -> bool:
    """``metric_cmp_fn`` for MONAI workflows that never keeps a NaN as the best metric.

    MONAI records the first validation as the best whatever its value; with the default ``current > best`` a NaN
    there (e.g. a correlation of constant early predictions) would then block every later improvement. Here a
    finite value always beats a non-finite best, and a non-finite value never counts as an improvement.
    """
    current, prev = float(current_metric), float(prev_best)
    if not math.isfinite(current):
        return False
    return not math.isfinite(prev) or current > prev
