"""The training step shared by the trainers: autocast (AMP), gradient scaling, the non-finite loss check, events."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from monai.engines.utils import IterationEvents
from torch.optim.optimizer import Optimizer

from monai_iqad.utils.cpu import warn_if_emulated_cpu_bf16

__all__ = [
    "AMP_DTYPES",
    "amp_settings",
    "supervised_trainer_kwargs",
    "autocast",
    "grad_scaler",
    "loss_scaling",
    "run_trainer",
    "check_finite",
    "to_loss_dtype",
    "training_step",
]

#: ``amp_dtype`` values accepted by the trainers and evaluators.
AMP_DTYPES: dict[str, torch.dtype] = {"bfloat16": torch.bfloat16, "float16": torch.float16}

#: ``SupervisedTrainer`` arguments the MKCNet trainers' own iterations do not use: passing one is a TypeError.
UNSUPPORTED_ARGS: tuple[str, ...] = ("iteration_update", "inferer", "compile", "compile_kwargs", "accumulation_steps")


def amp_settings(
    amp: bool, amp_kwargs: Mapping[str, Any] | None, amp_dtype: str | torch.dtype | None
) -> tuple[bool, dict[str, Any]]:
    """
    MONAI's ``(amp, amp_kwargs)`` with the trainers' ``amp_dtype`` option folded in.

    ``amp_dtype`` (``"bfloat16"``, ``"float16"`` or the torch dtype) switches autocast on for *any* device (on a CPU,
    ``"bfloat16"`` is the useful one), with that dtype. ``amp_dtype=None`` keeps MONAI's meaning of ``amp=True``:
    autocast on CUDA only (its default dtype, float16, with gradient scaling), ignored elsewhere.

    Raises:
        ValueError: When ``amp_dtype`` is not one of :data:`AMP_DTYPES`.
    """
    kwargs = dict(amp_kwargs or {})
    if amp_dtype is None:
        return bool(amp), kwargs
    if isinstance(amp_dtype, str):
        if amp_dtype not in AMP_DTYPES:
            raise ValueError(f"amp_dtype must be one of {sorted(AMP_DTYPES)} or None, got {amp_dtype!r}.")
        amp_dtype = AMP_DTYPES[amp_dtype]
    if amp_dtype not in AMP_DTYPES.values():
        raise ValueError(f"amp_dtype must be one of {sorted(AMP_DTYPES)} or None, got {amp_dtype!r}.")
    kwargs["dtype"] = amp_dtype
    return True, kwargs


def supervised_trainer_kwargs(
    trainer: str,
    trainer_kwargs: Mapping[str, Any],
    amp_dtype: str | torch.dtype | None = None,
    unsupported: Sequence[str] = (),
) -> dict[str, Any]:
    """
    The keyword arguments a trainer forwards to :py:class:`monai.engines.SupervisedTrainer`: ``trainer_kwargs``
    (the caller's ``**trainer_kwargs``) with ``amp`` and ``amp_kwargs`` resolved by :func:`amp_settings`.

    Args:
        trainer: name of the trainer, for the error message.
        trainer_kwargs: ``SupervisedTrainer`` keyword arguments (``epoch_length``, ``amp``, ``train_handlers``...).
        amp_dtype: the trainer's ``amp_dtype`` option (see :func:`amp_settings`).
        unsupported: ``SupervisedTrainer`` arguments the trainer's own iteration does not honour (rejected rather
            than silently ignored).

    Raises:
        TypeError: When ``trainer_kwargs`` holds an argument of ``unsupported``.
        ValueError: When ``amp_dtype`` is not one of :data:`AMP_DTYPES`.
    """
    rejected = sorted(set(trainer_kwargs) & set(unsupported))
    if rejected:
        raise TypeError(f"{trainer} does not support the SupervisedTrainer argument(s) {rejected}.")
    kwargs = dict(trainer_kwargs)
    kwargs["amp"], kwargs["amp_kwargs"] = amp_settings(kwargs.get("amp", False), kwargs.get("amp_kwargs"), amp_dtype)
    return kwargs


def loss_scaling(device: str | torch.device, amp: bool, amp_kwargs: Mapping[str, Any]) -> bool:
    """True for float16 autocast on CUDA, the only setting whose loss needs a ``GradScaler``."""
    dtype = amp_kwargs.get("dtype", torch.float16)
    return bool(amp) and torch.device(device).type == "cuda" and dtype in (None, torch.float16)


def run_trainer(trainer: Any) -> None:
    """
    MONAI's ``Trainer.run`` for ``trainer``, except that the ``GradScaler`` it builds for every run whenever ``amp``
    is on is built only where :func:`loss_scaling` holds: with bfloat16 autocast on a CPU it would never be used and
    only warns that CUDA is not available.
    """
    from monai.engines.workflow import Workflow

    scaling = loss_scaling(trainer.state.device, trainer.amp, trainer.amp_kwargs)
    trainer.scaler = torch.amp.GradScaler("cuda") if scaling else None
    Workflow.run(trainer)


def _autocast_device(engine: Any) -> str | None:
    """Device type autocast runs on for ``engine`` (None: autocast off)."""
    if not engine.amp or engine.state.device is None:
        return None
    device_type = torch.device(engine.state.device).type
    if device_type == "cuda" or "dtype" in engine.amp_kwargs:
        return device_type
    return None


def autocast(engine: Any) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``engine`` (see :func:`amp_settings`), or a null context when AMP is off."""
    device_type = _autocast_device(engine)
    if device_type is None:
        return contextlib.nullcontext()
    if device_type == "cpu" and engine.amp_kwargs.get("dtype") == torch.bfloat16:
        warn_if_emulated_cpu_bf16(type(engine).__name__)
    return torch.autocast(device_type, **engine.amp_kwargs)


