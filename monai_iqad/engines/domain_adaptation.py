"""Domain-adversarial (DANN) training of a patch-wise quality network, as an Ignite/MONAI trainer."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn
from monai.data import MetaTensor
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.utils import IgniteInfo, min_version, optional_import
from monai.utils.enums import CommonKeys as Keys
from torch.optim.optimizer import Optimizer
from torch.utils.data import DataLoader

from monai_iqad.engines.prepare_batch import PrepareIQABatch
from monai_iqad.engines.step import run_trainer, supervised_trainer_kwargs, training_step
from monai_iqad.losses.distillation import BernoulliKLDivLoss
from monai_iqad.networks.blocks.gradient_reversal import GradientReversal, dann_lambda

if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")
Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = ["DomainAdaptationTrainer", "DA_MODES"]

#: Training configurations of Tliba et al. (Table 2): 1 = target_only, 2 = source_only, 3 = unsupervised DA,
#: 4 = semi-supervised DA.
DA_MODES: tuple[str, ...] = ("target_only", "source_only", "unsupervised", "semi_supervised")
_ADVERSARIAL_MODES = ("unsupervised", "semi_supervised")


def _find_gamma(network: nn.Module) -> torch.Tensor | None:
    """The first scalar ``gamma`` parameter of ``network`` (the attention gate of SAQM), or None."""
    for module in network.modules():
        gamma = getattr(module, "gamma", None)
        if isinstance(gamma, torch.Tensor) and gamma.numel() == 1:
            return gamma
    return None


class DomainAdaptationTrainer(SupervisedTrainer):
    """
    Domain-adversarial training (DANN) of a patch-wise quality network such as :class:`monai_iqad.networks.SAQM`.

    Re-implementation of the training of SAQM based on:
    "Tliba et al., Deep-based quality assessment of medical images through domain adaptation, ICIP 2022,
    https://arxiv.org/abs/2210.10533" (sec. 2.2-2.3, Table 2), with the adversarial scheme and the λ schedule of
    "Ganin et al., Domain-Adversarial Training of Neural Networks, JMLR 17(59), 2016".

    Only ``_iteration`` is overridden (the optimisation step is :func:`~monai_iqad.engines.training_step`); metrics,
    checkpoints, logging and LR schedules are handlers as usual. The method and its options: ``docs/saqm.md``.

    Modes (the four configurations of the paper's Table 2):

    - ``"target_only"``: ``train_data_loader`` yields labelled target images; regression only.
    - ``"source_only"``: ``train_data_loader`` yields labelled source images; regression only.
    - ``"unsupervised"``: ``train_data_loader`` = source (labelled), ``target_data_loader`` = target (labels
      ignored); regression on the source, domain loss on both.
    - ``"semi_supervised"``: as unsupervised, plus the regression loss on the *labelled* target items
      (``labelled`` flag, or a finite ``mos`` when the flag is absent); unlabelled target items only feed the
      domain loss.

    One iteration (adversarial modes):

    1. draw one target batch (the target loader is cycled: its iterator is re-created when exhausted, and at every
       ``EPOCH_STARTED``, where ``sampler.set_epoch(epoch)`` is called when available, so a resumed run sees the
       same target batches as an uninterrupted one; within an epoch, later cycles reuse that epoch's order);
    2. set λ = ``dann_lambda(p, grl_gamma, grl_max)``, p = (iteration - 1) / (max_epochs · epoch_length), on every
       :class:`GradientReversal` of the domain classifier;
    3. one forward of ``torch.cat([source, target])`` with ``network(x, patch_level=True, return_features=True)``
       (a single forward, DDP-friendly). When source and target crops have different spatial shapes the two
       batches go through two forwards instead (same results; prefer equal crop sizes under DDP);
    4. ``loss = loss_reg + domain_loss_weight * loss_dom`` (+ the optional ranking and distillation terms):
       ``loss_reg`` = ``regression_loss`` over all labelled patches (each patch gets its image's MOS, the Kang et
       al. convention), default ``BCEWithLogitsLoss`` of the patch logits against the MOS in [0, 1]; ``loss_dom``
       = BCE-with-logits of the domain classifier on every patch feature (source 0, target 1);
    5. backward (the GRL reverses the domain gradient for the network only) and ``optimizer.step()``.

    ``engine.state.output`` holds ``image`` and ``label`` (the ``train_data_loader`` batch and its normalised MOS
    as (B, 1)), ``pred`` (its image scores (B, 1) = mean patch score, so ``from_engine(["pred", "label"])`` feeds
    Ignite's correlation metrics directly), ``loss``, ``loss_reg``, ``loss_dom`` (``loss_rank``, ``loss_distill``
    when those terms are on), ``grl_lambda``,
    ``gamma`` (the network's attention gate, when it has a scalar ``gamma`` parameter) and ``domain_acc``
    (patch-level domain accuracy; NaN in the non-adversarial modes). Events ``FORWARD_COMPLETED``,
    ``LOSS_COMPLETED``, ``BACKWARD_COMPLETED`` and ``MODEL_COMPLETED`` fire as in ``SupervisedTrainer``.

    The ``optimizer`` must hold the domain classifier's parameters too (checked), and a checkpoint should save the
    domain classifier along with the network.

    Args:
        device, max_epochs, train_data_loader, network, optimizer: as :class:`monai.engines.SupervisedTrainer`.
        loss_function: the regression loss; same slot as ``regression_loss`` (give at most one).
        prepare_batch: ``callable(batch, device, non_blocking, **to_kwargs) -> {"image", "mos", "labelled"}``.
            Defaults to :class:`~monai_iqad.engines.PrepareIQABatch` (keys ``image``, ``mos``, ``labelled``).
        domain_classifier: domain head, e.g. :class:`monai_iqad.networks.DomainClassifier`, mapping (N, C) patch
            features to (N, 1) logits and containing a :class:`GradientReversal`. Required in the adversarial
            modes; unused (may be None) otherwise.
        target_data_loader: target-domain loader for the adversarial modes (ignored, with a warning, otherwise).
        mode: one of ``DA_MODES``. Defaults to "unsupervised".
        domain_loss_weight: weight of the domain loss. Defaults to 1.
        grl_gamma: γ of the DANN schedule. Defaults to 10.
        grl_max: the value λ tends to at the end of training. Defaults to 1.
        regression_loss: ``callable(logits (M,), targets (M,)) -> loss``. Defaults to ``nn.BCEWithLogitsLoss()``.
        amp_dtype: ``"bfloat16"``/``"float16"``: autocast on any device with that dtype (None: MONAI's ``amp``,
            CUDA only). Defaults to None.
        ranking_loss: optional ``callable(scores (B,), groups (B,), levels (B,)) -> loss`` added to the loss with
            weight ``ranking_weight``, e.g. :class:`monai_iqad.losses.PairwiseRankingLoss` on within-ladder pairs;
            ``scores`` are the image-level logits (mean patch logit) of the ``train_data_loader`` batch, ``groups``
            and ``levels`` come from its ``ladder_key`` and ``level_key``. When the batch also has
            ``rank_weight_key`` (e.g. ``LadderPatchDataset(level_weights=...)``), its (B,) item weights are passed as a
            fourth argument (``PairwiseRankingLoss``'s ``weights``). Defaults to None (off: the paper).
        ranking_weight: weight of the ranking loss. Defaults to 1.
        teacher: optional frozen network (e.g. :func:`monai_iqad.networks.frozen_copy` of the warm-started
            ``network``) whose patch scores the network is pulled towards on every training batch (knowledge
            distillation, as in "Li and Hoiem, Learning without Forgetting, TPAMI 2018"): ``loss_distill`` = mean
            over the patches of the Bernoulli KL divergence KL(sigmoid(teacher logit) || sigmoid(network logit)),
            0 where the two agree, added with weight ``distillation_weight``. The teacher gets the same input as
            the network and runs in eval mode without gradients. Defaults to None (off: the paper).
        distillation_weight: weight of the distillation term. Defaults to 1.
        ladder_key: batch key of the ladder (group) ids. Defaults to "ladder".
        level_key: batch key of the severity levels (0 = best). Defaults to "level".
        rank_weight_key: optional batch key of per-item ranking weights (used when present). Defaults to
            "rank_weight".
        trainer_kwargs: other keyword arguments: those of :class:`monai.engines.SupervisedTrainer` (``epoch_length``,
            ``non_blocking``, ``iteration_update``, ``inferer``, ``postprocessing``, ``key_train_metric``,
            ``train_handlers``, ``amp``, ``amp_kwargs``, ``accumulation_steps``, ...). ``amp`` without ``amp_dtype``
            only takes effect on CUDA devices (``torch.autocast("cuda")`` + ``GradScaler``); elsewhere it is ignored
            with a warning. The ``inferer`` is called as ``inferer(x, network, patch_level=True, ...)``.

    Raises:
        ValueError: When ``mode`` is unknown; an adversarial mode lacks ``target_data_loader`` or
            ``domain_classifier``, the domain classifier has no :class:`GradientReversal` or its parameters are not
            in ``optimizer``, or the epoch length is unknown; ``domain_loss_weight`` is negative; both
            ``loss_function`` and ``regression_loss`` are given.
        FloatingPointError: (during ``run``) when the loss is NaN or infinite, naming the epoch and iteration.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable | DataLoader,
        network: nn.Module,
        optimizer: Optimizer,
        loss_function: Callable | None = None,
        *,
        prepare_batch: Callable | None = None,
        domain_classifier: nn.Module | None = None,
        target_data_loader: Iterable | DataLoader | None = None,
        mode: str = "unsupervised",
        domain_loss_weight: float = 1.0,
        grl_gamma: float = 10.0,
        grl_max: float = 1.0,
        regression_loss: Callable | None = None,
        amp_dtype: str | torch.dtype | None = None,
        ranking_loss: Callable | None = None,
        ranking_weight: float = 1.0,
        ladder_key: str = "ladder",
        level_key: str = "level",
        rank_weight_key: str = "rank_weight",
        teacher: nn.Module | None = None,
        distillation_weight: float = 1.0,
        **trainer_kwargs: Any,
    ) -> None:
        if mode not in DA_MODES:
            raise ValueError(f"mode must be one of {DA_MODES}, got {mode!r}.")
        if loss_function is not None and regression_loss is not None:
            raise ValueError("give the regression loss as either `loss_function` or `regression_loss`, not both.")
        for name, weight in (("domain_loss_weight", domain_loss_weight), ("distillation_weight", distillation_weight)):
            if not math.isfinite(float(weight)) or weight < 0:
                raise ValueError(f"{name} must be a finite non-negative number, got {weight!r}.")
        if teacher is not None and any(p.requires_grad for p in teacher.parameters()):
            raise ValueError("the teacher must be frozen (monai_iqad.networks.frozen_copy(network)).")
        dann_lambda(0.0, grl_gamma, grl_max)  # validates gamma and max_value
        adversarial = mode in _ADVERSARIAL_MODES
        grls: list[GradientReversal] = []
        if adversarial:
            if target_data_loader is None:
                raise ValueError(f"mode={mode!r} needs a target_data_loader.")
            if domain_classifier is None:
                raise ValueError(f"mode={mode!r} needs a domain_classifier.")
            grls = [m for m in domain_classifier.modules() if isinstance(m, GradientReversal)]
            if not grls:
                raise ValueError(
                    "domain_classifier contains no GradientReversal layer: the network would not receive the "
                    "reversed domain gradient."
                )
            optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
            if not any(id(p) in optimised for p in domain_classifier.parameters()):
                raise ValueError(
                    "the optimizer holds none of the domain_classifier parameters; build it over both, e.g. "
                    "Adam([*network.parameters(), *domain_classifier.parameters()])."
                )
        elif target_data_loader is not None:
            warnings.warn(f"mode={mode!r} does not use target_data_loader; it is ignored.", stacklevel=2)
        kwargs = supervised_trainer_kwargs(type(self).__name__, trainer_kwargs, amp_dtype)
        if kwargs["amp"] and amp_dtype is None and torch.device(device).type != "cuda":
            warnings.warn(f"amp=True has no effect on device {device!r}: AMP is only used on CUDA.", stacklevel=2)
        kwargs["prepare_batch"] = PrepareIQABatch() if prepare_batch is None else prepare_batch
        reg_loss = regression_loss if regression_loss is not None else loss_function
        if reg_loss is None:
            reg_loss = nn.BCEWithLogitsLoss()

        super().__init__(device, max_epochs, train_data_loader, network, optimizer, reg_loss, **kwargs)
        if adversarial and self.state.epoch_length is None:
            raise ValueError(
                "the epoch length is unknown (train_data_loader has no length): pass `epoch_length`, "
                "the DANN schedule needs the total number of iterations."
            )
        self.mode = mode
        self.adversarial = adversarial
        self.domain_classifier = domain_classifier
        self.target_data_loader = target_data_loader if adversarial else None
        self.domain_loss_weight = float(domain_loss_weight)
        self.grl_gamma = float(grl_gamma)
        self.grl_max = float(grl_max)
        self.regression_loss = reg_loss
        self.domain_loss = nn.BCEWithLogitsLoss()
        self.mos_key, self.labelled_key = PrepareIQABatch.mos_key, PrepareIQABatch.labelled_key  # for the messages
        self._grls = grls
        self.ranking_loss = ranking_loss
        self.ranking_weight = float(ranking_weight)
        self.ladder_key = ladder_key
        self.level_key = level_key
        self.rank_weight_key = rank_weight_key
        self.teacher = teacher.to(device).eval() if teacher is not None else None
        self.distillation_weight = float(distillation_weight)
        self.distillation_loss = BernoulliKLDivLoss()
        self._gamma = _find_gamma(self.network)
        self._target_iter: Any = None
        if self.target_data_loader is not None:
            self.add_event_handler(Events.EPOCH_STARTED, self._restart_target_loader)

    def run(self) -> None:  # type: ignore[override]
        """Run the training (MONAI's ``Trainer.run``, with a ``GradScaler`` only for float16 autocast on CUDA)."""
        run_trainer(self)

    # ------------------------------------------------------------------------------------------------------------
    # target loader
    def _restart_target_loader(self, engine: Engine) -> None:
        """Re-create the target iterator at each epoch start, after ``set_epoch(epoch)`` on its sampler."""
        self._target_iter = None
        sampler = getattr(self.target_data_loader, "sampler", None)
        if sampler is not None and callable(getattr(sampler, "set_epoch", None)):
            sampler.set_epoch(engine.state.epoch)

    def _next_target_batch(self) -> Any:
        if self._target_iter is None:
            self._target_iter = iter(self.target_data_loader)  # type: ignore[arg-type]
        try:
            return next(self._target_iter)
        except StopIteration:
            self._target_iter = iter(self.target_data_loader)  # type: ignore[arg-type]
            try:
                return next(self._target_iter)
            except StopIteration:
                raise ValueError("target_data_loader is empty.") from None

    def progress(self, iteration: int | None = None) -> float:
        """Training progress p = (iteration - 1) / (max_epochs · epoch_length) of the DANN schedule."""
        iteration = self.state.iteration if iteration is None else iteration
        total = self.state.max_epochs * self.state.epoch_length
        return (iteration - 1) / total

    # ------------------------------------------------------------------------------------------------------------
    def _labelled_mask(self, target: Mapping[str, torch.Tensor | None]) -> torch.Tensor:
        mos, labelled = target["mos"], target["labelled"]
        n = int(target["image"].shape[0])  # type: ignore[union-attr]
        if labelled is None:
            if mos is None:
                return torch.zeros(n, dtype=torch.bool, device=target["image"].device)  # type: ignore[union-attr]
            return torch.isfinite(mos)
        if mos is None:
            if bool(labelled.any()):
                raise ValueError(f"target batch has labelled items but no '{self.mos_key}' key.")
            return labelled
        if not bool(torch.isfinite(mos[labelled]).all()):
            raise ValueError(f"target items flagged as labelled have a non-finite '{self.mos_key}': {mos[labelled]}.")
        return labelled

    def _ranking_groups(
        self, batchdata: Any, batch_size: int, device: torch.device | str | None
    ) -> tuple[torch.Tensor, ...] | None:
        """The (B,) ladder ids, levels (and item weights, when the batch has them) for the ranking loss; None when
        the loss is off.

        Raises:
            ValueError: When the ranking loss is on and the batch lacks the ladder/level keys or their length is wrong.
        """
        if self.ranking_loss is None:
            return None
        missing = [
            k for k in (self.ladder_key, self.level_key) if not isinstance(batchdata, Mapping) or k not in batchdata
        ]
        if missing:
            raise ValueError(f"the ranking loss needs batch keys {missing} (ladder ids and severity levels).")
        out = []
        keys = [self.ladder_key, self.level_key]
        if self.rank_weight_key in batchdata:
            keys.append(self.rank_weight_key)
        for key in keys:
            value = batchdata[key]
            value = value.as_tensor() if isinstance(value, MetaTensor) else torch.as_tensor(value)
            if value.numel() != batch_size:
                raise ValueError(
                    f"'{key}' must hold one value per image ({batch_size}), got shape {tuple(value.shape)}."
                )
            out.append(value.reshape(-1).to(device))
        return tuple(out)

    def _iteration(self, engine: DomainAdaptationTrainer, batchdata: dict[str, torch.Tensor]) -> dict:  # type: ignore[override]
        """
        One training step (see the class docstring).

        Args:
            engine: this trainer.
            batchdata: a batch of ``train_data_loader`` (dict with image (B, C, h, w) and mos (B,)).

        Raises:
            ValueError: When ``batchdata`` is None or a batch lacks a required key.
            FloatingPointError: When the loss is not finite.
        """
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        device = engine.state.device
        source = engine.prepare_batch(batchdata, device, engine.non_blocking, **engine.to_kwargs)
        self._ranking = self._ranking_groups(batchdata, int(source["image"].shape[0]), device)
        x_s, mos_s = source["image"], source["mos"]
        if mos_s is None:
            raise ValueError(f"training batches need a '{self.mos_key}' key (MOS normalised to [0, 1]).")
        target: Mapping[str, torch.Tensor | None] | None = None
        grl_lambda = 0.0
        if self.adversarial:
            target = engine.prepare_batch(self._next_target_batch(), device, engine.non_blocking, **engine.to_kwargs)
            grl_lambda = dann_lambda(self.progress(engine.state.iteration), self.grl_gamma, self.grl_max)
            for grl in self._grls:
                grl.set_lambda(grl_lambda)

        engine.state.output = {Keys.IMAGE: x_s, Keys.LABEL: mos_s[:, None]}  # (B, 1) like pred

        acc = engine.accumulation_steps
        should_zero_grad = should_step = True
        if acc > 1:
            epoch_length = engine.state.epoch_length
            local_iter = engine.state.iteration - 1
            if epoch_length is not None:
                local_iter %= epoch_length
                should_step = (local_iter + 1) % acc == 0 or (local_iter + 1) == epoch_length
            else:
                should_step = (local_iter + 1) % acc == 0
            should_zero_grad = local_iter % acc == 0

        engine.network.train()
        if self.domain_classifier is not None:
            self.domain_classifier.train()
        terms = training_step(
            engine,
            lambda: self._compute_pred_loss(engine, x_s, mos_s, target, grl_lambda),
            name="training loss",
            zero_grad=should_zero_grad,
            step=should_step,
            accumulation_steps=acc,
        )
        engine.state.output.update(terms)
        if self._gamma is not None:  # the attention gate after this step
            engine.state.output["gamma"] = self._gamma.detach().reshape(()).clone()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output

    def _compute_pred_loss(
        self,
        engine: DomainAdaptationTrainer,
        x_s: torch.Tensor,
        mos_s: torch.Tensor,
        target: Mapping[str, torch.Tensor | None] | None,
        grl_lambda: float,
    ) -> dict[str, torch.Tensor]:
        """Forward of the source (and target) batch; returns the loss and its terms (``loss_reg``, ``loss_dom``...)."""
        output = engine.state.output
        n_source = x_s.shape[0]
        feats_s = feats_t = logits_t = None
        if target is None:
            logits_s = engine.inferer(x_s, engine.network, patch_level=True)
        else:
            x_t = target["image"]
            assert x_t is not None
            if x_s.shape[1:] == x_t.shape[1:]:
                logits, feats = engine.inferer(
                    torch.cat([x_s, x_t]), engine.network, patch_level=True, return_features=True
                )
                logits_s, logits_t = logits[:n_source], logits[n_source:]
                feats_s, feats_t = feats[:n_source], feats[n_source:]
            else:  # different crop sizes: one forward per domain
                logits_s, feats_s = engine.inferer(x_s, engine.network, patch_level=True, return_features=True)
                logits_t, feats_t = engine.inferer(x_t, engine.network, patch_level=True, return_features=True)
        output[Keys.PRED] = torch.sigmoid(logits_s.detach().float()).mean(dim=1, keepdim=True)
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)

        # regression: every patch gets its image's MOS
        reg_logits = [logits_s.reshape(-1)]
        reg_targets = [mos_s.to(logits_s.device)[:, None].expand(-1, logits_s.shape[1]).reshape(-1)]
        if self.mode == "semi_supervised" and target is not None and logits_t is not None:
            mask = self._labelled_mask(target)
            if bool(mask.any()):
                mos_t = target["mos"]
                assert mos_t is not None
                reg_logits.append(logits_t[mask].reshape(-1))
                reg_targets.append(mos_t[mask][:, None].expand(-1, logits_t.shape[1]).reshape(-1))
        loss_reg = self.regression_loss(torch.cat(reg_logits).float(), torch.cat(reg_targets).float()).mean()
        ranking = getattr(self, "_ranking", None)
        if ranking is not None and self.ranking_loss is not None:
            loss_rank = self.ranking_loss(logits_s.float().mean(dim=1), *ranking)
            output["loss_rank"] = loss_rank.detach()
            loss_reg_total = loss_reg + self.ranking_weight * loss_rank
        else:
            loss_reg_total = loss_reg
        if self.teacher is not None:
            with torch.no_grad():
                teacher_logits = engine.inferer(x_s, self.teacher, patch_level=True).float()
            loss_distill = self.distillation_loss(logits_s.float(), teacher_logits)
            output["loss_distill"] = loss_distill.detach()
            loss_reg_total = loss_reg_total + self.distillation_weight * loss_distill

        if feats_s is not None and feats_t is not None and self.domain_classifier is not None:
            features = torch.cat([feats_s.reshape(-1, feats_s.shape[-1]), feats_t.reshape(-1, feats_t.shape[-1])])
            n_s = feats_s.shape[0] * feats_s.shape[1]
            domain = torch.cat(
                [
                    torch.zeros(n_s, device=features.device),
                    torch.ones(features.shape[0] - n_s, device=features.device),
                ]
            )
            domain_logits = self.domain_classifier(features).reshape(-1).float()
            loss_dom = self.domain_loss(domain_logits, domain)
            domain_acc = ((domain_logits.detach() > 0).float() == domain).float().mean()
            loss = loss_reg_total + self.domain_loss_weight * loss_dom
        else:
            loss_dom = torch.zeros((), device=loss_reg.device)
            domain_acc = torch.full((), float("nan"), device=loss_reg.device)
            loss = loss_reg_total

        output["grl_lambda"] = grl_lambda
        output["domain_acc"] = domain_acc
        terms = {Keys.LOSS: loss, "loss_reg": loss_reg, "loss_dom": loss_dom}
        for key in ("loss_rank", "loss_distill"):
            if key in output:
                terms[key] = output[key]
        return terms
