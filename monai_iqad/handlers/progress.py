"""A console progress bar with ETA that switches itself off when output is not a terminal."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from ignite.engine import Engine
from ignite.handlers import ProgressBar

from monai_iqad.utils.dist import is_rank0

__all__ = ["ConsoleProgressBar"]


class ConsoleProgressBar:
    """Ignite's tqdm ``ProgressBar`` (epoch progress, rate and ETA) for trainers and evaluators.

    Disabled when stdout is not a TTY (CI logs, files, MONAI Label subprocesses) and on ranks other than 0, unless
    ``enabled`` forces it.

    Args:
        output_transform: maps ``engine.state.output`` to the values shown (e.g. the loss).
        enabled: ``None`` = auto (TTY and rank 0), or force on/off.
        desc: bar description.
    """

    def __init__(
        self,
        output_transform: Callable[[Any], Any] | None = None,
        enabled: bool | None = None,
        desc: str | None = None,
    ) -> None:
        self.output_transform = output_transform
        self.enabled = (sys.stdout.isatty() and is_rank0()) if enabled is None else bool(enabled)
        self.desc = desc

    def attach(self, engine: Engine) -> None:
        if not self.enabled:
            return
        bar = ProgressBar(persist=False, desc=self.desc or "")
        if self.output_transform is None:
            bar.attach(engine)
        else:
            bar.attach(engine, output_transform=self.output_transform)
