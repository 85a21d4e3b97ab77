"""Loading checkpoints with explanations: resume a training run, or load trained weights for evaluation.

A missing file, a damaged one (empty, truncated, a text file, not written by ``torch.save``) and one that does not
match the network each fail with a :class:`~monai_iqad.utils.errors.CheckpointError` /
:class:`~monai_iqad.utils.errors.CheckpointNotFoundError` naming the file and saying what to do; a load is always
``weights_only=True`` and the advice to retry with ``weights_only=False`` (unsafe for a file of unknown origin) is
never passed on.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine
from ignite.handlers import Checkpoint
from monai.handlers import CheckpointLoader

from monai_iqad.utils.errors import CheckpointError, CheckpointNotFoundError

__all__ = [
    "ResumeCheckpointLoader",
    "TrainedModelLoader",
    "find_checkpoint",
    "require_model",
    "check_checkpoint_file",
    "load_weights",
]

RESUME_HINT = (
    "delete or move the damaged checkpoint and train again with --resume false (training restarts from epoch 0; "
    "models/model.pt, the best model so far, is kept)"
)
MODEL_HINT = "train the bundle again (configs/train.json writes models/model.pt), or copy a good model.pt into models/"


def find_checkpoint(save_dir: str | os.PathLike, filename: str = "checkpoint.pt") -> str:
    """Return the resume checkpoint of ``save_dir``, or raise ``CheckpointNotFoundError`` saying what to do.

    Raises:
        CheckpointNotFoundError: (a ``FileNotFoundError``) no such file.
    """
    path = Path(save_dir) / filename
    if not path.is_file():
        raise CheckpointNotFoundError(
            f"Cannot resume: no training checkpoint at {path}. Train without 'resume' first, "
            "or point 'ckpt_dir' to the folder of an interrupted run.",
            file=path,
            hint="run with --resume false to start training from epoch 0",
        )
    return str(path)


def require_model(path: str | os.PathLike) -> str:
    """Return ``path`` if trained weights exist there, else raise ``CheckpointNotFoundError`` saying what to do.

    A missing ``models/model.pt`` must fail with an explanation, never run silently with random weights.

    Raises:
        CheckpointNotFoundError: (a ``FileNotFoundError``) no such file.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointNotFoundError(
            f"No trained weights at {p}. Train the bundle first (configs/train.json writes the best validated model "
            "there), or copy a trained model.pt into the bundle's models/ folder.",
            file=p,
            hint=MODEL_HINT,
        )
    return str(p)


_PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04")


def _describe_head(head: bytes) -> str:
    """What a file that is not a zip archive looks like, from its first bytes."""
    if all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return "a text file"
    return "binary data that is not a torch.save zip archive"


def check_checkpoint_file(path: str | os.PathLike, hint: str = RESUME_HINT) -> str:
    """Check that ``path`` is a complete ``torch.save`` archive before loading it; return it.

    ``torch.save`` writes a zip archive: an empty file, a truncated one (no end-of-archive record, or a member that
    fails its CRC), a text file or any other non-zip file is reported here, naming the file, instead of
    ``PytorchStreamReader failed reading zip archive``, a bare ``EOFError`` or an unpickling error.

    Raises:
        CheckpointNotFoundError: no such file.
        CheckpointError: (a ``RuntimeError``) the file is damaged or not a checkpoint; ``hint`` says what to do.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointNotFoundError(f"{p}: checkpoint file not found", file=p, hint=hint)
    size = p.stat().st_size
    if size == 0:
        raise CheckpointError(
            f"{p}: the checkpoint is empty (0 bytes): an interrupted copy or save?", file=p, hint=hint
        )
    try:
        if not zipfile.is_zipfile(p):
            with open(p, "rb") as f:
                head = f.read(64)
            if head[:2] not in _PICKLE_MAGIC:
                raise CheckpointError(
                    f"{p}: not a PyTorch checkpoint ({size} bytes, truncated or {_describe_head(head)})",
                    file=p,
                    hint=hint,
                )
            return str(p)  # legacy torch.save format: torch.load (weights_only) decides
        with zipfile.ZipFile(p) as archive:
            bad = archive.testzip()
    except CheckpointError:
        raise
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as e:
        raise CheckpointError(f"{p}: the checkpoint is damaged ({type(e).__name__}: {e})", file=p, hint=hint) from e
    if bad is not None:
        raise CheckpointError(f"{p}: the checkpoint is damaged (member {bad!r} fails its CRC check)", file=p, hint=hint)
    return str(p)


def _refused(path: str | os.PathLike, e: pickle.UnpicklingError, hint: str) -> CheckpointError:
    """The error for a file whose objects the weights-only unpickler refused (never advise to disable it)."""
    return CheckpointError(
        f"{path}: holds objects that a safe (weights_only=True) load refuses: not a checkpoint written by "
        f"monai_iqad ({str(e).splitlines()[0][:200]})",
        file=path,
        hint=hint,
    )


def load_weights(path: str | os.PathLike, map_location: Any = "cpu", hint: str = MODEL_HINT) -> Any:
    """``torch.load(path, weights_only=True)`` after :func:`check_checkpoint_file`: a missing, damaged or unsafe file
    raises a :class:`CheckpointError` (or :class:`CheckpointNotFoundError`) naming it, with ``hint``."""
    check_checkpoint_file(path, hint)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise _refused(path, e, hint) from e


def _load_with_explanations(loader: CheckpointLoader, engine: Engine, hint: str) -> None:
    """Run ``CheckpointLoader.__call__`` turning load failures into :class:`CheckpointError` naming the file."""
    path = loader.load_path
    check_checkpoint_file(path, hint)
    try:
        CheckpointLoader.__call__(loader, engine)
    except pickle.UnpicklingError as e:
        raise _refused(path, e, hint) from e
    except (RuntimeError, EOFError) as e:
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        if "state_dict" in str(e) or "size mismatch" in str(e):
            if _is_router_state(path):
                hint = (
                    "it holds a SAQMRouter (one SAQM per expert, keys experts.<k>.*): score it with the bundle's "
                    "configs/inference.json, or load one expert into a SAQM with TrainedModelLoader(expert=k) "
                    "(the bundles' --finetune_expert k)"
                )
            elif _builds_router(loader):
                hint = (
                    "this config builds a SAQMRouter but the file holds one network: add the overlay "
                    "configs/single_saqm.json (medical_saqm_iqa) to score or evaluate a single SAQM"
                )
            else:
                hint = "use the settings (width, classes, channels) of the run that wrote it, or " + hint
            raise CheckpointError(
                f"{path}: does not match the network of this config ({first})", file=path, hint=hint
            ) from e
        if "PytorchStreamReader" in str(e) or isinstance(e, EOFError):
            raise CheckpointError(f"{path}: the checkpoint is damaged ({first})", file=path, hint=hint) from e
        raise


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
        _load_with_explanations(self, engine, RESUME_HINT)


def _is_router_state(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a :class:`~monai_iqad.networks.SAQMRouter` state dict (``route``, ``experts.<k>.*``)."""
    from monai_iqad.networks import SAQMRouter

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # only a hint for an error already being raised
        return False
    return SAQMRouter.is_state_dict(state)


