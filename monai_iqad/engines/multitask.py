"""Baseline trainers of the MKCNet ablations: multi-task (diagnosis + quality) and diagnosis-only (vanilla)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
import torch.nn as nn
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from torch.optim.optimizer import Optimizer
from torch.utils.data import DataLoader

from monai_iqad.engines.prepare_batch import PrepareIQADBatch
from monai_iqad.engines.step import (
    UNSUPPORTED_ARGS,
    run_trainer,
    supervised_trainer_kwargs,
    to_loss_dtype,
    training_step,
)
from monai_iqad.losses.focal import FocalLoss

__all__ = ["MultiTaskTrainer", "VanillaTrainer"]


class _IQADTrainer(SupervisedTrainer):
    """Shared constructor and single-step iteration of the baseline trainers (subclasses define the loss terms)."""

    #: read the quality labels: True (required), None (when the batch has them)
    uses_quality: bool | None = True

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable | DataLoader,
        network: nn.Module,
        optimizer: Optimizer,
        loss_function: Callable | None = None,
        amp_dtype: str | torch.dtype | None = None,
        *,
        prepare_batch: Callable | None = None,
        **trainer_kwargs: Any,
    ) -> None:
        loss = FocalLoss(gamma=2.0) if loss_function is None else loss_function
        kwargs = supervised_trainer_kwargs(type(self).__name__, trainer_kwargs, amp_dtype, UNSUPPORTED_ARGS)
        kwargs["prepare_batch"] = PrepareIQADBatch(self.uses_quality) if prepare_batch is None else prepare_batch
        super().__init__(device, max_epochs, train_data_loader, network, optimizer, loss, **kwargs)
        self.state.stage = 1
        self.state.learning_rate = optimizer.param_groups[0]["lr"]

    def run(self) -> None:  # type: ignore[override]
        """Run the training (MONAI's ``Trainer.run``, with a ``GradScaler`` only for float16 autocast on CUDA)."""
        run_trainer(self)

    def _losses(
        self, logits: Mapping[str, torch.Tensor] | torch.Tensor, d: torch.Tensor, q: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _iteration(self, engine: Any, batchdata: dict[str, torch.Tensor]) -> dict:
        """
        One training step on the summed loss terms of ``_losses``.

        Raises:
            ValueError: When ``batchdata`` is None or a label is out of range.
            KeyError: When a batch key is missing.
            FloatingPointError: When the loss is not finite.
        """
        x, d, q = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        engine.state.learning_rate = engine.optimizer.param_groups[0]["lr"]
        output: dict[str, Any] = {"stage": 1, "label": d}
        if q is not None:
            output["quality"] = q
        engine.state.output = output
        engine.network.train()

        def _compute() -> dict[str, torch.Tensor]:
            logits = engine.network(x)
            output["pred"] = (logits["diagnosis"] if isinstance(logits, Mapping) else logits).detach()
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            return self._losses(logits, d, q)

        output.update(training_step(engine, _compute))
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


class MultiTaskTrainer(_IQADTrainer):
    """
    Multi-task ablation of MKCNet: the task net is trained with ``L_D + λ_Q L_Q`` only (no meta learner, the
    auxiliary head is unused and receives no gradient). See ``docs/mkcnet.md``.

    Based on the ablation of: "Che, Chen, Chen, Image Quality-aware Diagnosis via Meta-knowledge Co-embedding,
    CVPR 2023, https://arxiv.org/abs/2303.15038".

    ``engine.state.output`` (before decollation): ``loss``, ``loss_d``, ``loss_q``, ``stage`` (always 1), ``pred``
    (diagnosis logits), ``label`` (diagnosis) and ``quality``. With ``DistributedDataParallel`` the caller must pass
    ``find_unused_parameters=True`` (the auxiliary head is unused).

    Args:
        device: device of the run.
        max_epochs: number of epochs.
        train_data_loader: loader of dict batches with image, diagnosis and quality keys.
        network: network returning ``{"diagnosis", "quality", ...}`` logits (e.g. ``MKCNet``).
        optimizer: optimizer of the network (official: ``SGD(lr=0.01, weight_decay=5e-4)``).
        loss_function: loss on ``(logits, labels)``. Defaults to ``FocalLoss(2.0)``.
        quality_weight: ``λ_Q``. Defaults to 1.0 (paper).
        amp_dtype: ``"bfloat16"``/``"float16"``: autocast on any device (None: MONAI's ``amp``, CUDA only).
        prepare_batch: defaults to :class:`~monai_iqad.engines.PrepareIQADBatch`.
        trainer_kwargs: other keyword arguments: those of :py:class:`monai.engines.SupervisedTrainer`
            (``epoch_length``, ``non_blocking``, ``postprocessing``, ``key_train_metric``, ``train_handlers``,
            ``amp``, ``amp_kwargs``, ...), except ``iteration_update``, ``inferer``, ``compile``, ``compile_kwargs``
            and ``accumulation_steps``, which this trainer's iteration does not use (TypeError).
    """

    def __init__(self, *args: Any, quality_weight: float = 1.0, **kwargs: Any) -> None:
        if not quality_weight >= 0:
            raise ValueError(f"quality_weight must be non-negative, got {quality_weight}.")
        super().__init__(*args, **kwargs)
        self.quality_weight = float(quality_weight)

    def _losses(
        self, logits: Mapping[str, torch.Tensor] | torch.Tensor, d: torch.Tensor, q: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        if not isinstance(logits, Mapping):
            raise TypeError("MultiTaskTrainer needs a network returning a dict with 'diagnosis' and 'quality'.")
        loss_d = self.loss_function(to_loss_dtype(logits["diagnosis"]), d)
        loss_q = self.loss_function(to_loss_dtype(logits["quality"]), q)
        return {"loss": loss_d + self.quality_weight * loss_q, "loss_d": loss_d, "loss_q": loss_q}


class VanillaTrainer(_IQADTrainer):
    """
    Vanilla diagnosis baseline of MKCNet: diagnosis-only loss ``L_D`` (focal, as in the official code). Works with
    :py:class:`~monai_iqad.networks.nets.VanillaNet` or with any network returning a ``"diagnosis"`` entry (e.g.
    ``MKCNet``, whose other heads then receive no gradient) or a plain logits tensor.

    Based on the baseline of: "Che, Chen, Chen, Image Quality-aware Diagnosis via Meta-knowledge Co-embedding,
    CVPR 2023, https://arxiv.org/abs/2303.15038". See ``docs/mkcnet.md``.

    ``engine.state.output`` (before decollation): ``loss``, ``loss_d``, ``stage`` (always 1), ``pred``, ``label`` and,
    when the batch has it, ``quality``. The quality key is optional here.

    Args:
        device: device of the run.
        max_epochs: number of epochs.
        train_data_loader: loader of dict batches with image and diagnosis keys.
        network: network returning diagnosis logits (tensor) or a dict with ``"diagnosis"``.
        optimizer: optimizer of the network.
        loss_function: loss on ``(logits, labels)``. Defaults to ``FocalLoss(2.0)``.
        amp_dtype: ``"bfloat16"``/``"float16"``: autocast on any device (None: MONAI's ``amp``, CUDA only).
        prepare_batch: defaults to :class:`~monai_iqad.engines.PrepareIQADBatch` (quality read when present).
        trainer_kwargs: other keyword arguments: those of :py:class:`monai.engines.SupervisedTrainer`
            (``epoch_length``, ``non_blocking``, ``postprocessing``, ``key_train_metric``, ``train_handlers``,
            ``amp``, ``amp_kwargs``, ...), except ``iteration_update``, ``inferer``, ``compile``, ``compile_kwargs``
            and ``accumulation_steps``, which this trainer's iteration does not use (TypeError).
    """

    uses_quality = None

    def _losses(
        self, logits: Mapping[str, torch.Tensor] | torch.Tensor, d: torch.Tensor, q: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        pred = logits["diagnosis"] if isinstance(logits, Mapping) else logits
        loss_d = self.loss_function(to_loss_dtype(pred), d)
        return {"loss": loss_d, "loss_d": loss_d}
