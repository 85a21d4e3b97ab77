"""Ignite metrics for IQA on image-level scores: ``SROCC``, ``KRCC``, ``PLCC`` and the all-in-one ``IQACorrelations``.

They plug into MONAI engines as ``key_val_metric`` / ``additional_metrics``::

    SupervisedEvaluator(..., key_val_metric={"srocc": SROCC(output_transform=from_engine(["pred", "label"]))},
                        additional_metrics={"iqa": IQACorrelations(output_transform=from_engine(["pred", "label"]))})

**Input contract.** ``output_transform(engine.state.output)`` returns ``(pred, target)``, where each is either

- a list of per-sample items (MONAI's decollated outputs): tensors of shape ``()``, ``(1,)`` or ``(1, 1)``, or
  Python numbers. Ignite unrolls the lists and updates one sample at a time; or
- one batched tensor each, of any shapes holding the same number of scores (e.g. ``(B, 1)`` and ``(B,)``).

``pred`` must already be the **image-level** score (patch scores averaged by the network/inferer). Shapes are
flattened, so a ``(1,)`` prediction against a 0-d label (the usual MONAI case, which ignite's own
``SpearmanRankCorrelation`` rejects as a shape mismatch) is accepted. Values are accumulated as float64 and every
metric is gathered across processes before it is computed (``ignite.metrics.EpochMetric``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from ignite.exceptions import NotComputableError
from ignite.metrics import EpochMetric
from ignite.metrics.regression import KendallRankCorrelation, SpearmanRankCorrelation

from monai_iqad.metrics._utils import compute_float, gather_and_compute
from monai_iqad.metrics.correlation import iqa_summary, krcc, plcc, srocc

__all__ = ["SROCC", "KRCC", "PLCC", "IQACorrelations", "IQA_SUMMARY_KEYS"]

IQA_SUMMARY_KEYS: tuple[str, ...] = ("plcc", "plcc_logistic", "srocc", "krcc", "rmse", "rmse_logistic", "n")
"""Keys of :func:`~monai_iqad.metrics.correlation.iqa_summary` and of ``IQACorrelations`` results."""


def _identity(x: Any) -> Any:
    return x


def _as_flat(x: Any) -> torch.Tensor:
    """A tensor, array, number, or list of those (per-sample items) → one flat float64 tensor."""
    if isinstance(x, (list, tuple)):
        parts = [_as_flat(i) for i in x]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)
    if x is None:
        raise ValueError(
            "Got None instead of a score: IQA metrics need a MOS for every image (unlabelled images can't be scored)."
        )
    t = torch.as_tensor(x).detach()
    if type(t) is not torch.Tensor:  # MetaTensor and other subclasses
        t = t.as_subclass(torch.Tensor)
    return t.reshape(-1).to(torch.float64)


def _flat_scores(output: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y_pred, y)`` of any shapes with the same number of elements → two float64 ``(N,)`` tensors."""
    y_pred, y = _as_flat(output[0]), _as_flat(output[1])
    if y_pred.numel() != y.numel():
        raise ValueError(
            f"pred and label must hold the same number of image-level scores, got {y_pred.numel()} and "
            f"{y.numel()} values; average patch scores before the metric."
        )
    return y_pred, y


class _FlatScores:
    """Mixin for the Ignite epoch-wise score metrics below: shape-tolerant ``update`` (:func:`_flat_scores`) and a
    float ``compute`` (the metric's compute function on the gathered scores; ``NotComputableError`` before data)."""

    def update(self, output: Sequence[Any]) -> None:
        """Accumulate ``(pred, target)``: tensors of any shapes with the same number of scores."""
        super().update(_flat_scores(output))  # type: ignore[misc]

    def compute(self) -> Any:
        return compute_float(self)


