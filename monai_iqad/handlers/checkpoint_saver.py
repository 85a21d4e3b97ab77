"""Atomic, resumable training checkpoints."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from monai_iqad.utils.dist import is_rank0
from monai_iqad.utils.io import atomic_torch_save, remove_stale_temporaries

__all__ = ["TrainingCheckpointSaver"]


class TrainingCheckpointSaver:
    """Save everything needed to resume training (networks, optimizers, schedulers, trainer state) atomically.

    Unlike ``monai.handlers.CheckpointSaver`` (which writes in place), the file is written to a temporary file in
    the same folder and renamed, so an interrupted or crashing run never leaves a truncated checkpoint behind: the
    previous checkpoint stays valid until the new one is complete; the temporary files that a killed run leaves
    behind (``.checkpoint.pt.*.tmp``) are removed when training starts, and a failed save (disk full) removes its own
    and raises a ``FileWriteError`` naming the path. The file name is fixed (``checkpoint.pt`` by
    default) so that a ``resume`` flag can load it without searching. Only rank 0 writes.

    The checkpoint is a dict keyed like ``save_dict`` holding ``state_dict()`` of each object, the format that
    ``monai.handlers.CheckpointLoader`` reads back (``trainer`` restores epoch and iteration counters).

    Args:
        save_dir: folder of the checkpoint.
        save_dict: objects to save, e.g. ``{"network": net, "optimizer": opt}``; anything with ``state_dict()``.
            A ``torch.nn.parallel.DistributedDataParallel`` is unwrapped.
        filename: checkpoint file name.
        trainer_key: the engine this handler is attached to is saved under this key (``None``: not saved). This
            avoids a circular reference in bundle configs, where the trainer takes the handler list as an argument.
        interval: save every ``interval`` epochs (and always at the end of training).
        name: logger name.

    Raises:
        ValueError: when ``save_dict`` is empty or ``interval`` < 1.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        save_dict: Mapping[str, Any],
        filename: str = "checkpoint.pt",
        interval: int = 1,
        trainer_key: str | None = "trainer",
        name: str | None = None,
    ) -> None:
        if not save_dict:
            raise ValueError("save_dict must name at least one object to save.")
        if interval < 1:
            raise ValueError(f"interval must be >= 1, got {interval}.")
        self.save_dir = Path(save_dir)
        self.save_dict = dict(save_dict)
        self.filename = filename
        self.interval = interval
        self.trainer_key = trainer_key
        self.logger = logging.getLogger(name or __name__)

    @property
    def path(self) -> Path:
        return self.save_dir / self.filename

    def attach(self, engine: Engine) -> None:
        if self.trainer_key is not None:
            self.save_dict.setdefault(self.trainer_key, engine)
        engine.add_event_handler(Events.STARTED, self.remove_stale_temporaries)
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)

    def remove_stale_temporaries(self, engine: Engine | None = None) -> None:
        """Delete ``.<filename>.*.tmp`` files left by a killed save (rank 0 only)."""
        if is_rank0():
            remove_stale_temporaries(self.path)

    def state(self) -> dict[str, Any]:
        out = {}
        for key, obj in self.save_dict.items():
            obj = obj.module if isinstance(obj, torch.nn.parallel.DistributedDataParallel) else obj
            out[key] = obj.state_dict()
        return out

    def __call__(self, engine: Engine) -> None:
        if not is_rank0():
            return
        atomic_torch_save(self.state(), self.path)
        self.logger.info(f"Saved training checkpoint (epoch {engine.state.epoch}) to {self.path}")