def grad_scaler(engine: Any) -> Any:
    """``engine.scaler`` when the loss must be scaled (float16 autocast on CUDA), else None."""
    if _autocast_device(engine) != "cuda" or engine.amp_kwargs.get("dtype", torch.float16) != torch.float16:
        return None
    return getattr(engine, "scaler", None)


def check_finite(engine: Any, value: torch.Tensor, name: str, terms: Mapping[str, Any] | None = None) -> None:
    """
    Raise ``FloatingPointError`` naming the epoch and iteration when ``value`` is not finite.

    Args:
        engine: the running engine (its ``state.epoch`` and ``state.iteration`` are named).
        value: the loss.
        name: what the loss is, e.g. ``"task loss"``.
        terms: loss terms listed in the message.

    Raises:
        FloatingPointError: When ``value`` holds a NaN or an infinity.
    """
    if bool(torch.isfinite(value.detach()).all()):
        return
    listed = ""
    terms = {k: v for k, v in (terms or {}).items() if k != "loss"}
    if terms:
        parts = [f"{k}={float(torch.as_tensor(v).detach().float().mean()):.6g}" for k, v in terms.items()]
        listed = f" ({', '.join(parts)})" if parts else ""
    raise FloatingPointError(
        f"non-finite {name} {value.detach().float().cpu().tolist()}{listed} at epoch {engine.state.epoch}, "
        f"iteration {engine.state.iteration}."
    )


def to_loss_dtype(t: torch.Tensor) -> torch.Tensor:
    """Cast half-precision tensors to float32 for the losses; float32/float64 are kept."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def training_step(
    engine: Any,
    compute: Callable[[], Mapping[str, torch.Tensor]],
    optimizer: Optimizer | None = None,
    name: str = "loss",
    zero_grad: bool = True,
    step: bool = True,
    accumulation_steps: int = 1,
) -> dict[str, torch.Tensor]:
    """
    One optimisation step: ``zero_grad``, ``compute()`` under autocast, non-finite check, (scaled) backward, step.

    ``compute`` runs the forward pass and returns the loss terms as one dict whose ``"loss"`` entry is the objective
    to minimise (fire ``FORWARD_COMPLETED`` inside it, after the forward); the other entries are logged as they are.
    ``LOSS_COMPLETED`` fires after the check, ``BACKWARD_COMPLETED`` after the backward.

    Args:
        engine: a MONAI trainer (``amp``, ``amp_kwargs``, ``scaler``, ``optim_set_to_none``, ``state``).
        compute: ``() -> {"loss": scalar, **terms}``.
        optimizer: the optimizer to step. Defaults to ``engine.optimizer``.
        name: what the loss is, for the error message. Defaults to ``"loss"``.
        zero_grad: zero the gradients first (False while accumulating). Defaults to True.
        step: step the optimizer after the backward (False while accumulating). Defaults to True.
        accumulation_steps: the loss is divided by this before the backward. Defaults to 1.

    Returns:
        the terms, detached, ``"loss"`` included.

    Raises:
        KeyError: When ``compute`` returns no ``"loss"``.
        FloatingPointError: When the loss is not finite (the message names the epoch, iteration and the terms).
    """
    optimizer = engine.optimizer if optimizer is None else optimizer
    if zero_grad:
        optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
    with autocast(engine):
        terms = compute()
    if "loss" not in terms:
        raise KeyError(f"the loss terms must include 'loss', got {sorted(terms)}.")
    loss = terms["loss"]
    check_finite(engine, loss, name, terms)
    engine.fire_event(IterationEvents.LOSS_COMPLETED)
    scaled = loss / accumulation_steps if accumulation_steps > 1 else loss
    scaler = grad_scaler(engine)
    (scaler.scale(scaled) if scaler is not None else scaled).backward()
    engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
    if step:
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
    return {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in terms.items()}