class SROCC(_FlatScores, SpearmanRankCorrelation):
    """Spearman rank-order correlation of image-level scores, as an Ignite metric (float result).

    ``ignite.metrics.regression.SpearmanRankCorrelation`` with shape-tolerant updates (see the module docstring) and
    :func:`~monai_iqad.metrics.correlation.srocc` as the compute function (``nan`` with a warning for constant
    scores; ``ValueError`` for NaN scores or fewer than 2 samples).

    Args:
        output_transform: maps ``engine.state.output`` to ``(pred, target)``, e.g. ``from_engine(["pred", "label"])``.
        lower_better: negate predictions first (scores where lower means better). Default False.
        check_compute_fn: run the compute function on the first update (always fails on one decollated sample, so
            the default is False).
        device: where the scores are accumulated. Default CPU.
        skip_unrolling: see ``ignite.metrics.Metric``.
    """

    def __init__(
        self,
        output_transform: Callable[..., Any] = _identity,
        lower_better: bool = False,
        check_compute_fn: bool = False,
        device: str | torch.device = "cpu",
        skip_unrolling: bool = False,
    ) -> None:
        super().__init__(output_transform, check_compute_fn, device, skip_unrolling)
        self.lower_better = lower_better
        self.compute_fn = self._srocc

    def _srocc(self, pred: torch.Tensor, target: torch.Tensor) -> float:
        return srocc(pred, target, lower_better=self.lower_better)


class KRCC(_FlatScores, KendallRankCorrelation):
    """Kendall rank correlation (tau-b by default) of image-level scores, as an Ignite metric (float result).

    ``ignite.metrics.regression.KendallRankCorrelation`` with shape-tolerant updates and
    :func:`~monai_iqad.metrics.correlation.krcc` as the compute function.

    Args:
        variant: ``"b"`` (default) or ``"c"``.
        output_transform: maps ``engine.state.output`` to ``(pred, target)``, e.g. ``from_engine(["pred", "label"])``.
        lower_better: negate predictions first. Default False.
        check_compute_fn: see :class:`SROCC`. Default False.
        device: where the scores are accumulated. Default CPU.
        skip_unrolling: see ``ignite.metrics.Metric``.

    Raises:
        ValueError: ``variant`` not in ``{"b", "c"}``.
    """

    def __init__(
        self,
        variant: str = "b",
        output_transform: Callable[..., Any] = _identity,
        lower_better: bool = False,
        check_compute_fn: bool = False,
        device: str | torch.device = "cpu",
        skip_unrolling: bool = False,
    ) -> None:
        if variant not in ("b", "c"):
            raise ValueError(f"variant must be 'b' or 'c', got {variant!r}.")
        super().__init__(variant, output_transform, check_compute_fn, device, skip_unrolling)
        self.variant = variant
        self.lower_better = lower_better
        self.compute_fn = self._krcc

    def _krcc(self, pred: torch.Tensor, target: torch.Tensor) -> float:
        return krcc(pred, target, variant=self.variant, lower_better=self.lower_better)


class _ScoreEpochMetric(_FlatScores, EpochMetric):
    """``EpochMetric`` over flattened float64 image-level scores (shape-tolerant ``update``)."""


