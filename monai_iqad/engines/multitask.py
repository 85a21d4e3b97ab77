"""Baseline trainers of the MKCNet ablations: multi-task (diagnosis + quality) and diagnosis-only (vanilla)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents, default_metric_cmp_fn
from monai.transforms import Transform
from monai.utils import IgniteInfo, min_version, optional_import
from torch.optim.optimizer import Optimizer
from torch.utils.data import DataLoader

from monai_iqad.engines.meta_auxiliary import amp_enabled, check_finite, prepare_iqad_batch, to_loss_dtype
from monai_iqad.losses.focal import FocalLoss

if TYPE_CHECKING:
    from ignite.engine import EventEnum
    from ignite.metrics import Metric
else:
    Metric, _ = optional_import("ignite.metrics", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Metric")
    EventEnum, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "EventEnum")

__all__ = ["MultiTaskTrainer", "VanillaTrainer"]


class _IQADTrainer(SupervisedTrainer):
    """Shared constructor and single-step iteration of the baseline trainers (subclasses define the loss terms)."""

    uses_quality = True

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable | DataLoader,
        network: nn.Module,
        optimizer: Optimizer,
        loss_function: Callable | None = None,
        image_key: str = "image",
        diagnosis_key: str = "diagnosis",
        quality_key: str | None = "quality",
        epoch_length: int | None = None,
        non_blocking: bool = False,
        postprocessing: Transform | None = None,
        key_train_metric: dict[str, Metric] | None = None,
        additional_metrics: dict[str, Metric] | None = None,
        metric_cmp_fn: Callable = default_metric_cmp_fn,
        train_handlers: Sequence | None = None,
        amp: bool = False,
        event_names: list[str | EventEnum | type[EventEnum]] | None = None,
        event_to_attr: dict | None = None,
        decollate: bool = True,
        optim_set_to_none: bool = False,
        to_kwargs: dict | None = None,
        amp_kwargs: dict | None = None,
    ) -> None:
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=FocalLoss(gamma=2.0) if loss_function is None else loss_function,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            postprocessing=postprocessing,
            key_train_metric=key_train_metric,
            additional_metrics=additional_metrics,
            metric_cmp_fn=metric_cmp_fn,
            train_handlers=train_handlers,
            amp=amp,
            event_names=event_names,
            event_to_attr=event_to_attr,
            decollate=decollate,
            optim_set_to_none=optim_set_to_none,
            to_kwargs=to_kwargs,
            amp_kwargs=amp_kwargs,
        )
        self.image_key = image_key
        self.diagnosis_key = diagnosis_key
        self.quality_key = quality_key
        self.state.stage = 1
        self.state.learning_rate = optimizer.param_groups[0]["lr"]

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
        x, d, q = prepare_iqad_batch(
            batchdata,
            engine.state.device,
            engine.non_blocking,
            self.image_key,
            self.diagnosis_key,
            self.quality_key if self.uses_quality else None,
            **engine.to_kwargs,
        )
        if q is None and self.quality_key is not None and self.quality_key in batchdata:
            q = torch.as_tensor(batchdata[self.quality_key]).to(engine.state.device).long().reshape(-1)
        engine.state.learning_rate = engine.optimizer.param_groups[0]["lr"]
        output: dict[str, Any] = {"stage": 1, "label": d}
        if q is not None:
            output["quality"] = q
        engine.state.output = output
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        use_amp = amp_enabled(engine)
        if use_amp:
            with torch.autocast("cuda", **engine.amp_kwargs):
                logits = engine.network(x)
        else:
            logits = engine.network(x)
        pred = logits["diagnosis"] if isinstance(logits, Mapping) else logits
        output["pred"] = pred.detach()
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        terms = self._losses(logits, d, q)
        loss = sum(terms.values())
        output["loss"] = loss.detach()
        output.update({name: value.detach() for name, value in terms.items()})
        check_finite(engine, loss, "loss")
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        if use_amp:
            engine.scaler.scale(loss).backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            engine.scaler.step(engine.optimizer)
            engine.scaler.update()
        else:
            loss.backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            engine.optimizer.step()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


class MultiTaskTrainer(_IQADTrainer):
    """
    Multi-task ablation of MKCNet: the task net is trained with ``L_D + L_Q`` only (no meta learner, the auxiliary
    head is unused and receives no gradient).

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
        image_key, diagnosis_key, quality_key: batch keys. Default to ``"image"``, ``"diagnosis"``, ``"quality"``.
        epoch_length, non_blocking, postprocessing, key_train_metric, additional_metrics, metric_cmp_fn,
        train_handlers, amp, event_names, event_to_attr, decollate, optim_set_to_none, to_kwargs, amp_kwargs: as in
            :py:class:`monai.engines.SupervisedTrainer`.
    """

    def _losses(
        self, logits: Mapping[str, torch.Tensor] | torch.Tensor, d: torch.Tensor, q: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        if not isinstance(logits, Mapping):
            raise TypeError("MultiTaskTrainer needs a network returning a dict with 'diagnosis' and 'quality'.")
        return {
            "loss_d": self.loss_function(to_loss_dtype(logits["diagnosis"]), d),
            "loss_q": self.loss_function(to_loss_dtype(logits["quality"]), q),
        }


class VanillaTrainer(_IQADTrainer):
    """
    Vanilla diagnosis baseline of MKCNet: diagnosis-only loss ``L_D`` (focal, as in the official code). Works with
    :py:class:`~monai_iqad.networks.nets.VanillaNet` or with any network returning a ``"diagnosis"`` entry (e.g.
    ``MKCNet``, whose other heads then receive no gradient) or a plain logits tensor.

    Based on the baseline of: "Che, Chen, Chen, Image Quality-aware Diagnosis via Meta-knowledge Co-embedding,
    CVPR 2023, https://arxiv.org/abs/2303.15038".

    ``engine.state.output`` (before decollation): ``loss``, ``loss_d``, ``stage`` (always 1), ``pred``, ``label`` and,
    when the batch has it, ``quality``. The quality key is optional here.

    Args:
        device: device of the run.
        max_epochs: number of epochs.
        train_data_loader: loader of dict batches with image and diagnosis keys.
        network: network returning diagnosis logits (tensor) or a dict with ``"diagnosis"``.
        optimizer: optimizer of the network.
        loss_function: loss on ``(logits, labels)``. Defaults to ``FocalLoss(2.0)``.
        image_key, diagnosis_key, quality_key: batch keys. Default to ``"image"``, ``"diagnosis"``, ``"quality"``.
        epoch_length, non_blocking, postprocessing, key_train_metric, additional_metrics, metric_cmp_fn,
        train_handlers, amp, event_names, event_to_attr, decollate, optim_set_to_none, to_kwargs, amp_kwargs: as in
            :py:class:`monai.engines.SupervisedTrainer`.
    """

    uses_quality = False

    def _losses(
        self, logits: Mapping[str, torch.Tensor] | torch.Tensor, d: torch.Tensor, q: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        pred = logits["diagnosis"] if isinstance(logits, Mapping) else logits
        return {"loss_d": self.loss_function(to_loss_dtype(pred), d)}
