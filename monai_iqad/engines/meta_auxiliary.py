"""Two-stage meta-auxiliary training of MKCNet (task net θ, meta learner φ) as one MONAI/Ignite trainer."""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence, Sized
from dataclasses import dataclass
from typing import Any

import torch
import torch.autograd.forward_ad as fwAD
import torch.distributed as dist
import torch.nn as nn
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.utils import IgniteInfo, min_version, optional_import
from torch.func import functional_call
from torch.optim.optimizer import Optimizer
from torch.utils.data import DataLoader

from monai_iqad.engines.prepare_batch import PrepareIQADBatch
from monai_iqad.engines.step import (
    UNSUPPORTED_ARGS,
    autocast,
    check_finite,
    loss_scaling,
    run_trainer,
    supervised_trainer_kwargs,
    to_loss_dtype,
    training_step,
)
from monai_iqad.engines.tangent_replay import TangentReplay
from monai_iqad.losses.entropy import EntropyRegularizer
from monai_iqad.losses.focal import FocalLoss
from monai_iqad.utils.dist import all_reduce_gradients, average_buffers, get_world_size, unwrap_module

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = ["MetaAuxiliaryTrainer", "is_plain_sgd"]

SCHEDULES = ("epoch", "iteration")
META_GRADIENTS = ("second_order", "first_order", "forward_mode")


@dataclass
class _MetaBatch:
    """What the stage-II gradient paths share: the task net, its trainable θ (names, tensors, per-parameter LR and
    weight decay of the task optimizer), the batch, ``y_ω`` (with its graph), ``R(y_ω)`` and φ."""

    network: nn.Module
    names: list[str]
    thetas: list[torch.Tensor]
    lrs: list[float]
    decays: list[float]
    x: torch.Tensor
    d: torch.Tensor
    q: torch.Tensor
    y_w: torch.Tensor
    entropy: torch.Tensor
    phis: list[torch.Tensor]


_TIED: weakref.WeakKeyDictionary[nn.Module, bool] = weakref.WeakKeyDictionary()


def _functional_call(module: nn.Module, tensors: dict[str, torch.Tensor], args: tuple, kwargs: Any = None) -> Any:
    """``torch.func.functional_call``; its search for tied parameters or buffers (a walk over all of them, at each
    call) only runs for modules that have some (checked once per module)."""
    tied = _TIED.get(module)
    if tied is None:
        counts = [
            (len(list(named(remove_duplicate=False))), len(list(named())))
            for named in (module.named_parameters, module.named_buffers)
        ]
        tied = _TIED[module] = any(a != b for a, b in counts)
    return functional_call(module, tensors, args, kwargs, tie_weights=tied)


class _Int32:
    """An ``int64`` tensor saved for the backward, held as ``int32`` (its values fit)."""

    __slots__ = ("tensor",)

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor


def _pack_int32(tensor: torch.Tensor) -> torch.Tensor | _Int32:
    """Saved-tensor pack hook: large ``int64`` CPU tensors whose values fit in ``int32`` (e.g. max-pooling indices)
    are kept at half the size; anything else as is (on an accelerator the range check would synchronise it)."""
    if tensor.dtype == torch.int64 and tensor.numel() >= 4096 and tensor.device.type == "cpu":
        low, high = torch.aminmax(tensor)
        if -(2**31) <= int(low) and int(high) < 2**31:
            return _Int32(tensor.to(torch.int32))
    return tensor.detach()  # an alias without autograd metadata (the tensor itself would keep saved leaves alive)


def _unpack_int32(packed: torch.Tensor | _Int32) -> torch.Tensor:
    """Saved-tensor unpack hook of :func:`_pack_int32` (exact)."""
    return packed.tensor.long() if isinstance(packed, _Int32) else packed


def is_plain_sgd(optimizer: Optimizer) -> bool:
    """True when ``optimizer.step()`` is ``θ ← θ - lr (∇ + wd θ)`` in every group (SGD, no momentum, no maximize)."""
    if type(optimizer) is not torch.optim.SGD:
        return False
    return all(
        float(g.get("momentum", 0.0)) == 0.0 and not g.get("nesterov", False) and not g.get("maximize", False)
        for g in optimizer.param_groups
    )


