"""Per-epoch reseeding so that a resumed run replays exactly what an uninterrupted run would have done."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ignite.engine import Engine, Events
from monai.utils import set_determinism

__all__ = ["EpochSeedHandler"]


class EpochSeedHandler:
    """At every epoch start, seed Python, NumPy, torch and the given MONAI transforms with ``seed + epoch``.

    Random crops, dropout masks and shuffles then depend only on (seed, epoch, weights), not on how many epochs
    ran in this process, which makes ``resume`` bit-identical to an uninterrupted run on CPU.

    Args:
        seed: base seed.
        transforms: MONAI ``Randomizable`` transforms (e.g. a dataset's ``Compose``) to reseed.
        deterministic_algorithms: also ask torch for deterministic kernels.
    """

    def __init__(self, seed: int = 0, transforms: Sequence[Any] | Any = (), deterministic_algorithms: bool = False):
        self.seed = int(seed)
        transforms = transforms if isinstance(transforms, Sequence) else [transforms]
        self.transforms = [t for t in transforms if t is not None]
        self.deterministic_algorithms = deterministic_algorithms

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        seed = self.seed + int(engine.state.epoch)
        set_determinism(seed=seed, use_deterministic_algorithms=self.deterministic_algorithms or None)
        for t in self.transforms:
            if hasattr(t, "set_random_state"):
                t.set_random_state(seed=seed)
