"""Base class for handlers that look at a whole evaluation epoch (figures, CSV files)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from torch.utils.tensorboard import SummaryWriter

from monai_iqad.utils.dist import is_dist, is_rank0

__all__ = ["EpochOutputCollector", "as_scalar"]


def as_scalar(value: Any) -> float:
    """Mean of a tensor, array or number as a float (decollated outputs turn 0-d tensors into Python numbers)."""
    return float(torch.as_tensor(value).detach().float().mean())


def _to_cpu(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.detach().cpu().as_tensor() if hasattr(v, "as_tensor") else v.detach().cpu()
    return v


class EpochOutputCollector:
    """Collect per-sample outputs of an evaluator epoch, gather them on rank 0 and hand them to :meth:`finalize`.

    Subclasses implement :meth:`select` (which per-sample fields to keep, from one decollated output item) and
    :meth:`finalize` (what to do with all of them). TensorBoard writers are created lazily, only on rank 0.

    Args:
        summary_writer: an existing ``SummaryWriter``; otherwise one is created on ``log_dir`` when first needed.
        log_dir: TensorBoard folder.
        global_step_transform: maps the engine to the TensorBoard step (default: its epoch, which under MONAI's
            ``ValidationHandler`` is the trainer's epoch).
    """

    def __init__(
        self,
        summary_writer: SummaryWriter | None = None,
        log_dir: str = "./runs",
        global_step_transform: Callable[[Engine], int] | None = None,
    ) -> None:
        self._writer = summary_writer
        self.log_dir = log_dir
        self.global_step_transform = global_step_transform or (lambda e: int(e.state.epoch))
        self.items: list[Any] = []

    @property
    def writer(self) -> SummaryWriter:
        if self._writer is None:
            self._writer = SummaryWriter(log_dir=self.log_dir)
        return self._writer

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._complete)

    def _reset(self, engine: Engine) -> None:
        self.items = []

    def _collect(self, engine: Engine) -> None:
        output = engine.state.output
        batch = engine.state.batch
        outputs = output if isinstance(output, list) else [output]
        batches = batch if isinstance(batch, list) else [batch] * len(outputs)
        for out, b in zip(outputs, batches):
            picked = self.select(out, b)
            if picked is not None:
                self.items.append({k: _to_cpu(v) for k, v in picked.items()})

    def _complete(self, engine: Engine) -> None:
        items = self.items
        if is_dist():
            gathered: list[list[Any]] = [[] for _ in range(dist.get_world_size())]
            dist.all_gather_object(gathered, items)
            items = [x for part in gathered for x in part]
        if is_rank0() and items:
            self.finalize(engine, items)
            if self._writer is not None:
                self._writer.flush()
        self.items = []

    def select(self, output: dict[str, Any], batch: dict[str, Any]) -> dict[str, Any] | None:
        raise NotImplementedError

    def finalize(self, engine: Engine, items: Sequence[dict[str, Any]]) -> None:
        raise NotImplementedError
