"""Diagnosis metrics for quality-aware diagnosis (IQAD): AUC, accuracy and F1, overall and per image-quality grade.

The definitions follow the evaluation code of MKCNet (Che et al., "Image Quality-aware Diagnosis via Meta-knowledge
Co-embedding", CVPR 2023, https://github.com/chehx/MKCNet, ``utils/evaluate.py``), with scikit-learn doing the work:

- ``auc``: probability-based ROC AUC. Binary: ``roc_auc_score(y, p[:, 1])``. Multi-class: macro one-vs-one
  (Hand & Till 2001) on the softmax probabilities, ``roc_auc_score(..., multi_class="ovo", average="macro")``.
- ``auc_official``: the number the official code logs. Multi-class: same as ``auc``. **Binary: the AUC of the hard
  argmax predictions** ``roc_auc_score(y, argmax(p))``, which equals the balanced accuracy.
- ``acc``: ``accuracy_score`` of the argmax predictions.
- ``f1``: ``f1_score`` of the argmax predictions, ``average="binary"`` (positive class 1) for binary tasks (IQAD-CT,
  IQAD-CXR) and ``"macro"`` for multi-class tasks (DeepDRiD, DRAC, EyeQ), as in the official code.

See ``docs/metrics.md``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from ignite.exceptions import NotComputableError
from ignite.metrics import EpochMetric
from ignite.metrics.metric import reinit__is_reduced
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, roc_auc_score

from monai_iqad.metrics._utils import UndefinedMetricWarning, compute_float, gather_and_compute, to_numpy, warn

__all__ = [
    "roc_auc",
    "auc_official",
    "accuracy",
    "f1",
    "confusion",
    "diagnosis_metrics",
    "diagnosis_metric_keys",
    "DiagnosisMetrics",
    "DiagnosisAUC",
]

_F1_AVERAGES = ("binary", "macro", "micro", "weighted")
_PER_GRADE = ("auc", "auc_official", "acc", "f1", "n")
_NAME_RE = re.compile(r"^[A-Za-z0-9_]+$")


# ----------------------------------------------------------------------------------------------------------- inputs
def _probs(probs: Any, num_classes: int | None = None) -> np.ndarray:
    """``(N, C)`` float64 probabilities; a 1-D input is the positive-class probability of a binary task."""
    p = to_numpy(probs)
    if p.ndim == 1:
        if num_classes not in (None, 2):
            raise ValueError(f"1-D probabilities are only accepted for binary tasks, got num_classes={num_classes}.")
        p = np.stack([1.0 - p, p], axis=1)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"probs must have shape (N, C) with C >= 2 (or (N,) for binary), got {p.shape}.")
    if num_classes is not None and p.shape[1] != num_classes:
        raise ValueError(f"probs has {p.shape[1]} columns but num_classes={num_classes}.")
    bad = int(np.count_nonzero(~np.isfinite(p)))
    if bad:
        raise ValueError(f"probs contains {bad} non-finite value(s) (NaN or inf).")
    return p


def _int_vector(x: Any, name: str, n: int | None = None) -> np.ndarray:
    """``(N,)`` int64 class indices from ``(N,)``/``(N, 1)`` integer-valued input."""
    a = to_numpy(x)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise ValueError(f"{name} must have shape (N,) of class indices, got {a.shape}.")
    if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
        raise ValueError(f"{name} must hold integer class indices, got non-integer or non-finite values.")
    if n is not None and a.size != n:
        raise ValueError(f"{name} has {a.size} entries but probs has {n} rows.")
    return a.astype(np.int64)


def _labels(labels: Any, n: int, num_classes: int) -> np.ndarray:
    a = to_numpy(labels)
    if a.ndim == 2 and a.shape[1] == num_classes and num_classes > 1:  # one-hot
        a = a.argmax(axis=1)
    y = _int_vector(a, "labels", n)
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes - 1}], got values in [{y.min()}, {y.max()}].")
    return y


def _hard(probs_or_preds: Any, num_classes: int | None = None) -> np.ndarray:
    """Argmax of ``(N, C)`` probabilities/logits, or ``(N,)`` class indices unchanged."""
    a = to_numpy(probs_or_preds)
    if a.ndim == 2 and a.shape[1] > 1:
        return _probs(a, num_classes).argmax(axis=1)
    try:
        return _int_vector(a, "predictions")
    except ValueError as e:
        raise ValueError(f"{e} Pass (N, C) probabilities or (N,) predicted class indices.") from None


# ------------------------------------------------------------------------------------------------------- functions
def _roc_auc(p: np.ndarray, y: np.ndarray, multi_class: str) -> tuple[float, str | None]:
    """``(auc, None)`` or ``(nan, reason)`` on validated inputs."""
    n_classes = p.shape[1]
    present = np.unique(y)
    if present.size < 2:
        return math.nan, f"only class(es) {present.tolist()} present in {y.size} samples"
    if n_classes == 2:
        return float(roc_auc_score(y, p[:, 1])), None
    sums = p.sum(axis=1)
    if not np.allclose(sums, 1.0, atol=1e-3):
        raise ValueError(
            "Multi-class AUC needs probabilities whose rows sum to 1 (got row sums in "
            f"[{sums.min():.4g}, {sums.max():.4g}]); apply softmax to logits first "
            "(DiagnosisMetrics(apply_softmax=True))."
        )
    p = p / sums[:, None]  # absorb float32 rounding so that scikit-learn's strict check passes
    if multi_class == "ovr" and present.size < n_classes:
        return math.nan, f"one-vs-rest AUC needs all {n_classes} classes, only {present.tolist()} present"
    # labels=range(C): with a class absent, the one-vs-one mean runs over the pairs of classes that are present
    return float(roc_auc_score(y, p, multi_class=multi_class, average="macro", labels=np.arange(n_classes))), None


def _auc_official(p: np.ndarray, y: np.ndarray) -> tuple[float, str | None]:
    if p.shape[1] != 2:
        return _roc_auc(p, y, "ovo")
    present = np.unique(y)
    if present.size < 2:
        return math.nan, f"only class(es) {present.tolist()} present in {y.size} samples"
    return float(roc_auc_score(y, p.argmax(axis=1))), None


def _check_multi_class(multi_class: str) -> None:
    if multi_class not in ("ovo", "ovr"):
        raise ValueError(f"multi_class must be 'ovo' or 'ovr', got {multi_class!r}.")


def roc_auc(probs: Any, labels: Any, multi_class: str = "ovo", num_classes: int | None = None) -> float:
    """Probability-based ROC AUC.

    Args:
        probs: ``(N, C)`` class probabilities (rows summing to 1), or ``(N,)`` positive-class probabilities of a
            binary task.
        labels: ``(N,)`` (or ``(N, 1)``) integer class indices, or ``(N, C)`` one-hot.
        multi_class: for ``C > 2``: ``"ovo"`` (default, macro one-vs-one / Hand & Till, as MKCNet) or ``"ovr"``
            (macro one-vs-rest, as ``monai.metrics.ROCAUCMetric``). Ignored for binary tasks, which use
            ``probs[:, 1]``.
        num_classes: expected ``C`` (checked). Default: ``probs.shape[1]``.

    Returns:
        AUC in ``[0, 1]``. ``nan`` with an :class:`UndefinedMetricWarning` when fewer than two classes are present
        (or, for ``"ovr"``, when any class is absent). With ``"ovo"`` and some classes absent, the macro mean runs
        over the pairs of present classes.

    Raises:
        ValueError: bad shapes, non-finite probabilities, labels outside ``[0, C)``, multi-class rows not summing
            to 1 (logits passed by mistake), or unknown ``multi_class``.
    """
    _check_multi_class(multi_class)
    p = _probs(probs, num_classes)
    value, reason = _roc_auc(p, _labels(labels, p.shape[0], p.shape[1]), multi_class)
    if reason:
        warn(f"roc_auc undefined ({reason}); returning nan.", UndefinedMetricWarning)
    return value


def auc_official(probs: Any, labels: Any, num_classes: int | None = None) -> float:
    """The AUC logged by the official MKCNet code.

    For binary tasks it is ``roc_auc_score(labels, argmax(probs))``, the AUC of **hard** predictions (equal to the
    balanced accuracy), not of probabilities. For multi-class tasks it equals :func:`roc_auc` (macro one-vs-one).

    Args:
        probs: ``(N, C)`` probabilities (or ``(N,)`` positive-class probabilities for binary tasks).
        labels: ``(N,)`` integer class indices or ``(N, C)`` one-hot.
        num_classes: expected ``C`` (checked).

    Returns:
        AUC in ``[0, 1]``; ``nan`` with an :class:`UndefinedMetricWarning` when fewer than two classes are present.

    Raises:
        ValueError: as :func:`roc_auc`.
    """
    p = _probs(probs, num_classes)
    value, reason = _auc_official(p, _labels(labels, p.shape[0], p.shape[1]))
    if reason:
        warn(f"auc_official undefined ({reason}); returning nan.", UndefinedMetricWarning)
    return value


def accuracy(probs_or_preds: Any, labels: Any) -> float:
    """Accuracy of the argmax predictions (``sklearn.metrics.accuracy_score``).

    Args:
        probs_or_preds: ``(N, C)`` probabilities or logits (argmax taken), or ``(N,)`` predicted class indices.
        labels: ``(N,)`` integer class indices.

    Raises:
        ValueError: bad shapes or non-integer indices.
    """
    pred = _hard(probs_or_preds)
    y = _int_vector(labels, "labels", pred.size)
    if y.size == 0:
        raise ValueError("accuracy needs at least one sample.")
    return float(accuracy_score(y, pred))


def f1(probs_or_preds: Any, labels: Any, average: str = "macro") -> float:
    """F1 score of the argmax predictions (``sklearn.metrics.f1_score``, ``zero_division=0``).

    Args:
        probs_or_preds: ``(N, C)`` probabilities or logits (argmax taken), or ``(N,)`` predicted class indices.
        labels: ``(N,)`` integer class indices.
        average: ``"macro"`` (multi-class datasets in MKCNet), ``"binary"`` (positive class 1; binary datasets),
            ``"micro"`` or ``"weighted"``. As in scikit-learn, the macro mean runs over the classes present in
            ``labels`` or predictions.

    Raises:
        ValueError: unknown ``average``, bad shapes, or ``"binary"`` with class indices above 1.
    """
    if average not in _F1_AVERAGES:
        raise ValueError(f"average must be one of {_F1_AVERAGES}, got {average!r}.")
    pred = _hard(probs_or_preds)
    y = _int_vector(labels, "labels", pred.size)
    if y.size == 0:
        raise ValueError("f1 needs at least one sample.")
    if average == "binary" and max(int(y.max()), int(pred.max())) > 1:
        raise ValueError("average='binary' needs classes {0, 1}; use average='macro' for multi-class tasks.")
    kwargs: dict[str, Any] = {"pos_label": 1} if average == "binary" else {}
    return float(f1_score(y, pred, average=average, zero_division=0, **kwargs))


def confusion(probs_or_preds: Any, labels: Any, num_classes: int) -> np.ndarray:
    """Confusion matrix ``(num_classes, num_classes)`` (int64), rows = true class, columns = predicted class.

    Args:
        probs_or_preds: ``(N, C)`` probabilities or logits, or ``(N,)`` predicted class indices.
        labels: ``(N,)`` integer class indices.
        num_classes: ``C``; classes absent from the data still get a row and a column.
    """
    pred = _hard(probs_or_preds)
    y = _int_vector(labels, "labels", pred.size)
    return confusion_matrix(y, pred, labels=np.arange(num_classes)).astype(np.int64)


def _grade_names(num_quality: int, quality_names: Sequence[str] | None) -> list[str]:
    if quality_names is None:
        return [f"q{g}" for g in range(num_quality)]
    names = list(quality_names)
    if len(names) != num_quality:
        raise ValueError(f"quality_names has {len(names)} entries but num_quality={num_quality}.")
    bad = [n for n in names if not isinstance(n, str) or not _NAME_RE.match(n)]
    if bad or len(set(names)) != len(names):
        raise ValueError(f"quality_names must be unique and match [A-Za-z0-9_]+ (metric keys), got {names}.")
    return names


def diagnosis_metric_keys(num_quality: int | None = None, quality_names: Sequence[str] | None = None) -> list[str]:
    """The keys :func:`diagnosis_metrics` returns, in order.

    ``auc, auc_official, acc, f1, n`` followed, for each quality grade ``g`` (named ``q{g}`` unless
    ``quality_names`` are given), by ``auc_{g}, auc_official_{g}, acc_{g}, f1_{g}, n_{g}``.
    """
    if num_quality is None and quality_names is not None:
        num_quality = len(quality_names)
    keys = list(_PER_GRADE)
    if num_quality:
        for name in _grade_names(num_quality, quality_names):
            keys += [f"{k}_{name}" for k in _PER_GRADE]
    return keys


def _block(p: np.ndarray, y: np.ndarray, f1_average: str, multi_class: str, tag: str, notes: list[str]) -> list[Any]:
    """``[auc, auc_official, acc, f1, n]`` on one subset; undefined AUCs become nan and are noted."""
    if y.size == 0:
        notes.append(f"{tag}: no samples")
        return [math.nan, math.nan, math.nan, math.nan, 0]
    auc, reason = _roc_auc(p, y, multi_class)
    auc_off, reason_off = _auc_official(p, y)
    if reason or reason_off:
        notes.append(f"{tag}: {reason or reason_off}")
    pred = p.argmax(axis=1)
    f1_kwargs: dict[str, Any] = {"pos_label": 1} if f1_average == "binary" else {}
    f1_value = float(f1_score(y, pred, average=f1_average, zero_division=0, **f1_kwargs))
    return [auc, auc_off, float(accuracy_score(y, pred)), f1_value, int(y.size)]


def diagnosis_metrics(
    probs: Any,
    labels: Any,
    quality: Any | None = None,
    num_classes: int | None = None,
    num_quality: int | None = None,
    f1_average: str | None = None,
    quality_names: Sequence[str] | None = None,
    multi_class: str = "ovo",
) -> dict[str, float]:
    """AUC (probability-based and official), accuracy and F1, overall and per image-quality grade.

    Args:
        probs: ``(N, C)`` class probabilities (softmax of the diagnosis logits), or ``(N,)`` for binary.
        labels: ``(N,)`` integer diagnosis labels (or ``(N, C)`` one-hot).
        quality: ``(N,)`` integer ground-truth quality grades, or None for overall metrics only.
        num_classes: ``C`` (checked against ``probs``). Default ``probs.shape[1]``.
        num_quality: number of quality grades; every grade in ``range(num_quality)`` gets keys, even when empty.
            Default ``len(quality_names)`` if given, else ``max(quality) + 1``.
        f1_average: default ``"binary"`` (positive class 1) when ``C == 2``, ``"macro"`` otherwise, as MKCNet.
        quality_names: names used in the per-grade keys instead of ``q0, q1, …`` (``[A-Za-z0-9_]+``, e.g.
            ``["reject", "usable", "good"]`` → ``auc_reject``).
        multi_class: ``"ovo"`` (default) or ``"ovr"`` for the probability AUC when ``C > 2``.

    Returns:
        Dict with the keys of :func:`diagnosis_metric_keys`: ``auc``, ``auc_official``, ``acc``, ``f1``, ``n`` and
        ``auc_q0``, ``auc_official_q0``, ``acc_q0``, ``f1_q0``, ``n_q0``, … ``n*`` are ints, the rest floats. An
        AUC undefined on a subset (a single diagnosis class in a grade, or an empty grade) is ``nan``; all such
        cases of one call are reported in a single :class:`UndefinedMetricWarning`.

    Raises:
        ValueError: bad shapes, labels/grades out of range, quality names invalid, unknown ``f1_average`` /
            ``multi_class``, or ``num_quality``/``quality_names`` given without ``quality``.
    """
    _check_multi_class(multi_class)
    p = _probs(probs, num_classes)
    n_classes = p.shape[1]
    y = _labels(labels, p.shape[0], n_classes)
    if y.size == 0:
        raise ValueError("diagnosis_metrics needs at least one sample.")
    f1_average = f1_average or ("binary" if n_classes == 2 else "macro")
    if f1_average not in _F1_AVERAGES:
        raise ValueError(f"f1_average must be one of {_F1_AVERAGES}, got {f1_average!r}.")
    if f1_average == "binary" and n_classes != 2:
        raise ValueError(f"f1_average='binary' needs 2 classes, got {n_classes}; use 'macro'.")

    notes: list[str] = []
    values = _block(p, y, f1_average, multi_class, "all", notes)
    if quality is None:
        if num_quality is not None or quality_names is not None:
            raise ValueError("num_quality/quality_names were given but quality is None.")
        grades: list[str] = []
    else:
        q = _int_vector(quality, "quality", y.size)
        if num_quality is None:
            num_quality = len(quality_names) if quality_names is not None else int(q.max()) + 1
        if q.min() < 0 or q.max() >= num_quality:
            raise ValueError(f"quality grades must lie in [0, {num_quality - 1}], got [{q.min()}, {q.max()}].")
        grades = _grade_names(num_quality, quality_names)
        for g, name in enumerate(grades):
            m = q == g
            values += _block(p[m], y[m], f1_average, multi_class, name, notes)
    if notes:
        warn("diagnosis_metrics: AUC undefined, set to nan for " + "; ".join(notes) + ".", UndefinedMetricWarning)
    keys = diagnosis_metric_keys(len(grades) or None, grades or None)
    return dict(zip(keys, values))


# ------------------------------------------------------------------------------------------------- ignite metrics
def _plain(x: Any) -> torch.Tensor:
    t = torch.as_tensor(x).detach()
    return t.as_subclass(torch.Tensor) if type(t) is not torch.Tensor else t


def _rows(x: Any, name: str) -> torch.Tensor:
    """A batched tensor ``(B, ...)`` or a list of ``B`` per-sample items → ``(B, K)`` tensor."""
    if isinstance(x, (list, tuple)):
        if not x:
            return torch.zeros(0, 1)
        items = [_plain(i).reshape(-1) for i in x]
        if len({i.numel() for i in items}) != 1:
            raise ValueError(f"per-sample {name} items have different sizes: {sorted({i.numel() for i in items})}.")
        return torch.stack(items)
    t = _plain(x)
    if t.ndim == 0:
        return t.reshape(1, 1)
    return t.reshape(t.shape[0], -1)


class _DiagnosisEpochMetric(EpochMetric):
    """Accumulates ``(B, C)`` float64 probabilities and ``(B, 2)`` int64 ``[label, quality]`` (quality -1 = none)."""

    def __init__(
        self,
        compute_fn: Callable[[torch.Tensor, torch.Tensor], Any],
        num_classes: int,
        num_quality: int | None,
        apply_softmax: bool,
        output_transform: Callable[..., Any] | None,
        device: str | torch.device,
    ) -> None:
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}.")
        if num_quality is not None and (not isinstance(num_quality, int) or num_quality < 1):
            raise ValueError(f"num_quality must be None or an int >= 1, got {num_quality!r}.")
        self.num_classes = num_classes
        self.num_quality = num_quality
        self.apply_softmax = apply_softmax
        if output_transform is None:
            from monai.handlers import from_engine

            output_transform = from_engine(["pred", "label", "quality"] if num_quality else ["pred", "label"])
        self.required_output_keys = ("y_pred", "y", "quality") if num_quality else ("y_pred", "y")
        super().__init__(compute_fn, output_transform, check_compute_fn=False, device=device, skip_unrolling=True)

    @reinit__is_reduced
    def update(self, output: Sequence[Any]) -> None:
        """Accumulate one iteration.

        Args:
            output: ``(pred, label)`` or ``(pred, label, quality)``; each a batched tensor or a list of per-sample
                items (MONAI's decollated output). ``pred``: ``(B, C)`` logits (``apply_softmax=True``) or
                probabilities, per sample ``(C,)``. ``label``: ``(B,)``/``(B, 1)`` class indices or ``(B, C)``
                one-hot, per sample a number, ``()``, ``(1,)`` or ``(C,)``. ``quality``: ``(B,)`` ground-truth
                grades, per sample a number, ``()`` or ``(1,)``.

        Raises:
            ValueError: wrong number of items or shapes, or quality missing when ``num_quality`` is set.
        """
        if isinstance(output, Mapping):  # ignite converts mappings with required_output_keys before update
            output = tuple(output[k] for k in self.required_output_keys or ())
        if not isinstance(output, Sequence) or len(output) not in (2, 3):
            raise ValueError("Expected (pred, label) or (pred, label, quality) from output_transform.")
        pred = _rows(output[0], "pred").to(torch.float64)
        if pred.shape[1] != self.num_classes:
            raise ValueError(
                f"pred must be (B, {self.num_classes}) logits/probabilities, got {tuple(pred.shape)} after batching."
            )
        label = _rows(output[1], "label")
        if label.shape[1] == self.num_classes:
            label = label.argmax(dim=1, keepdim=True)
        if label.shape != (pred.shape[0], 1):
            raise ValueError(f"label must be (B,) class indices or (B, C) one-hot, got {tuple(label.shape)}.")
        if self.num_quality:
            if len(output) < 3 or output[2] is None:
                raise ValueError("num_quality is set, so the output_transform must return (pred, label, quality).")
            quality = _rows(output[2], "quality")
            if quality.shape != (pred.shape[0], 1):
                raise ValueError(
                    f"quality must be the ground-truth grade, one integer per sample, got {tuple(quality.shape)} "
                    "(predicted quality logits passed by mistake?)."
                )
        else:
            quality = torch.full_like(label, -1)
        if self.apply_softmax:
            pred = torch.softmax(pred, dim=1)
        target = torch.cat([label.to(torch.float64).round(), quality.to(torch.float64).round()], dim=1).long()
        self._predictions.append(pred.to(self._device))
        self._targets.append(target.to(self._device))

    def _arrays(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        p = pred.cpu().numpy()
        t = target.cpu().numpy()
        return p, t[:, 0], (t[:, 1] if self.num_quality else None)

    def _require_data(self) -> None:
        if len(self._predictions) < 1:
            raise NotComputableError(f"{type(self).__name__} must have at least one example before it can be computed.")


class DiagnosisMetrics(_DiagnosisEpochMetric):
    """AUC, official AUC, accuracy and F1, overall and per quality grade, as one Ignite metric (dict result).

    Wraps :func:`diagnosis_metrics` over the whole epoch (all-gathered across processes; computed on rank 0 and
    broadcast). With ``metrics_result_mode="flatten"`` (default) each key lands in ``engine.state.metrics``
    directly: ``auc``, ``auc_official``, ``acc``, ``f1``, ``n`` and, with ``num_quality``, ``auc_q0``,
    ``auc_official_q0``, ``acc_q0``, ``f1_q0``, ``n_q0``, … (all with ``prefix`` prepended). Use
    :class:`DiagnosisAUC` as the ``key_val_metric``.

    **Output contract.** ``output_transform(engine.state.output)`` returns ``(pred, label)`` or
    ``(pred, label, quality)`` (see :meth:`update`). Default: ``from_engine(["pred", "label", "quality"])`` when
    ``num_quality`` is set, else ``from_engine(["pred", "label"])``: ``pred`` = diagnosis logits ``(C,)`` per
    sample, ``label`` = diagnosis class index, ``quality`` = **ground-truth** quality grade (e.g. copied from the
    batch with ``MultiOutputEvaluator(batch_keys=["quality"])``), not the predicted quality.

    Args:
        num_classes: number of diagnosis classes ``C`` (>= 2).
        num_quality: number of quality grades for the per-grade keys (None: overall only).
        f1_average: default ``"binary"`` for ``C == 2`` else ``"macro"`` (see :func:`f1`).
        quality_names: names for the per-grade keys instead of ``q0, q1, …``.
        apply_softmax: True (default): ``pred`` holds logits and is softmaxed; False: ``pred`` already holds
            probabilities.
        multi_class: ``"ovo"`` (default) or ``"ovr"`` for the probability AUC when ``C > 2``.
        prefix: prepended to every key (e.g. ``"test_"``).
        output_transform: see the output contract. None picks the default.
        device: where predictions are accumulated. Default CPU.
        metrics_result_mode: ``"flatten"`` (default), ``"named"`` or ``"both"`` (see ``ignite.metrics.Metric``).

    Raises:
        ValueError: ``num_classes < 2``, bad ``num_quality``/``quality_names``/``f1_average``/``multi_class``.
    """

    def __init__(
        self,
        num_classes: int,
        num_quality: int | None = None,
        f1_average: str | None = None,
        quality_names: Sequence[str] | None = None,
        apply_softmax: bool = True,
        multi_class: str = "ovo",
        prefix: str = "",
        output_transform: Callable[..., Any] | None = None,
        device: str | torch.device = "cpu",
        metrics_result_mode: Literal["flatten", "named", "both"] = "flatten",
    ) -> None:
        _check_multi_class(multi_class)
        if f1_average is not None and f1_average not in _F1_AVERAGES:
            raise ValueError(f"f1_average must be one of {_F1_AVERAGES}, got {f1_average!r}.")
        if quality_names is not None and num_quality is None:
            num_quality = len(quality_names)
        self.f1_average = f1_average
        self.quality_names = list(quality_names) if quality_names is not None else None
        self.multi_class = multi_class
        self.prefix = prefix
        self._keys = diagnosis_metric_keys(num_quality, self.quality_names)
        super().__init__(self._metrics, num_classes, num_quality, apply_softmax, output_transform, device)
        if metrics_result_mode not in ("flatten", "named", "both"):
            raise ValueError(f"metrics_result_mode must be 'flatten', 'named' or 'both', got {metrics_result_mode!r}.")
        self._metrics_result_mode = metrics_result_mode

    @property
    def result_keys(self) -> list[str]:
        """Result keys, in order (``prefix`` included)."""
        return [self.prefix + k for k in self._keys]

    def _metrics(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        p, y, q = self._arrays(pred, target)
        out = diagnosis_metrics(
            p,
            y,
            q,
            num_classes=self.num_classes,
            num_quality=self.num_quality if q is not None else None,
            f1_average=self.f1_average,
            quality_names=self.quality_names if q is not None else None,
            multi_class=self.multi_class,
        )
        return {self.prefix + k: v for k, v in out.items()}

    def compute(self) -> dict[str, float]:  # type: ignore[override]
        self._require_data()
        if self._result is None:
            self._result = gather_and_compute(self._predictions, self._targets, self._metrics, self.result_keys)
        return self._result  # type: ignore[return-value]


class DiagnosisAUC(_DiagnosisEpochMetric):
    """Validation AUC as a single float, for ``key_val_metric`` and best-checkpoint selection.

    Output contract as :class:`DiagnosisMetrics` without quality: default ``from_engine(["pred", "label"])``.

    Args:
        num_classes: number of diagnosis classes ``C`` (>= 2).
        official: False (default): probability AUC (:func:`roc_auc`). True: :func:`auc_official` (hard-label AUC for
            binary tasks), i.e. the number MKCNet's code selects its best checkpoint on.
        multi_class: ``"ovo"`` (default) or ``"ovr"`` for ``C > 2`` (ignored when ``official``).
        apply_softmax: True (default): ``pred`` holds logits; False: probabilities.
        output_transform: maps ``engine.state.output`` to ``(pred, label)``. None: ``from_engine(["pred", "label"])``.
        device: where predictions are accumulated. Default CPU.

    Returns (compute):
        The AUC (``nan`` with a warning when the epoch holds a single class). MONAI takes the first evaluation as the
        best even when it is ``nan``, and ``current > nan`` is never true afterwards: see ``docs/metrics.md``.
    """

    def __init__(
        self,
        num_classes: int,
        official: bool = False,
        multi_class: str = "ovo",
        apply_softmax: bool = True,
        output_transform: Callable[..., Any] | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        _check_multi_class(multi_class)
        self.official = official
        self.multi_class = multi_class
        super().__init__(self._auc, num_classes, None, apply_softmax, output_transform, device)

    def _auc(self, pred: torch.Tensor, target: torch.Tensor) -> float:
        p, y, _ = self._arrays(pred, target)
        if self.official:
            return auc_official(p, y, num_classes=self.num_classes)
        return roc_auc(p, y, multi_class=self.multi_class, num_classes=self.num_classes)

    def compute(self) -> float:
        return compute_float(self)
