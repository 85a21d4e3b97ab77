"""Two-stage meta-auxiliary training of MKCNet (task net θ, meta learner φ) as one MONAI/Ignite trainer."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence, Sized
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn
from monai.data import MetaTensor
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents, default_metric_cmp_fn
from monai.transforms import Transform
from monai.utils import IgniteInfo, min_version, optional_import
from torch.func import functional_call
from torch.optim.optimizer import Optimizer
from torch.utils.data import DataLoader

from monai_iqad.losses.entropy import EntropyRegularizer
from monai_iqad.losses.focal import FocalLoss
from monai_iqad.utils.dist import all_reduce_gradients, average_buffers, unwrap_module

if TYPE_CHECKING:
    from ignite.engine import EventEnum
    from ignite.metrics import Metric
else:
    Metric, _ = optional_import("ignite.metrics", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Metric")
    EventEnum, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "EventEnum")
Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = ["MetaAuxiliaryTrainer", "prepare_iqad_batch"]

SCHEDULES = ("epoch", "iteration")
META_GRADIENTS = ("second_order", "first_order")


def prepare_iqad_batch(
    batchdata: Mapping[str, Any],
    device: torch.device | str | None,
    non_blocking: bool = False,
    image_key: str = "image",
    diagnosis_key: str = "diagnosis",
    quality_key: str | None = "quality",
    **to_kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """
    Move an IQAD batch dict to ``device``: image as a plain tensor (a ``MetaTensor`` is unwrapped, its metadata is not
    needed by the trainers), labels as ``long``.

    Args:
        batchdata: dict with ``image_key`` ``(B, C, H, W)`` and integer ``diagnosis_key``/``quality_key`` ``(B,)``.
        device: target device.
        non_blocking: asynchronous host-to-device copy.
        image_key: key of the images. Defaults to ``"image"``.
        diagnosis_key: key of the diagnosis labels. Defaults to ``"diagnosis"``.
        quality_key: key of the quality labels, or None to skip them. Defaults to ``"quality"``.
        to_kwargs: extra arguments of ``Tensor.to`` for the image.

    Returns:
        ``(image, diagnosis, quality)``; ``quality`` is None when ``quality_key`` is None.

    Raises:
        ValueError: When ``batchdata`` is None.
        KeyError: When a key is missing (the message lists the batch keys).
    """
    if batchdata is None:
        raise ValueError("Must provide batch data for current iteration.")
    for key in (image_key, diagnosis_key, quality_key):
        if key is not None and key not in batchdata:
            raise KeyError(f"batch has no key {key!r}; its keys are {sorted(batchdata)}.")

    def _label(value: Any) -> torch.Tensor:
        value = value.as_tensor() if isinstance(value, MetaTensor) else torch.as_tensor(value)
        return value.to(device=device, non_blocking=non_blocking).long().reshape(-1)

    image = batchdata[image_key]
    image = image.as_tensor() if isinstance(image, MetaTensor) else torch.as_tensor(image)
    image = image.to(device=device, non_blocking=non_blocking, **to_kwargs)
    quality = _label(batchdata[quality_key]) if quality_key is not None else None
    return image, _label(batchdata[diagnosis_key]), quality


def check_finite(engine: Any, value: torch.Tensor, name: str) -> None:
    """
    Raise ``FloatingPointError`` naming the epoch and iteration when ``value`` is not finite.

    Raises:
        FloatingPointError: When ``value`` holds a NaN or an infinity.
    """
    if not bool(torch.isfinite(value.detach()).all()):
        raise FloatingPointError(
            f"non-finite {name} ({value.detach().float().cpu().tolist()}) at epoch {engine.state.epoch}, "
            f"iteration {engine.state.iteration}."
        )


def to_loss_dtype(t: torch.Tensor) -> torch.Tensor:
    """Cast half-precision tensors to float32 for the losses; float32/float64 are kept."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def amp_enabled(engine: Any) -> bool:
    device = engine.state.device
    return bool(engine.amp and engine.scaler is not None and device is not None and torch.device(device).type == "cuda")


