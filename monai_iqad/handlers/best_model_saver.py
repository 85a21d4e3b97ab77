"""Keep ``models/model.pt`` as the best model ever validated: a worse or failed run never replaces it."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from pathlib import Path

import torch
from ignite.engine import Engine, Events

from monai_iqad.utils.dist import is_rank0
from monai_iqad.utils.io import atomic_torch_save, atomic_write, atomic_write_json, remove_stale_temporaries

__all__ = ["BestModelSaver"]


class BestModelSaver:
    """Save the network's ``state_dict`` to ``save_dir/filename`` when the validation metric improves.

    Attach it to the evaluator. The score of the saved model is kept beside it in ``<filename>.json``
    (metric name, value, epoch, time), and is read back when a new run starts, so a new run only replaces the file
    with a model that beats every model saved before it — not just the earlier epochs of the same run. Non-finite
    metrics never count as an improvement. Files are written atomically (temporary file + rename); temporary files
    left by a killed run are removed when the evaluator first starts. Only rank 0 writes.

    ``model.pt`` holds a plain ``state_dict`` (no wrapper keys), the format ``monai.bundle ckpt_export`` and MONAI
    Label's ``BundleInferTask`` load directly.

    A ``model.pt`` found without a record (shipped with a bundle, downloaded or copied there: no run of this saver
    wrote it) has no score to beat, so the first validation replaces it; it is first copied to ``model.orig.pt``
    (``model.orig-1.pt``… when that exists), so training in a bundle's ``models/`` never loses the shipped weights.

    Args:
        save_dir: folder of the model (a bundle's ``models/``).
        network: the network to save (``DistributedDataParallel`` is unwrapped).
        metric_name: key of ``engine.state.metrics`` to compare (e.g. ``"srocc"`` or ``"auc"``).
        filename: model file name.
        greater_is_better: direction of the metric.
        overwrite: ignore the score of a model saved by an earlier run (start a new "best" from scratch).
        name: logger name.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        network: torch.nn.Module,
        metric_name: str,
        filename: str = "model.pt",
        greater_is_better: bool = True,
        overwrite: bool = False,
        name: str | None = None,
    ) -> None:
        self.save_dir = Path(save_dir)
        self.network = network
        self.metric_name = metric_name
        self.filename = filename
        self.greater_is_better = greater_is_better
        self.logger = logging.getLogger(name or __name__)
        self.best: float | None = None if overwrite else self._previous_best()
        self._unrecorded = self.path.is_file() and not self.record_path.is_file()
        self._cleaned = False

    @property
    def path(self) -> Path:
        return self.save_dir / self.filename

    @property
    def record_path(self) -> Path:
        return self.save_dir / f"{self.filename}.json"

    @property
    def backup_path(self) -> Path:
        """Where an unrecorded ``model.pt`` is kept before its first replacement (a name not yet taken)."""
        stem, suffix = Path(self.filename).stem, Path(self.filename).suffix
        candidate, k = self.save_dir / f"{stem}.orig{suffix}", 0
        while candidate.exists():
            k += 1
            candidate = self.save_dir / f"{stem}.orig-{k}{suffix}"
        return candidate

    def _keep_unrecorded(self) -> None:
        """Copy an unrecorded ``model.pt`` to :attr:`backup_path` (atomically: temporary file + rename), once."""
        if not (self._unrecorded and self.path.is_file()):
            return
        backup = self.backup_path
        with open(self.path, "rb") as src:
            atomic_write(backup, lambda dst: shutil.copyfileobj(src, dst))
        self._unrecorded = False
        self.logger.warning(
            f"{self.path} has no score record (not written by a training run, e.g. shipped weights); "
            f"kept as {backup} before it is replaced"
        )

    def _previous_best(self) -> float | None:
        if not (self.path.is_file() and self.record_path.is_file()):
            return None
        try:
            record = json.loads(self.record_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if record.get("metric") != self.metric_name:
            return None
        value = record.get("value")
        return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None

    def _better(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.best is None:
            return True
        return value > self.best if self.greater_is_better else value < self.best

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.remove_stale_temporaries)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def remove_stale_temporaries(self, engine: Engine | None = None) -> None:
        """Delete the temporary files of ``model.pt`` / ``model.pt.json`` and of the backup of an unrecorded model
        (its first free name, the one a killed copy was writing) left by a killed save (rank 0, once)."""
        if is_rank0() and not self._cleaned:
            for path in (self.path, self.record_path, self.backup_path):
                remove_stale_temporaries(path)
            self._cleaned = True

    def __call__(self, engine: Engine) -> None:
        if self.metric_name not in engine.state.metrics:
            raise KeyError(
                f"BestModelSaver: metric '{self.metric_name}' is not computed by the evaluator "
                f"(available: {sorted(engine.state.metrics)})."
            )
        value = float(engine.state.metrics[self.metric_name])
        if not self._better(value):
            return
        self.best = value
        if not is_rank0():
            return
        net = self.network
        if isinstance(net, torch.nn.parallel.DistributedDataParallel):
            net = net.module
        self._keep_unrecorded()
        atomic_torch_save(net.state_dict(), self.path)
        atomic_write_json(
            self.record_path,
            {"metric": self.metric_name, "value": value, "epoch": int(engine.state.epoch), "time": time.time()},
        )
        self.logger.info(f"New best model ({self.metric_name}={value:.4f}) saved to {self.path}")