class PLCC(_ScoreEpochMetric):
    """Pearson linear correlation of image-level scores, raw or after the VQEG 4-parameter logistic (float result).

    Computed on the whole epoch with :func:`~monai_iqad.metrics.correlation.plcc` (scipy, float64), rather than
    ``ignite.metrics.regression.PearsonCorrelation``, whose single-pass float32 running sums lose precision for
    scores far from 0 (raw MOS in ``[0, 100]``) and which returns 0 instead of ``nan`` for constant predictions;
    the logistic fit needs all samples anyway.

    Args:
        fit: ``None`` (raw PLCC, default) or ``"logistic4"`` (falls back to the raw PLCC with a warning when the fit
            fails, e.g. fewer than 5 images).
        output_transform: maps ``engine.state.output`` to ``(pred, target)``, e.g. ``from_engine(["pred", "label"])``.
        lower_better: negate predictions first. Default False.
        check_compute_fn: see :class:`SROCC`. Default False.
        device: where the scores are accumulated. Default CPU.
        skip_unrolling: see ``ignite.metrics.Metric``.

    Raises:
        ValueError: ``fit`` not in ``{None, "logistic4"}``.
    """

    def __init__(
        self,
        fit: str | None = None,
        output_transform: Callable[..., Any] = _identity,
        lower_better: bool = False,
        check_compute_fn: bool = False,
        device: str | torch.device = "cpu",
        skip_unrolling: bool = False,
    ) -> None:
        if fit not in (None, "logistic4"):
            raise ValueError(f"fit must be None or 'logistic4', got {fit!r}.")
        self.fit = fit
        self.lower_better = lower_better
        super().__init__(self._plcc, output_transform, check_compute_fn, device, skip_unrolling)

    def _plcc(self, pred: torch.Tensor, target: torch.Tensor) -> float:
        return plcc(pred, target, fit=self.fit, lower_better=self.lower_better)


class IQACorrelations(_ScoreEpochMetric):
    """All IQA numbers of :func:`~monai_iqad.metrics.correlation.iqa_summary` as one Ignite metric (dict result).

    Ignite stores each key of a dict result in ``engine.state.metrics`` directly (``metrics_result_mode="flatten"``,
    the default here), so after attaching it under any name ``engine.state.metrics`` holds ``plcc``,
    ``plcc_logistic``, ``srocc``, ``krcc``, ``rmse``, ``rmse_logistic`` and ``n``. With ``"named"``/``"both"`` the
    dict is also stored under the attached name, which must then differ from those keys. Do not use it as a
    ``key_val_metric`` (a dict is not comparable); use :class:`SROCC` for model selection.

    In distributed runs the scores are all-gathered, the dict is computed on rank 0 and broadcast.

    Args:
        output_transform: maps ``engine.state.output`` to ``(pred, target)``, e.g. ``from_engine(["pred", "label"])``.
        lower_better: negate predictions first. Default False.
        prefix: prepended to every key (e.g. ``"val_"`` → ``val_srocc``). Default ``""``.
        device: where the scores are accumulated. Default CPU.
        skip_unrolling: see ``ignite.metrics.Metric``.
        metrics_result_mode: ``"flatten"`` (default), ``"named"`` or ``"both"``, see ``ignite.metrics.Metric``.
    """

    def __init__(
        self,
        output_transform: Callable[..., Any] = _identity,
        lower_better: bool = False,
        prefix: str = "",
        device: str | torch.device = "cpu",
        skip_unrolling: bool = False,
        metrics_result_mode: Literal["flatten", "named", "both"] = "flatten",
    ) -> None:
        self.lower_better = lower_better
        self.prefix = prefix
        super().__init__(self._summary, output_transform, False, device, skip_unrolling)
        if metrics_result_mode not in ("flatten", "named", "both"):
            raise ValueError(f"metrics_result_mode must be 'flatten', 'named' or 'both', got {metrics_result_mode!r}.")
        self._metrics_result_mode = metrics_result_mode

    @property
    def result_keys(self) -> tuple[str, ...]:
        """Result keys, in order."""
        return tuple(self.prefix + k for k in IQA_SUMMARY_KEYS)

    def _summary(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        out = iqa_summary(pred, target, lower_better=self.lower_better)
        return {self.prefix + k: out[k] for k in IQA_SUMMARY_KEYS}

    def compute(self) -> dict[str, float]:  # type: ignore[override]
        if len(self._predictions) < 1:
            raise NotComputableError("IQACorrelations must have at least one example before it can be computed.")
        if self._result is None:
            self._result = gather_and_compute(self._predictions, self._targets, self._summary, self.result_keys)
        return self._result  # type: ignore[return-value]