def _builds_router(loader: CheckpointLoader) -> bool:
    """Whether the network that ``loader`` fills is a :class:`~monai_iqad.networks.SAQMRouter`."""
    from monai_iqad.networks import SAQMRouter

    return any(isinstance(getattr(o, "module", o), SAQMRouter) for o in loader.load_dict.values())


class TrainedModelLoader(CheckpointLoader):
    """``monai.handlers.CheckpointLoader`` for trained weights (``models/model.pt``) that fails with an explanation
    when the file is missing, instead of PyTorch's bare "No such file". Used by evaluation, inference and
    fine-tuning configs; a damaged or mismatched file fails with a :class:`CheckpointError` naming it.

    With ``expert=k`` the file is a :class:`~monai_iqad.networks.SAQMRouter` state dict and the weights of its
    expert ``k`` (a plain SAQM state dict, :meth:`~monai_iqad.networks.SAQMRouter.expert_state_dict`) are loaded into
    the one network of ``load_dict``, e.g. to fine-tune the generic expert of the shipped ``medical_saqm_iqa`` router.
    """

    def __init__(self, load_path: str, load_dict: dict, expert: int | None = None, **kwargs: Any) -> None:
        """
        Args:
            load_path, load_dict, kwargs: as ``monai.handlers.CheckpointLoader``.
            expert: load this expert of a router file instead of the whole file. Defaults to None (the whole file).

        Raises:
            ValueError: When ``expert`` is given and ``load_dict`` holds more than one object.
        """
        super().__init__(load_path=load_path, load_dict=load_dict, **kwargs)
        self.expert = None if expert is None else int(expert)
        if self.expert is not None and len(self.load_dict) != 1:
            raise ValueError(f"TrainedModelLoader(expert={expert}) loads one network, got {list(self.load_dict)}.")

    def __call__(self, engine: Engine) -> None:
        require_model(self.load_path)
        if self.expert is None:
            _load_with_explanations(self, engine, MODEL_HINT)
            return
        from monai_iqad.networks import SAQMRouter

        path = self.load_path
        state = load_weights(path, self.map_location, MODEL_HINT)
        whole = "load the whole file (expert None; the bundles' --finetune_expert '$None')"
        if not SAQMRouter.is_state_dict(state):
            raise CheckpointError(
                f"{path}: not a SAQMRouter state dict (no 'route' entry), so it has no expert {self.expert}",
                file=path,
                hint=whole,
            )
        try:
            weights = SAQMRouter.expert_state_dict(state, self.expert)
        except KeyError as e:
            raise CheckpointError(f"{path}: {e.args[0]}", file=path, hint="pick an expert the router has") from e
        (name,) = self.load_dict
        try:
            Checkpoint.load_objects(to_load=self.load_dict, checkpoint={name: weights}, strict=self.strict)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0][:300]
            raise CheckpointError(
                f"{path}: expert {self.expert} does not match the network of this config ({first})",
                file=path,
                hint="use the expert's settings (width, input channels: 3, or 3 + modality planes)",
            ) from e
        self.logger.info(f"Restored expert {self.expert} of {path}")