class MetaAuxiliaryTrainer(SupervisedTrainer):
    """
    Meta-auxiliary training of MKCNet: stage I updates the task net ``θ`` with the diagnosis, quality and auxiliary
    losses; stage II updates the meta learner ``φ`` through a pseudo-updated task net ``θ̃`` (MAXL-style
    second-order meta-gradient).

    Re-implementation of the training algorithm of: "Che, Chen, Chen, Image Quality-aware Diagnosis via
    Meta-knowledge Co-embedding, CVPR 2023, https://arxiv.org/abs/2303.15038" (official ``utils/train.py:
    train_MKCNet`` and ``model/MKCNet.py: ComputeFirstOrder``), itself based on MAXL ("Liu, Davison, Johns,
    Self-Supervised Generalisation with Meta Auxiliary Learning, NeurIPS 2019").

    With ``L = loss_function`` (focal, γ = 2), ``y_ω = M_φ(x, y_d, y_q)`` and ``k`` auxiliary classes per joint class:

    - **Stage I** (θ only): ``L_θ = L(d, y_d) + L(q, y_q) + L(ω, y_ω) / k`` at θ; ``optimizer.step()``. ``y_ω`` is
      computed under ``torch.no_grad()`` (the official code built, and discarded, a graph through the meta learner;
      the updates are identical).
    - **Stage II, second order** (φ only): ``ℓ(θ, φ) = L_θ`` (module forward in train mode, as in the official code,
      so the task net's BN running statistics are updated once); ``g = ∇_θ ℓ`` with ``create_graph=True``;
      ``θ̃ = θ - α (g + wd · θ)`` with ``α``/``wd`` the current learning rate and weight decay of the task optimizer
      (per parameter group; one group in the paper, α = its current LR); ``L_φ = L(d(θ̃), y_d) + L(q(θ̃), y_q) +
      λ_R · R(y_ω)`` with ``R = Σ p̄ log p̄`` (:py:class:`~monai_iqad.losses.EntropyRegularizer`). The ``θ̃`` forward
      is ``torch.func.functional_call`` of the *same* module in train mode with **cloned** buffers, so batch norm uses
      batch statistics and the real running statistics are untouched (the official functional forward passes dummy
      buffers with ``training=True``). ``∇_φ L_φ`` is computed with ``torch.autograd.grad`` (θ gets no gradient)
      and ``meta_optimizer.step()`` is called. ``L_Ω`` is not part of the meta objective.
    - **Stage II, first order** (``meta_gradient="first_order"``, DARTS-style finite differences, official
      ``FirstOrder_MKCNet``): ``θ' = θ - α (g + wd · θ)`` (no graph); ``d = ∇_θ' [L_D + L_Q](θ')``;
      ``v = α d``, ``ε = fd_epsilon / ‖v‖``, ``θ± = θ ± ε v``;
      ``φ.grad = -(∇_φ ℓ(θ+, φ) - ∇_φ ℓ(θ-, φ)) / (2ε) + ∇_φ λ_R R``. With one parameter group this is exactly the
      official ``-α · hv`` with ``ε = 0.01 / ‖d‖`` (the ``θ``-space step has norm ``fd_epsilon`` either way). All
      of ``θ'``, ``θ±`` are functional calls (no deep copy, real buffers untouched); only ``L_Ω`` depends on φ, so
      the two gradients are taken in one backward through the meta learner.

    Schedules: ``"epoch"`` (default, official) runs, in each Ignite epoch, stage I over the whole loader and then
    stage II over it again: ``epoch_length`` defaults to ``2 * len(train_data_loader)`` (Ignite re-creates the data
    iterator when it is exhausted mid-epoch, so a shuffling loader gives a new order for stage II; bundles must use a
    ``CacheDataset`` so that this second pass does not decode the images again) and iteration
    ``i`` of an epoch is stage I iff ``(i - 1) mod epoch_length < epoch_length // 2``. ``"iteration"`` runs stage I
    and then stage II on the same batch in every iteration (one data load, and one meta-learner forward shared by
    both stages: φ is the same in both, stage I uses ``y_ω`` detached). LR schedulers (official: ``StepLR`` per
    epoch for both optimizers) are ordinary handlers.

    Options: ``official_meta_forward=True`` reproduces the official functional-forward quirks in the ``θ̃`` forward
    of the second-order meta step (see :py:class:`~monai_iqad.networks.nets.MKCNet`); the first-order variant ignores
    it (the official first-order code used the module forward). AMP (CUDA only) applies to stage I; stage II runs in
    full precision (double backward). Distributed: the caller may wrap the task net in ``DistributedDataParallel``;
    stage I uses the wrapper, stage II its ``.module`` (DDP does not support double backward), and the meta
    learner's gradients are all-reduced (averaged) by hand before ``meta_optimizer.step()`` when the world size is
    above 1 (the meta learner should therefore *not* be wrapped, or is unwrapped here).

    ``engine.state.output`` (before decollation) is a dict with ``loss`` (the task objective ``ℓ = L_θ`` at θ, in both
    stages), ``loss_d``, ``loss_q``, ``loss_aux`` (``L_Ω / k``), ``loss_meta`` (``L_φ``; 0.0 in stage I),
    ``entropy`` (``R``, the *negative* entropy of the batch-mean ``y_ω``), ``stage`` (1 or 2; 2 in the
    ``"iteration"`` schedule, whose output is the stage-II one), ``pred`` (diagnosis logits at θ), ``label``
    (diagnosis) and ``quality``. ``engine.state.stage``, ``engine.state.learning_rate`` and
    ``engine.state.meta_learning_rate`` are updated every iteration. The events ``FORWARD_COMPLETED``,
    ``LOSS_COMPLETED`` and ``BACKWARD_COMPLETED`` fire once per stage run, ``MODEL_COMPLETED`` once per iteration.

    Args:
        device: device of the run.
        max_epochs: number of epochs.
        train_data_loader: loader of dict batches ``{image_key: (B, C, H, W), diagnosis_key: (B,), quality_key: (B,)}``.
        network: task net ``M_θ`` returning ``{"diagnosis", "quality", "auxiliary"}`` logits (e.g. ``MKCNet``),
            possibly DDP-wrapped.
        optimizer: optimizer of θ (official: ``SGD(lr=0.01, weight_decay=5e-4)``, no momentum).
        meta_learner: meta learner ``M_φ(x, diagnosis, quality) → y_ω`` (e.g. ``MetaLearner``).
        meta_optimizer: optimizer of φ (official: ``SGD(lr=META_LR, weight_decay=5e-4)``).
        loss_function: loss on ``(logits, target)`` accepting index and soft targets. Defaults to ``FocalLoss(2.0)``.
        entropy_weight: ``λ_R``. Defaults to 0.3 (DeepDR/CXR-IQAD; 0.5 DRAC, 0.2 EyeQ/CT-IQAD).
        aux_per_class: ``k``; None reads ``meta_learner.k`` or ``network.aux_per_class``. Defaults to None.
        schedule: ``"epoch"`` or ``"iteration"``. Defaults to ``"epoch"``.
        meta_gradient: ``"second_order"`` or ``"first_order"``. Defaults to ``"second_order"``.
        official_meta_forward: official functional-forward quirks in the second-order ``θ̃`` forward. Defaults False.
        fd_epsilon: θ-space step of the first-order finite differences. Defaults to 0.01 (official).
        entropy_regularizer: callable ``R(y_ω)``. Defaults to ``EntropyRegularizer()``.
        image_key: batch key of the images. Defaults to ``"image"``.
        diagnosis_key: batch key of the diagnosis labels. Defaults to ``"diagnosis"``.
        quality_key: batch key of the quality labels. Defaults to ``"quality"``.
        epoch_length: iterations per epoch; defaults to ``2 * len(loader)`` (``"epoch"``) or ``len(loader)``.
        non_blocking, postprocessing, key_train_metric, additional_metrics, metric_cmp_fn, train_handlers, amp,
        event_names, event_to_attr, decollate, optim_set_to_none, to_kwargs, amp_kwargs: as in
            :py:class:`monai.engines.SupervisedTrainer`.

    Raises:
        ValueError: When ``schedule`` or ``meta_gradient`` is unknown, ``entropy_weight`` is negative,
            ``fd_epsilon`` is not positive, ``k`` cannot be found, or the ``"epoch"`` schedule has neither a sized
            loader nor an even ``epoch_length``.
        FloatingPointError: (at run time) when a loss is not finite; the message names the epoch and iteration.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable | DataLoader,
        network: nn.Module,
        optimizer: Optimizer,
        meta_learner: nn.Module,
        meta_optimizer: Optimizer,
        loss_function: Callable | None = None,
        entropy_weight: float = 0.3,
        aux_per_class: int | None = None,
        schedule: str = "epoch",
        meta_gradient: str = "second_order",
        official_meta_forward: bool = False,
        fd_epsilon: float = 0.01,
        entropy_regularizer: Callable | None = None,
        image_key: str = "image",
        diagnosis_key: str = "diagnosis",
        quality_key: str = "quality",
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
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}.")
        if meta_gradient not in META_GRADIENTS:
            raise ValueError(f"meta_gradient must be one of {META_GRADIENTS}, got {meta_gradient!r}.")
        if entropy_weight < 0:
            raise ValueError(f"entropy_weight must be non-negative, got {entropy_weight}.")
        if fd_epsilon <= 0:
            raise ValueError(f"fd_epsilon must be positive, got {fd_epsilon}.")
        if aux_per_class is None:
            aux_per_class = getattr(unwrap_module(meta_learner), "k", None)
            if aux_per_class is None:
                aux_per_class = getattr(unwrap_module(network), "aux_per_class", None)
        if aux_per_class is None or int(aux_per_class) < 1:
            raise ValueError(f"aux_per_class (k) must be a positive integer, got {aux_per_class}.")

        if schedule == "epoch":
            if epoch_length is None:
                if not isinstance(train_data_loader, Sized):
                    raise ValueError("schedule='epoch' needs a sized train_data_loader or an explicit epoch_length.")
                epoch_length = 2 * len(train_data_loader)
            if epoch_length < 2 or epoch_length % 2:
                raise ValueError(
                    f"schedule='epoch' needs an even epoch_length >= 2 (stage I + stage II), got {epoch_length}."
                )
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
        self.meta_learner = meta_learner
        self.meta_optimizer = meta_optimizer
        self.entropy_weight = float(entropy_weight)
        self.aux_per_class = int(aux_per_class)
        self.schedule = schedule
        self.meta_gradient = meta_gradient
        self.official_meta_forward = official_meta_forward
        self.fd_epsilon = float(fd_epsilon)
        self.entropy_regularizer = EntropyRegularizer() if entropy_regularizer is None else entropy_regularizer
        self.image_key = image_key
        self.diagnosis_key = diagnosis_key
        self.quality_key = quality_key
        self.state.stage = 1
        # the meta learner is not wrapped in DDP: keep its BatchNorm statistics identical on every rank
        self.add_event_handler(Events.EPOCH_COMPLETED, self._sync_meta_buffers)
        self.state.learning_rate = optimizer.param_groups[0]["lr"]
        self.state.meta_learning_rate = meta_optimizer.param_groups[0]["lr"]

    def _sync_meta_buffers(self, engine: MetaAuxiliaryTrainer) -> None:
        """End of epoch: the meta learner is not wrapped in DDP, so its BatchNorm statistics are averaged by hand."""
        average_buffers(unwrap_module(self.meta_learner))

    # ------------------------------------------------------------------------------------------------------------
    def current_stage(self) -> int:
        """Stage of the current iteration under the ``"epoch"`` schedule (1 or 2); 2 under ``"iteration"``."""
        if self.schedule == "iteration":
            return 2
        epoch_length = self.state.epoch_length
        return 1 if (self.state.iteration - 1) % epoch_length < epoch_length // 2 else 2

    def _task_losses(
        self, logits: Mapping[str, torch.Tensor], diagnosis: torch.Tensor, quality: torch.Tensor, y_w: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``L_D``, ``L_Q`` and ``L_Ω / k`` (computed in float32 or wider)."""
        loss_d = self.loss_function(to_loss_dtype(logits["diagnosis"]), diagnosis)
        loss_q = self.loss_function(to_loss_dtype(logits["quality"]), quality)
        loss_aux = self.loss_function(to_loss_dtype(logits["auxiliary"]), to_loss_dtype(y_w)) / self.aux_per_class
        return loss_d, loss_q, loss_aux

    def _hyper_params(self) -> dict[int, tuple[float, float]]:
        """``id(param) → (lr, weight_decay)`` of the task optimizer's parameter groups."""
        table: dict[int, tuple[float, float]] = {}
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                table[id(p)] = (float(group["lr"]), float(group.get("weight_decay", 0.0)))
        return table

    @staticmethod
    def _functional_forward(
        module: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor, **kwargs: Any
    ) -> dict[str, torch.Tensor]:
        """Forward with replaced parameters and *cloned* buffers (the real BN running statistics stay untouched)."""
        buffers = {name: b.clone() for name, b in module.named_buffers()}
        return functional_call(module, {**params, **buffers}, (x,), kwargs)

    # ------------------------------------------------------------------------------------------------------------
    def _task_step(
        self,
        engine: MetaAuxiliaryTrainer,
        x: torch.Tensor,
        d: torch.Tensor,
        q: torch.Tensor,
        y_w: torch.Tensor | None = None,
    ) -> dict:
        """
        Stage I: update θ with ``L_D + L_Q + L_Ω / k``; φ is only evaluated (no graph).

        Args:
            y_w: this batch's ``y_ω`` when the caller already computed it at the current φ (the ``"iteration"``
                schedule shares one meta-learner forward between its two stages); it is used detached. None
                computes it here under ``torch.no_grad()``.
        """
        network = engine.network
        network.train()
        if y_w is None:
            meta_learner = engine.meta_learner
            meta_learner.train()
            with torch.no_grad():
                y_w = meta_learner(x, d, q)
        else:
            y_w = y_w.detach()
        output: dict[str, Any] = {"stage": 1, "label": d, "quality": q}
        engine.state.output = output
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        use_amp = amp_enabled(engine)
        if use_amp:
            with torch.autocast("cuda", **engine.amp_kwargs):
                logits = network(x)
        else:
            logits = network(x)
        output["pred"] = logits["diagnosis"].detach()
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        loss_d, loss_q, loss_aux = self._task_losses(logits, d, q, y_w)
        loss = loss_d + loss_q + loss_aux
        output.update(
            loss=loss.detach(),
            loss_d=loss_d.detach(),
            loss_q=loss_q.detach(),
            loss_aux=loss_aux.detach(),
            loss_meta=0.0,
            entropy=self.entropy_regularizer(y_w).detach(),
        )
        check_finite(engine, loss, "task loss")
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
        return output

    def _meta_step(
        self,
        engine: MetaAuxiliaryTrainer,
        x: torch.Tensor,
        d: torch.Tensor,
        q: torch.Tensor,
        y_w: torch.Tensor | None = None,
    ) -> dict:
        """
        Stage II: update φ through the pseudo-updated task net; θ and the real BN buffers are not changed.

        Args:
            y_w: this batch's ``y_ω`` at the current φ, **with** its graph (shared by the ``"iteration"`` schedule);
                None computes it here.
        """
        network, meta_learner = unwrap_module(engine.network), unwrap_module(engine.meta_learner)
        network.train()
        meta_learner.train()
        output: dict[str, Any] = {"stage": 2, "label": d, "quality": q}
        engine.state.output = output
        engine.meta_optimizer.zero_grad(set_to_none=engine.optim_set_to_none)

        if y_w is None:
            y_w = meta_learner(x, d, q)
        entropy = self.entropy_regularizer(y_w)
        logits = network(x)  # module forward at θ: BN running statistics are updated here (official behaviour)
        output["pred"] = logits["diagnosis"].detach()
        loss_d, loss_q, loss_aux = self._task_losses(logits, d, q, y_w)
        ell = loss_d + loss_q + loss_aux
        output.update(loss=ell.detach(), loss_d=loss_d.detach(), loss_q=loss_q.detach(), loss_aux=loss_aux.detach())
        check_finite(engine, ell, "task loss")

        names, thetas = zip(*[(n, p) for n, p in network.named_parameters() if p.requires_grad])
        hyper = self._hyper_params()
        phis = [p for p in meta_learner.parameters() if p.requires_grad]
        if self.meta_gradient == "second_order":
            grads = torch.autograd.grad(ell, thetas, create_graph=True, allow_unused=True)
            fast = {}
            for name, p, g in zip(names, thetas, grads):
                lr, wd = hyper.get(id(p), (0.0, 0.0))
                step = wd * p if g is None else g + wd * p
                fast[name] = p - lr * step
            quirks = {"official_meta_forward": True} if self.official_meta_forward else {}
            out_fast = self._functional_forward(network, fast, x, **quirks)
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            loss_meta = (
                self.loss_function(to_loss_dtype(out_fast["diagnosis"]), d)
                + self.loss_function(to_loss_dtype(out_fast["quality"]), q)
                + self.entropy_weight * entropy
            )
            check_finite(engine, loss_meta, "meta loss")
            engine.fire_event(IterationEvents.LOSS_COMPLETED)
            phi_grads = torch.autograd.grad(loss_meta, phis, allow_unused=True)
        else:
            loss_meta, phi_grads = self._first_order_gradients(
                engine, network, names, thetas, hyper, x, d, q, y_w, logits, entropy
            )
        for p, g in zip(phis, phi_grads):
            if g is None:
                continue
            if p.grad is None:
                p.grad = g.detach()
            else:
                p.grad.add_(g.detach())
        all_reduce_gradients(phis)  # DDP cannot double-backward: average φ's gradients by hand
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        engine.meta_optimizer.step()
        output.update(loss_meta=loss_meta.detach(), entropy=entropy.detach())
        return output

    def _first_order_gradients(
        self,
        engine: MetaAuxiliaryTrainer,
        network: nn.Module,
        names: Sequence[str],
        thetas: Sequence[torch.Tensor],
        hyper: dict[int, tuple[float, float]],
        x: torch.Tensor,
        d: torch.Tensor,
        q: torch.Tensor,
        y_w: torch.Tensor,
        logits: Mapping[str, torch.Tensor],
        entropy: torch.Tensor,
    ) -> tuple[torch.Tensor, Sequence[torch.Tensor | None]]:
        """DARTS-style finite-difference meta-gradient (official ``ComputeFirstOrder``); returns ``(L_φ(θ'), ∇_φ)``."""
        # g = ∇_θ ℓ without a graph: ℓ's φ-dependence does not matter for the virtual step
        loss_d, loss_q, loss_aux = self._task_losses(logits, d, q, y_w.detach())
        grads = torch.autograd.grad(loss_d + loss_q + loss_aux, thetas, allow_unused=True)
        lrs = [hyper.get(id(p), (0.0, 0.0))[0] for p in thetas]
        virtual = {}
        with torch.no_grad():
            for name, p, g, lr in zip(names, thetas, grads, lrs):
                wd = hyper.get(id(p), (0.0, 0.0))[1]
                step = wd * p if g is None else g + wd * p
                virtual[name] = (p - lr * step).detach().requires_grad_(True)
        out_v = self._functional_forward(network, virtual, x)
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        primary = self.loss_function(to_loss_dtype(out_v["diagnosis"]), d) + self.loss_function(
            to_loss_dtype(out_v["quality"]), q
        )
        loss_meta = primary + self.entropy_weight * entropy
        check_finite(engine, loss_meta, "meta loss")
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        d_theta = torch.autograd.grad(primary, [virtual[n] for n in names], allow_unused=True)
        with torch.no_grad():
            v = [torch.zeros_like(p) if g is None else lr * g for p, g, lr in zip(thetas, d_theta, lrs)]
            norm = torch.sqrt(sum((to_loss_dtype(t) ** 2).sum() for t in v))
        surrogate = self.entropy_weight * entropy
        if float(norm) > 0:
            eps = self.fd_epsilon / float(norm)
            with torch.no_grad():
                plus = {n: p + eps * t for n, p, t in zip(names, thetas, v)}
                minus = {n: p - eps * t for n, p, t in zip(names, thetas, v)}
                aux_plus = self._functional_forward(network, plus, x)["auxiliary"]
                aux_minus = self._functional_forward(network, minus, x)["auxiliary"]
            l_plus = self.loss_function(to_loss_dtype(aux_plus), to_loss_dtype(y_w)) / self.aux_per_class
            l_minus = self.loss_function(to_loss_dtype(aux_minus), to_loss_dtype(y_w)) / self.aux_per_class
            surrogate = surrogate - (l_plus - l_minus) / (2.0 * eps)
        phis = [p for p in unwrap_module(engine.meta_learner).parameters() if p.requires_grad]
        return loss_meta, torch.autograd.grad(surrogate, phis, allow_unused=True)

    # ------------------------------------------------------------------------------------------------------------
    def _iteration(self, engine: MetaAuxiliaryTrainer, batchdata: dict[str, torch.Tensor]) -> dict:
        """
        One Ignite iteration: stage I or stage II (``"epoch"`` schedule) or both on the same batch
        (``"iteration"`` schedule).

        Args:
            engine: this trainer.
            batchdata: dict batch with image, diagnosis and quality keys.

        Raises:
            ValueError: When ``batchdata`` is None or a label is out of range.
            KeyError: When a batch key is missing.
            FloatingPointError: When a loss is not finite.
        """
        x, d, q = prepare_iqad_batch(
            batchdata,
            engine.state.device,
            engine.non_blocking,
            self.image_key,
            self.diagnosis_key,
            self.quality_key,
            **engine.to_kwargs,
        )
        engine.state.learning_rate = engine.optimizer.param_groups[0]["lr"]
        engine.state.meta_learning_rate = engine.meta_optimizer.param_groups[0]["lr"]
        if self.schedule == "iteration":
            # φ does not change between the two stages of an iteration, so one meta-learner forward (with the graph
            # that stage II needs) gives y_ω to both; stage I uses it detached. Same values as a separate no-grad
            # forward; only the meta learner's BN running statistics (never used: it always runs in train mode)
            # are updated once per iteration instead of twice.
            meta_learner = unwrap_module(engine.meta_learner)
            meta_learner.train()
            y_w = meta_learner(x, d, q)
            engine.state.stage = 1
            self._task_step(engine, x, d, q, y_w=y_w)
            engine.state.stage = 2
            output = self._meta_step(engine, x, d, q, y_w=y_w)
        else:
            engine.state.stage = self.current_stage()
            step = self._task_step if engine.state.stage == 1 else self._meta_step
            output = step(engine, x, d, q)
        engine.state.output = output
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
