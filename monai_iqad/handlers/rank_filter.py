"""Keep console and TensorBoard logging on rank 0 only in multi-process runs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from monai.handlers import StatsHandler, TensorBoardStatsHandler

from monai_iqad.utils.dist import is_rank0

from .progress import ConsoleProgressBar

__all__ = ["for_this_rank", "LOGGING_HANDLERS"]

#: handler types that only rank 0 keeps (the project's own savers and figure handlers check the rank themselves)
LOGGING_HANDLERS: tuple[type, ...] = (StatsHandler, TensorBoardStatsHandler, ConsoleProgressBar)


def for_this_rank(handlers: Sequence[Any] | None) -> list[Any]:
    """``handlers`` on rank 0; without the console/TensorBoard logging handlers on the other ranks.

    Used by the ``multi_gpu_*.json`` overlays (``"train#trainer#train_handlers": "$monai_iqad.handlers.for_this_rank(
    @train#handlers)"``) so that ``torchrun`` runs print and log once, not once per process.
    """
    handlers = [h for h in (handlers or []) if h is not None]
    if is_rank0():
        return handlers
    return [h for h in handlers if not isinstance(h, LOGGING_HANDLERS)]
