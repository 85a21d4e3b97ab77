"""Private helpers shared by the metric modules: array conversion, warnings and distributed dict results."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np
import torch

logger = logging.getLogger("monai_iqad.metrics")

__all__ = ["UndefinedMetricWarning", "Logistic4FitWarning", "to_numpy", "warn", "gather_and_compute", "compute_float"]


class UndefinedMetricWarning(RuntimeWarning):
    """A metric is undefined on the given data (constant scores, a single class…) and was returned as ``nan``."""


class Logistic4FitWarning(RuntimeWarning):
    """The 4-parameter logistic fit failed; the raw (unfitted) value was used instead."""


def warn(message: str, category: type[Warning] = UndefinedMetricWarning, stacklevel: int = 3) -> None:
    """Emit ``message`` as a Python warning (shown once per call site by Python's default filter) and log every
    occurrence at DEBUG on the ``monai_iqad.metrics`` logger (a WARNING-level log line would print it twice)."""
    warnings.warn(message, category, stacklevel=stacklevel)
    logger.debug(message)


def to_numpy(x: Any, dtype: Any = np.float64) -> np.ndarray:
    """Convert a tensor, array, number or (nested) list of those to a numpy array of ``dtype``.

    Lists of tensors (e.g. MONAI's decollated per-sample outputs) are concatenated after flattening each item when the
    items have different shapes, and stacked otherwise.
    """
    if isinstance(x, torch.Tensor):
        return x.detach().to(device="cpu", dtype=torch.float64).numpy().astype(dtype, copy=False)
    if isinstance(x, np.ndarray):
        return x.astype(dtype, copy=False)
    if isinstance(x, (list, tuple)) and any(isinstance(i, (torch.Tensor, np.ndarray, list, tuple)) for i in x):
        items = [to_numpy(i, dtype) for i in x]
        if len({i.shape for i in items}) == 1:
            return np.stack(items) if items else np.asarray([], dtype=dtype)
        return np.concatenate([i.reshape(-1) for i in items])
    return np.asarray(x, dtype=dtype)


def gather_and_compute(
    predictions: list[torch.Tensor],
    targets: list[torch.Tensor],
    fn: Callable[[torch.Tensor, torch.Tensor], dict[str, float]],
    keys: Sequence[str],
) -> dict[str, float]:
    """Concatenate, all-gather across processes (shards may differ in length), run ``fn`` on rank 0 and broadcast its
    dict to every rank.

    ``ignite.metrics.EpochMetric`` can only broadcast numbers; a dict result is sent as one float64 tensor whose
    entries follow ``keys`` (known on every rank), and ``n``-like integer entries are restored from their float.

    Args:
        predictions: per-update prediction tensors, concatenated along dim 0.
        targets: per-update target tensors, concatenated along dim 0.
        fn: ``fn(predictions, targets) -> dict`` with exactly ``keys``.
        keys: the result keys, in a fixed order.
    """
    import ignite.distributed as idist
    from monai.utils import evenly_divisible_all_gather

    pred = torch.cat(predictions, dim=0)
    target = torch.cat(targets, dim=0)
    ws = idist.get_world_size()
    if ws > 1:
        # evaluation shards differ in length (``even_divisible=False``: no image counted twice), which a plain
        # all_gather rejects; MONAI pads to the longest shard, gathers and trims
        pred = cast(torch.Tensor, evenly_divisible_all_gather(pred, concat=True))
        target = cast(torch.Tensor, evenly_divisible_all_gather(target, concat=True))
    result: dict[str, float] = {}
    if idist.get_rank() == 0:
        result = fn(pred, target)
    if ws <= 1:
        return result
    values = torch.tensor(
        [float(result[k]) for k in keys] if result else [0.0] * len(keys), dtype=torch.float64, device=idist.device()
    )
    values = cast(torch.Tensor, idist.broadcast(values, src=0)).cpu()
    return {k: (int(v) if k == "n" or k.startswith("n_") else float(v)) for k, v in zip(keys, values.tolist())}


def compute_float(metric: Any) -> float:
    """``EpochMetric.compute`` for a float ``metric.compute_fn``, broadcasting the result as float64.

    ``EpochMetric`` broadcasts a Python float through a float32 tensor, so in distributed runs the value would differ
    from the single-process one by ~1e-8; this keeps it exact. Raises ``NotComputableError`` before any update.
    """
    from ignite.exceptions import NotComputableError

    if len(metric._predictions) < 1:
        raise NotComputableError(f"{type(metric).__name__} must have at least one example before it can be computed.")
    if metric._result is None:
        out = gather_and_compute(
            metric._predictions, metric._targets, lambda p, t: {"value": metric.compute_fn(p, t)}, ("value",)
        )
        metric._result = float(out["value"])
    return metric._result
