"""Loading checkpoints with explanations: resume a training run, or load trained weights for evaluation."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ignite.engine import Engine
from monai.handlers import CheckpointLoader

__all__ = ["ResumeCheckpointLoader", "TrainedModelLoader", "find_checkpoint", "require_model"]


def find_checkpoint(save_dir: str | os.PathLike, filename: str = "checkpoint.pt") -> str:
    """Return the resume checkpoint of ``save_dir``, or raise ``FileNotFoundError`` saying what to do."""
    path = Path(save_dir) / filename
    if not path.is_file():
        raise FileNotFoundError(
            f"Cannot resume: no training checkpoint at {path}. Train without 'resume' first, "
            "or point 'ckpt_dir' to the folder of an interrupted run."
        )
    return str(path)


def require_model(path: str | os.PathLike) -> str:
    """Return ``path`` if trained weights exist there, else raise ``FileNotFoundError`` saying what to do.

    A missing ``models/model.pt`` must fail with an explanation, never run silently with random weights.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"No trained weights at {p}. Train the bundle first (configs/train.json writes the best validated model "
            "there), or copy a trained model.pt into the bundle's models/ folder."
        )
    return str(p)


class ResumeCheckpointLoader(CheckpointLoader):
    """``monai.handlers.CheckpointLoader`` that also restores the engine it is attached to (epoch and iteration).

    Put it in a bundle's ``train#handlers`` guarded by ``"_disabled_": "$not @resume"``; the trainer is added to
    ``load_dict`` under ``trainer_key`` at attach time (the trainer cannot be referenced from its own handler list).
    MONAI's loader keeps the configured ``max_epochs``, so a resumed run stops at the same final epoch as an
    uninterrupted one. The file is looked up when training starts (MONAI evaluates the arguments of disabled
    components, so nothing is checked when the config is parsed).

    Args:
        load_path: checkpoint written by :class:`TrainingCheckpointSaver`.
        load_dict: objects to restore, keyed as in the checkpoint.
        trainer_key: key of the trainer state in the checkpoint.
        kwargs: other ``CheckpointLoader`` arguments (``map_location``, ``strict``…).
    """

    def __init__(self, load_path: str, load_dict: Mapping[str, Any], trainer_key: str = "trainer", **kwargs: Any):
        super().__init__(load_path=load_path, load_dict=dict(load_dict), **kwargs)
        self.trainer_key = trainer_key

    def attach(self, engine: Engine) -> None:
        self.load_dict.setdefault(self.trainer_key, engine)
        super().attach(engine)

    def __call__(self, engine: Engine) -> None:
        find_checkpoint(Path(self.load_path).parent, Path(self.load_path).name)
        super().__call__(engine)


class TrainedModelLoader(CheckpointLoader):
    """``monai.handlers.CheckpointLoader`` for trained weights (``models/model.pt``) that fails with an explanation
    when the file is missing, instead of PyTorch's bare "No such file". Used by evaluation, inference and
    fine-tuning configs."""

    def __call__(self, engine: Engine) -> None:
        require_model(self.load_path)
        super().__call__(engine)
