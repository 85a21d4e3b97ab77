"""Log optimizer learning rates to TensorBoard."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from ignite.engine import Engine, Events
from torch.utils.tensorboard import SummaryWriter

from monai_iqad.utils.dist import is_rank0

__all__ = ["LearningRateLogger"]


class LearningRateLogger:
    """Write the learning rate of every optimizer param group as ``<prefix><name>`` (``/group<i>`` if several).

    Args:
        optimizers: ``{"task": optimizer, "meta": meta_optimizer}``.
        summary_writer: an existing writer; otherwise one is created on ``log_dir``.
        log_dir: TensorBoard folder when no writer is given.
        prefix: tag prefix.
        epoch_level: log at epoch ends (default) or every iteration.
    """

    def __init__(
        self,
        optimizers: Mapping[str, torch.optim.Optimizer],
        summary_writer: SummaryWriter | None = None,
        log_dir: str = "./runs",
        prefix: str = "lr/",
        epoch_level: bool = True,
    ) -> None:
        self.optimizers = dict(optimizers)
        self._writer = summary_writer
        self.log_dir = log_dir
        self.prefix = prefix
        self.epoch_level = epoch_level

    @property
    def writer(self) -> SummaryWriter:
        if self._writer is None:
            self._writer = SummaryWriter(log_dir=self.log_dir)
        return self._writer

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED if self.epoch_level else Events.ITERATION_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        if not is_rank0():
            return
        step = engine.state.epoch if self.epoch_level else engine.state.iteration
        for name, opt in self.optimizers.items():
            groups = opt.param_groups
            for i, g in enumerate(groups):
                tag = f"{self.prefix}{name}" + (f"/group{i}" if len(groups) > 1 else "")
                self.writer.add_scalar(tag, float(g["lr"]), step)
        self.writer.flush()
