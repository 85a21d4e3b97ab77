"""Stop training with a clear error on a non-finite loss."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.handlers import from_engine

__all__ = ["NaNLossGuard"]


class NaNLossGuard:
    """Raise ``FloatingPointError`` as soon as the training loss is NaN or infinite.

    Ignite's ``TerminateOnNan`` stops quietly and lets the run end as if it had finished; here the run fails loudly,
    naming the epoch and iteration, and — since savers only write at epoch ends — the last good checkpoint and the
    best model stay as they were.

    Args:
        output_transform: maps ``engine.state.output`` to the loss; default: the ``loss`` of the first item.
    """

    def __init__(self, output_transform: Callable[[Any], Any] | None = None) -> None:
        self.output_transform = output_transform or from_engine(["loss"], first=True)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        value = self.output_transform(engine.state.output)
        if isinstance(value, (list, tuple)):
            value = value[0]
        value = float(value.detach().float().mean()) if isinstance(value, torch.Tensor) else float(value)
        if not math.isfinite(value):
            raise FloatingPointError(
                f"Non-finite training loss ({value}) at epoch {engine.state.epoch}, "
                f"iteration {engine.state.iteration}. "
                "Training stopped; the last checkpoint and the best model were not modified. Lower the learning rate, "
                "disable AMP, or check the input data for NaNs."
            )