class MetaAuxiliaryTrainer(SupervisedTrainer):
    """
    Meta-auxiliary training of MKCNet: stage I trains the task net ``θ`` on the diagnosis, quality and auxiliary
    losses; stage II trains the meta learner ``φ`` (which produces the auxiliary labels ``y_ω``) through a
    pseudo-updated task net ``θ̃ = θ - α (∇_θ L_θ + wd · θ)``.

    Re-implementation of the training algorithm of: "Che, Chen, Chen, Image Quality-aware Diagnosis via
    Meta-knowledge Co-embedding, CVPR 2023, https://arxiv.org/abs/2303.15038" (official ``utils/train.py``), itself
    based on MAXL ("Liu, Davison, Johns, Self-Supervised Generalisation with Meta Auxiliary Learning, NeurIPS 2019").
    The objectives, the three meta-gradients (``"second_order"``: double backward; ``"forward_mode"``: the same
    exact gradient from one forward-mode pass; ``"first_order"``: the official finite differences), the two
    schedules, AMP and DDP are derived and documented in ``docs/mkcnet.md``.

    Memory of stage II: under the ``"epoch"`` schedule, stage I's θ gradients (not used any more) are released at
    the start of stage II; with ``"forward_mode"``, the graphs of the meta learner's and the ``θ̃`` forward keep the
    ``int64`` tensors they save for the backward (max-pooling indices) as ``int32`` (exact; ``docs/mkcnet.md``).

    ``engine.state.output`` (before decollation) is a dict with ``loss`` (the task objective ``L_θ`` at θ),
    ``loss_d``, ``loss_q``, ``loss_aux`` (``L_Ω / k``, unweighted), ``loss_meta`` (``L_φ``; 0.0 in stage I),
    ``entropy`` (``R``), ``stage`` (1 or 2), ``pred`` (diagnosis logits at θ, ``(B, NUM_T)``), ``label`` (diagnosis
    ``(B,)``) and ``quality`` ``(B,)``. ``engine.state.stage``, ``learning_rate`` and ``meta_learning_rate`` are
    updated every iteration. ``FORWARD_COMPLETED``, ``LOSS_COMPLETED`` and ``BACKWARD_COMPLETED`` fire once per stage
    run, ``MODEL_COMPLETED`` once per iteration.

    Args:
        device: device of the run.
        max_epochs: number of epochs.
        train_data_loader: loader of dict batches ``{"image": (B, C, H, W), "diagnosis": (B,), "quality": (B,)}``.
        network: task net ``M_θ`` returning ``{"diagnosis", "quality", "auxiliary"}`` logits (e.g. ``MKCNet``),
            possibly DDP-wrapped.
        optimizer: optimizer of θ (official: ``SGD(lr=0.01, weight_decay=5e-4)``, no momentum).
        meta_learner: meta learner ``M_φ(x, diagnosis, quality) → y_ω`` (e.g. ``MetaLearner``), not DDP-wrapped.
        meta_optimizer: optimizer of φ (official: ``SGD(lr=META_LR, weight_decay=5e-4)``).
        loss_function: loss on ``(logits, target)`` accepting index and soft targets. Defaults to ``FocalLoss(2.0)``.
        entropy_weight: ``λ_R``. Defaults to 0.3 (DeepDR/CXR-IQAD; 0.5 DRAC, 0.2 EyeQ/CT-IQAD).
        quality_weight: ``λ_Q``, weight of the quality loss in ``L_θ`` and ``L_φ``. Defaults to 1.0 (paper).
        auxiliary_weight: ``λ_A``, weight of ``L_Ω / k`` in ``L_θ``. Defaults to 1.0 (paper).
        aux_per_class: ``k``; None reads ``meta_learner.k`` or ``network.aux_per_class``. Defaults to None.
        schedule: ``"epoch"`` (official: a stage-I pass, then a stage-II pass over the loader) or ``"iteration"``
            (both stages on every batch). Defaults to ``"epoch"``.
        meta_gradient: ``"second_order"``, ``"forward_mode"`` (same gradient, cheaper) or ``"first_order"``.
            Defaults to ``"second_order"``.
        reuse_task_gradient: ``"iteration"`` schedule with ``"forward_mode"`` and a plain-SGD task optimizer only:
            stage I's SGD step *is* ``θ̃``, so stage II takes the meta-gradient at the iteration's starting θ
            from it (no second task backward). None: on where it applies. Defaults to None.
        official_meta_forward: official functional-forward quirks in the ``θ̃`` forward (second order and forward
            mode). Defaults to False.
        fd_epsilon: θ-space step of the first-order finite differences. Defaults to 0.01 (official).
        entropy_regularizer: callable ``R(y_ω)``. Defaults to ``EntropyRegularizer()``.
        amp_dtype: ``"bfloat16"`` or ``"float16"``: autocast on any device with that dtype (``None``: MONAI's
            ``amp``, CUDA only). Defaults to None.
        epoch_length: iterations per epoch; defaults to ``2 * len(loader)`` (``"epoch"``) or ``len(loader)``.
        prepare_batch: defaults to :class:`~monai_iqad.engines.PrepareIQADBatch`.
        reuse_activations: ``"forward_mode"`` only: the forward-mode pass at θ reads the activations of the forward
            at θ that precedes it (stage II's, or stage I's with ``reuse_task_gradient``) in the network's plain
            conv / batch-norm / ReLU / max-pool sequences (the VGG encoder) instead of recomputing its primal
            forward (:class:`~monai_iqad.engines.tangent_replay.TangentReplay`): one forward of FLOPs less per
            batch, same gradient; the activations stay alive through the ``θ̃`` forward and backward. Nothing is
            reused under autocast (the pass at θ then runs in full precision as without it). Defaults to True.
        recompute_layers: with ``reuse_activations``, how many leading layers of each such sequence the
            forward-mode pass recomputes (on the replay's tangent-only path) instead of keeping their (largest)
            activations: trades time for peak memory. Defaults to 1 (the encoder's first convolution, whose input
            is the image: ~2 % of a forward, one of the two largest activations).
        trainer_kwargs: other keyword arguments: those of :py:class:`monai.engines.SupervisedTrainer`
            (``non_blocking``, ``postprocessing``, ``key_train_metric``, ``train_handlers``, ``amp``,
            ``amp_kwargs``, ...), except ``iteration_update``, ``inferer``, ``compile``, ``compile_kwargs`` and
            ``accumulation_steps``, which this trainer's iteration does not use (TypeError).

    Raises:
        ValueError: When ``schedule`` or ``meta_gradient`` is unknown, a weight is negative, ``fd_epsilon`` is not
            positive, ``k`` cannot be found, ``reuse_task_gradient=True`` does not apply, ``recompute_layers`` is
            negative, or the ``"epoch"`` schedule has neither a sized loader nor an even ``epoch_length``.
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
        quality_weight: float = 1.0,
        auxiliary_weight: float = 1.0,
        aux_per_class: int | None = None,
        schedule: str = "epoch",
        meta_gradient: str = "second_order",
        reuse_task_gradient: bool | None = None,
        official_meta_forward: bool = False,
        fd_epsilon: float = 0.01,
        entropy_regularizer: Callable | None = None,
        amp_dtype: str | torch.dtype | None = None,
        epoch_length: int | None = None,
        *,
        prepare_batch: Callable | None = None,
        reuse_activations: bool = True,
        recompute_layers: int = 1,
        **trainer_kwargs: Any,
    ) -> None:
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}.")
        if meta_gradient not in META_GRADIENTS:
            raise ValueError(f"meta_gradient must be one of {META_GRADIENTS}, got {meta_gradient!r}.")
        for name, value in (
            ("entropy_weight", entropy_weight),
            ("quality_weight", quality_weight),
            ("auxiliary_weight", auxiliary_weight),
        ):
            if not value >= 0:
                raise ValueError(f"{name} must be non-negative, got {value}.")
        if fd_epsilon <= 0:
            raise ValueError(f"fd_epsilon must be positive, got {fd_epsilon}.")
        if recompute_layers < 0:
            raise ValueError(f"recompute_layers must be non-negative, got {recompute_layers}.")
        if aux_per_class is None:
            aux_per_class = getattr(unwrap_module(meta_learner), "k", None)
            if aux_per_class is None:
                aux_per_class = getattr(unwrap_module(network), "aux_per_class", None)
        if aux_per_class is None or int(aux_per_class) < 1:
            raise ValueError(f"aux_per_class (k) must be a positive integer, got {aux_per_class}.")
        kwargs = supervised_trainer_kwargs(type(self).__name__, trainer_kwargs, amp_dtype, UNSUPPORTED_ARGS)
        amp, amp_kwargs = kwargs["amp"], kwargs["amp_kwargs"]
        fp16_scaling = loss_scaling(device, amp, amp_kwargs)
        reusable = schedule == "iteration" and meta_gradient == "forward_mode" and is_plain_sgd(optimizer)
        reusable = reusable and not fp16_scaling  # a skipped (inf) scaler step would not be θ̃
        if reuse_task_gradient and not reusable:
            raise ValueError(
                "reuse_task_gradient=True needs schedule='iteration', meta_gradient='forward_mode', a plain SGD task "
                "optimizer (no momentum) and no float16 gradient scaling."
            )

        if schedule == "epoch":
            if epoch_length is None:
                if not isinstance(train_data_loader, Sized):
                    raise ValueError("schedule='epoch' needs a sized train_data_loader or an explicit epoch_length.")
                epoch_length = 2 * len(train_data_loader)
            if epoch_length < 2 or epoch_length % 2:
                raise ValueError(
                    f"schedule='epoch' needs an even epoch_length >= 2 (stage I + stage II), got {epoch_length}."
                )
        loss = FocalLoss(gamma=2.0) if loss_function is None else loss_function
        kwargs["prepare_batch"] = PrepareIQADBatch() if prepare_batch is None else prepare_batch
        super().__init__(device, max_epochs, train_data_loader, network, optimizer, loss, epoch_length, **kwargs)
        self.meta_learner = meta_learner
        self.meta_optimizer = meta_optimizer
        self.entropy_weight = float(entropy_weight)
        self.quality_weight = float(quality_weight)
        self.auxiliary_weight = float(auxiliary_weight)
        self.aux_per_class = int(aux_per_class)
        self.schedule = schedule
        self.meta_gradient = meta_gradient
        self.reuse_task_gradient = reusable if reuse_task_gradient is None else bool(reuse_task_gradient)
        self.official_meta_forward = official_meta_forward
        #: records the activations of the forward at θ for the forward-mode pass (None: recompute them)
        self.tangent_replay = (
            TangentReplay(unwrap_module(network), recompute_layers)
            if meta_gradient == "forward_mode" and reuse_activations
            else None
        )
        self.fd_epsilon = float(fd_epsilon)
        self.entropy_regularizer = EntropyRegularizer() if entropy_regularizer is None else entropy_regularizer
        self.state.stage = 1
        # the meta learner is not wrapped in DDP: keep its BatchNorm statistics identical on every rank
        self.add_event_handler(Events.EPOCH_COMPLETED, self._sync_meta_buffers)
        self.state.learning_rate = optimizer.param_groups[0]["lr"]
        self.state.meta_learning_rate = meta_optimizer.param_groups[0]["lr"]

    def run(self) -> None:  # type: ignore[override]
        """Run the training (MONAI's ``Trainer.run``, with a ``GradScaler`` only for float16 autocast on CUDA)."""
        run_trainer(self)

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

    def _aux_loss(self, aux_logits: torch.Tensor, y_w: torch.Tensor) -> torch.Tensor:
        """``L_Ω / k`` (unweighted)."""
        return self.loss_function(to_loss_dtype(aux_logits), to_loss_dtype(y_w)) / self.aux_per_class

    def _primary_loss(self, logits: Mapping[str, torch.Tensor], d: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """``L_D + λ_Q L_Q`` (the part of the task objective that is also the meta objective)."""
        loss_d = self.loss_function(to_loss_dtype(logits["diagnosis"]), d)
        return loss_d + self.quality_weight * self.loss_function(to_loss_dtype(logits["quality"]), q)

    def _task_losses(
        self, logits: Mapping[str, torch.Tensor], d: torch.Tensor, q: torch.Tensor, y_w: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """``{"loss": L_D + λ_Q L_Q + λ_A L_Ω / k, "loss_d", "loss_q", "loss_aux"}`` (float32 or wider)."""
        terms = {
            "loss_d": self.loss_function(to_loss_dtype(logits["diagnosis"]), d),
            "loss_q": self.loss_function(to_loss_dtype(logits["quality"]), q),
            "loss_aux": self._aux_loss(logits["auxiliary"], y_w),
        }
        loss = terms["loss_d"] + self.quality_weight * terms["loss_q"] + self.auxiliary_weight * terms["loss_aux"]
        return {"loss": loss, **terms}

    def _hyper_params(self) -> dict[int, tuple[float, float]]:
        """``id(param) → (lr, weight_decay)`` of the task optimizer's parameter groups."""
        table: dict[int, tuple[float, float]] = {}
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                table[id(p)] = (float(group["lr"]), float(group.get("weight_decay", 0.0)))
        return table

    @staticmethod
    def _functional_forward(
        module: nn.Module, params: Mapping[str, torch.Tensor], x: torch.Tensor, **kwargs: Any
    ) -> dict[str, torch.Tensor]:
        """Forward with replaced parameters and *cloned* buffers (the real BN running statistics stay untouched)."""
        buffers = {name: b.clone() for name, b in module.named_buffers()}
        return _functional_call(module, {**params, **buffers}, (x,), kwargs)

    def _stage_two_forward(
        self, engine: MetaAuxiliaryTrainer, compact: bool = True
    ) -> contextlib.AbstractContextManager:
        """
        Context of the forward passes of stage II, forward mode only (no double backward through them): autocast.

        Args:
            compact: the graph keeps the integer tensors it saves for the backward (max-pooling indices) as
                ``int32``: for the graphs alive at stage II's peak (the meta learner's and the θ̃ forward's), not for
                the forward at θ, whose graph is freed by the backward for g before.
        """
        if self.meta_gradient != "forward_mode":
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        stack.enter_context(autocast(engine))
        if compact:
            stack.enter_context(torch.autograd.graph.saved_tensors_hooks(_pack_int32, _unpack_int32))
        return stack

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
        Stage I: update θ with ``L_θ``; φ is only evaluated (no graph).

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
            with torch.no_grad(), autocast(engine):
                y_w = meta_learner(x, d, q)
        y_w = y_w.detach()
        output: dict[str, Any] = {"stage": 1, "label": d, "quality": q}
        engine.state.output = output

        def _compute() -> dict[str, torch.Tensor]:
            logits = network(x)
            output["pred"] = logits["diagnosis"].detach()
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            return self._task_losses(logits, d, q, y_w)

        output.update(training_step(engine, _compute, name="task loss"))
        output.update(loss_meta=0.0, entropy=self.entropy_regularizer(y_w).detach())
        return output

    def _meta_step(
        self,
        engine: MetaAuxiliaryTrainer,
        x: torch.Tensor,
        d: torch.Tensor,
        q: torch.Tensor,
        y_w: torch.Tensor | None = None,
        stage_one: Mapping[str, Any] | None = None,
    ) -> dict:
        """
        Stage II: update φ through the pseudo-updated task net; θ and the real BN buffers are not changed.

        Args:
            y_w: this batch's ``y_ω`` at the current φ, **with** its graph (shared by the ``"iteration"`` schedule);
                None computes it here.
            stage_one: ``reuse_task_gradient``: ``{"theta": θ before stage I's step (name → tensor), "output":
                stage I's output}``; ``θ̃`` is then the network's current parameters (stage I's SGD step).
        """
        network, meta_learner = unwrap_module(engine.network), unwrap_module(engine.meta_learner)
        network.train()
        meta_learner.train()
        output: dict[str, Any] = {"stage": 2, "label": d, "quality": q}
        engine.state.output = output
        engine.meta_optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        if y_w is None:
            with self._stage_two_forward(engine):
                y_w = meta_learner(x, d, q)
        entropy = self.entropy_regularizer(to_loss_dtype(y_w))
        names, thetas = zip(*[(n, p) for n, p in network.named_parameters() if p.requires_grad])
        if self.schedule == "epoch":  # stage I's θ gradients are not used any more (its steps are done): free them
            for p in thetas:
                p.grad = None
        hyper = self._hyper_params()
        batch = _MetaBatch(
            network=network,
            names=list(names),
            thetas=list(thetas),
            lrs=[hyper.get(id(p), (0.0, 0.0))[0] for p in thetas],
            decays=[hyper.get(id(p), (0.0, 0.0))[1] for p in thetas],
            x=x,
            d=d,
            q=q,
            y_w=y_w,
            entropy=entropy,
            phis=[p for p in meta_learner.parameters() if p.requires_grad],
        )

        if stage_one is not None:  # θ̃ = the current θ (stage I's step); the meta-gradient is taken at stage I's θ
            for key in ("loss", "loss_d", "loss_q", "loss_aux", "pred"):
                output[key] = stage_one["output"][key]
            fast = {n: p.detach().requires_grad_(True) for n, p in zip(names, thetas)}
            loss_meta, phi_grads = self._forward_mode_gradients(
                engine, batch, stage_one["theta"], fast, average_tangents=True
            )
        else:
            replay = self.tangent_replay
            with (
                self._stage_two_forward(engine, compact=False),
                replay.record() if replay else contextlib.nullcontext(),
            ):
                logits = network(x)  # module forward at θ: BN running statistics are updated here (official)
            output["pred"] = logits["diagnosis"].detach()
            attached = self.meta_gradient == "second_order"
            terms = self._task_losses(logits, d, q, y_w if attached else y_w.detach())
            output.update({k: v.detach() for k, v in terms.items()})
            check_finite(engine, terms["loss"], "task loss", terms)
            # g = ∇_θ ℓ: with the graph to φ (second order) or without (φ's part is taken separately)
            grads = torch.autograd.grad(terms["loss"], thetas, create_graph=attached, allow_unused=True)
            with torch.no_grad() if not attached else contextlib.nullcontext():
                fast = {
                    n: p - lr * (wd * p if g is None else g + wd * p)
                    for n, p, g, lr, wd in zip(names, thetas, grads, batch.lrs, batch.decays)
                }
            if attached:
                _, loss_meta = self._meta_loss(engine, batch, fast, quirks=True)
                phi_grads = torch.autograd.grad(loss_meta, batch.phis, allow_unused=True)
            else:
                del grads, terms, logits  # no θ-sized copy beyond θ̃ stays alive (peak memory)
                fast = {n: t.detach().requires_grad_(True) for n, t in fast.items()}
                if self.meta_gradient == "forward_mode":
                    point = {n: p.detach() for n, p in zip(names, thetas)}
                    loss_meta, phi_grads = self._forward_mode_gradients(engine, batch, point, fast)
                else:
                    loss_meta, phi_grads = self._first_order_gradients(engine, batch, fast)
        for p, g in zip(batch.phis, phi_grads):
            if g is None:
                continue
            if p.grad is None:
                p.grad = g.detach()
            else:
                p.grad.add_(g.detach())
        all_reduce_gradients(batch.phis)  # the meta learner is not DDP-wrapped: average φ's gradients by hand
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        engine.meta_optimizer.step()
        output.update(loss_meta=loss_meta.detach(), entropy=entropy.detach())
        return output

    def _meta_loss(
        self, engine: MetaAuxiliaryTrainer, batch: _MetaBatch, fast: Mapping[str, torch.Tensor], quirks: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(L_D + λ_Q L_Q)(θ̃)`` and ``L_φ`` (that plus ``λ_R R``) from the functional forward at ``fast = θ̃``."""
        kwargs = {"official_meta_forward": True} if quirks and self.official_meta_forward else {}
        with self._stage_two_forward(engine):
            out_fast = self._functional_forward(batch.network, fast, batch.x, **kwargs)
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        primary = self._primary_loss(out_fast, batch.d, batch.q)
        loss_meta = primary + self.entropy_weight * batch.entropy
        check_finite(engine, loss_meta, "meta loss")
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        return primary, loss_meta

    def _forward_mode_gradients(
        self,
        engine: MetaAuxiliaryTrainer,
        batch: _MetaBatch,
        point: Mapping[str, torch.Tensor],
        fast: Mapping[str, torch.Tensor],
        average_tangents: bool = False,
    ) -> tuple[torch.Tensor, Sequence[torch.Tensor | None]]:
        """
        Forward mode (exact): ``∇_φ L_φ = -(∂y_ω/∂φ)ᵀ ∂/∂y_ω ⟨∇_z ℓ_Ω(z, y_ω), J_z u⟩ + λ_R ∇_φ R`` with
        ``u = α ⊙ ∇_θ̃ L_φ``, ``z`` the auxiliary logits at θ (``point``) and ``J_z u`` from one ``forward_ad`` pass.

        Args:
            point: θ, where ``g = ∇_θ ℓ`` was taken (name → tensor, no graph).
            fast: ``θ̃ = θ - α (g + wd θ)`` as leaves requiring grad.
            average_tangents: average ``u`` over the processes (when ``θ̃`` came from a DDP-averaged ``g``).

        Returns:
            ``(L_φ, ∇_φ L_φ)``.
        """
        primary, loss_meta = self._meta_loss(engine, batch, fast, quirks=True)
        v = torch.autograd.grad(primary, [fast[n] for n in batch.names], allow_unused=True)
        if isinstance(fast, dict):
            fast.clear()  # θ̃ is not needed any more: free it before the forward-mode pass (peak memory)
        tangents = {  # u = α ⊙ v, per parameter group, in v's storage
            n: torch.zeros_like(point[n]) if g is None else g.to(point[n].dtype).mul_(lr)
            for n, g, lr in zip(batch.names, v, batch.lrs)
        }
        del v
        if average_tangents and get_world_size() > 1:
            for t in tangents.values():
                dist.all_reduce(t, op=dist.ReduceOp.SUM)
                t.div_(get_world_size())
        buffers = {n: b.clone() for n, b in batch.network.named_buffers()}
        replay = self.tangent_replay
        try:  # J_z u at θ (train-mode BN, cloned buffers), full precision; recorded activations where available
            with torch.no_grad(), fwAD.dual_level(), replay.replay() if replay else contextlib.nullcontext():
                duals = {n: fwAD.make_dual(point[n], tangents[n]) for n in batch.names}
                aux = _functional_call(batch.network, {**point, **duals, **buffers}, (batch.x,))["auxiliary"]
                z, z_dot = fwAD.unpack_dual(aux)
        finally:
            if replay is not None:
                replay.clear()
        # a non-leaf z (a leaf cannot be the input of autograd.grad under hooks such as FlopCounterMode)
        z = to_loss_dtype(z).detach().requires_grad_(True).clone()
        loss_aux = self.auxiliary_weight * self._aux_loss(z, batch.y_w)  # y_ω with its graph
        (grad_z,) = torch.autograd.grad(loss_aux, z, create_graph=True)
        surrogate = self.entropy_weight * batch.entropy - (grad_z * to_loss_dtype(z_dot)).sum()
        return loss_meta, torch.autograd.grad(surrogate, batch.phis, allow_unused=True)

    def _first_order_gradients(
        self, engine: MetaAuxiliaryTrainer, batch: _MetaBatch, virtual: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, Sequence[torch.Tensor | None]]:
        """DARTS-style finite-difference meta-gradient (official ``ComputeFirstOrder``); returns ``(L_φ(θ'), ∇_φ)``."""
        names, thetas, network, x = batch.names, batch.thetas, batch.network, batch.x
        primary, loss_meta = self._meta_loss(engine, batch, virtual, quirks=False)
        d_theta = torch.autograd.grad(primary, [virtual[n] for n in names], allow_unused=True)
        with torch.no_grad():
            v = [torch.zeros_like(p) if g is None else lr * g for p, g, lr in zip(thetas, d_theta, batch.lrs)]
            norm = torch.sqrt(sum((to_loss_dtype(t) ** 2).sum() for t in v))
        surrogate = self.entropy_weight * batch.entropy
        if float(norm) > 0:
            eps = self.fd_epsilon / float(norm)
            with torch.no_grad():
                plus = {n: p + eps * t for n, p, t in zip(names, thetas, v)}
                minus = {n: p - eps * t for n, p, t in zip(names, thetas, v)}
                aux_plus = self._functional_forward(network, plus, x)["auxiliary"]
                aux_minus = self._functional_forward(network, minus, x)["auxiliary"]
            l_plus = self.auxiliary_weight * self._aux_loss(aux_plus, batch.y_w)
            l_minus = self.auxiliary_weight * self._aux_loss(aux_minus, batch.y_w)
            surrogate = surrogate - (l_plus - l_minus) / (2.0 * eps)
        return loss_meta, torch.autograd.grad(surrogate, batch.phis, allow_unused=True)

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
        x, d, q = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        engine.state.learning_rate = engine.optimizer.param_groups[0]["lr"]
        engine.state.meta_learning_rate = engine.meta_optimizer.param_groups[0]["lr"]
        if self.schedule == "iteration":
            # φ does not change between the two stages of an iteration, so one meta-learner forward (with the graph
            # that stage II needs) gives y_ω to both; stage I uses it detached.
            meta_learner = unwrap_module(engine.meta_learner)
            meta_learner.train()
            with self._stage_two_forward(engine):
                y_w = meta_learner(x, d, q)
            engine.state.stage = 1
            if self.reuse_task_gradient:
                net = unwrap_module(engine.network)
                theta = {n: p.detach().clone() for n, p in net.named_parameters() if p.requires_grad}
                with self.tangent_replay.record() if self.tangent_replay else contextlib.nullcontext():
                    stage_one = {"theta": theta, "output": self._task_step(engine, x, d, q, y_w=y_w)}
                engine.state.stage = 2
                output = self._meta_step(engine, x, d, q, y_w=y_w, stage_one=stage_one)
            else:
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
