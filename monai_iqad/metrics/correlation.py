"""IQA correlation metrics over image-level score arrays: PLCC (raw or after a 4-parameter logistic), SROCC, KRCC.

The conventions follow pyiqa (``pyiqa/metrics/correlation_coefficient.py``, Chen et al., TOPIQ / IQA-PyTorch,
https://github.com/chaofengc/IQA-PyTorch): SROCC is ``scipy.stats.spearmanr``, KRCC is ``scipy.stats.kendalltau``
(tau-b), PLCC is the raw Pearson correlation unless the VQEG 4-parameter logistic fit is asked for by name, and
lower-is-better scores are negated before any correlation. See ``docs/metrics.md``.

Every function accepts numpy arrays, tensors (any device and float dtype), numbers in lists, or lists of per-sample
tensors (MONAI's decollated outputs), of any shape that flattens to ``N`` scores.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from scipy import optimize, special, stats

from monai_iqad.metrics._utils import Logistic4FitWarning, UndefinedMetricWarning, to_numpy, warn

__all__ = [
    "logistic4",
    "fit_logistic4",
    "plcc",
    "srocc",
    "krcc",
    "rmse",
    "iqa_summary",
    "Logistic4FitWarning",
    "UndefinedMetricWarning",
]

MIN_FIT_POINTS = 5
"""Fewest samples for which :func:`fit_logistic4` attempts the 4-parameter fit."""

_FITS = (None, "logistic4")


def logistic4(x: Any, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """VQEG 4-parameter logistic ``(b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2`` (pyiqa's ``logistic_4params``).

    Args:
        x: scores, any shape.
        b1: upper asymptote. b2: lower asymptote. b3: mid point. b4: scale (its sign is ignored).

    Returns:
        float64 array of the same shape as ``x`` (evaluated with ``scipy.special.expit``, so no overflow).
    """
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (b1 - b2) * special.expit((x - b3) / np.abs(b4)) + b2


def _logistic4_jac(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """Analytic Jacobian ``(N, 4)`` of :func:`logistic4` with respect to ``(b1, b2, b3, b4)``.

    ``curve_fit``'s default finite differences use a step relative to each parameter, so a parameter that starts at
    exactly 0 (``b3 = mean(x)`` for centred scores) never moves and the fit stalls; the analytic form does not.
    """
    s = np.abs(b4)
    z = (x - b3) / s
    g = special.expit(z)
    dg = (b1 - b2) * g * (1.0 - g)
    return np.stack([g, 1.0 - g, -dg / s, -dg * z * np.sign(b4) / s], axis=1)


def _scores(pred: Any, target: Any, lower_better: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Validate and flatten ``pred``/``target`` into two float64 vectors of equal length ``N >= 2``."""
    p = to_numpy(pred).reshape(-1)
    t = to_numpy(target).reshape(-1)
    if p.size != t.size:
        raise ValueError(f"pred and target must hold the same number of scores, got {p.size} and {t.size}.")
    if p.size < 2:
        raise ValueError(f"A correlation needs at least 2 samples, got {p.size}.")
    for name, a in (("pred", p), ("target", t)):
        bad = int(np.count_nonzero(~np.isfinite(a)))
        if bad:
            raise ValueError(f"{name} contains {bad} non-finite value(s) (NaN or inf) out of {a.size}.")
    return (-p if lower_better else p), t


def _constant(metric: str, p: np.ndarray, t: np.ndarray) -> bool:
    """Warn and return True when either vector is constant (the correlation is then undefined)."""
    which = [name for name, a in (("pred", p), ("target", t)) if np.ptp(a) == 0]
    if which:
        warn(
            f"{metric}: {' and '.join(which)} is constant over {p.size} samples; the correlation is undefined, "
            "returning nan.",
            UndefinedMetricWarning,
            stacklevel=4,
        )
    return bool(which)


def _fit(p: np.ndarray, t: np.ndarray) -> np.ndarray | None:
    """4-parameter logistic fit of ``t`` on ``p``; ``None`` (with a warning) on failure. Inputs already validated."""
    if p.size < MIN_FIT_POINTS:
        reason = f"too few points (n={p.size} < {MIN_FIT_POINTS})"
    elif np.ptp(p) == 0 or np.ptp(t) == 0:
        reason = "constant " + ("pred" if np.ptp(p) == 0 else "target")
    else:
        p0 = [float(np.max(t)), float(np.min(t)), float(np.mean(p)), float(np.std(p)) / 4.0]
        reason = ""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", optimize.OptimizeWarning)
                params, _ = optimize.curve_fit(logistic4, p, t, p0=p0, jac=_logistic4_jac, maxfev=10000)
            params = np.asarray(params, dtype=np.float64)
            if not np.all(np.isfinite(params)) or params[3] == 0:
                reason = f"non-finite or degenerate parameters {params.tolist()}"
            elif not np.all(np.isfinite(logistic4(p, *params))) or np.ptp(logistic4(p, *params)) == 0:
                reason = "the fitted curve is constant or non-finite on the data"
            else:
                return params
        except (RuntimeError, ValueError, optimize.OptimizeWarning, FloatingPointError) as e:
            reason = f"{type(e).__name__}: {e}"
    warn(
        f"4-parameter logistic fit failed ({reason}); falling back to the raw (unfitted) scores.",
        Logistic4FitWarning,
        stacklevel=4,
    )
    return None


def fit_logistic4(pred: Any, target: Any, lower_better: bool = False) -> np.ndarray | None:
    """Fit the VQEG 4-parameter :func:`logistic4` mapping ``pred`` onto ``target`` (``scipy.optimize.curve_fit``).

    Initialised at ``[max(target), min(target), mean(pred), std(pred) / 4]`` as in pyiqa's ``fit_curve``; unlike
    pyiqa, the analytic Jacobian is given to ``curve_fit`` (same least-squares optimum, but no stall when a parameter
    starts at exactly 0, e.g. zero-mean scores).

    Args:
        pred: predicted scores, flattening to ``(N,)``.
        target: subjective scores (MOS), flattening to ``(N,)``.
        lower_better: negate ``pred`` first (the returned parameters then apply to ``-pred``).

    Returns:
        ``array([b1, b2, b3, b4])`` (float64), or ``None`` when the fit fails: fewer than 5 points, constant input,
        ``RuntimeError`` / ``OptimizeWarning`` from ``curve_fit``, or non-finite parameters. A failure emits a
        :class:`Logistic4FitWarning` (and a DEBUG log line).

    Raises:
        ValueError: mismatched lengths, fewer than 2 samples, or NaN/inf in the inputs.
    """
    p, t = _scores(pred, target, lower_better)
    return _fit(p, t)


def _pearson(p: np.ndarray, t: np.ndarray) -> float:
    return float(stats.pearsonr(p, t)[0])


def _logistic_pred(p: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, bool]:
    """``(mapped pred, fitted?)``: ``pred`` through the fitted logistic, or ``pred`` itself when the fit fails."""
    params = _fit(p, t)
    return (p, False) if params is None else (logistic4(p, *params), True)


def plcc(pred: Any, target: Any, fit: str | None = None, lower_better: bool = False) -> float:
    """Pearson linear correlation coefficient between predicted scores and MOS.

    Args:
        pred: predicted scores, flattening to ``(N,)``.
        target: subjective scores (MOS), flattening to ``(N,)``.
        fit: ``None`` (default): raw PLCC, pyiqa's default. ``"logistic4"``: map ``pred`` through the fitted
            :func:`logistic4` first (VQEG); if the fit fails, warn and return the raw PLCC.
        lower_better: negate ``pred`` first (for scores where lower means better quality, e.g. NIQE, BRISQUE).

    Returns:
        PLCC in ``[-1, 1]``; ``nan`` (with an :class:`UndefinedMetricWarning`) if either input is constant.

    Raises:
        ValueError: unknown ``fit``, mismatched lengths, fewer than 2 samples, or NaN/inf in the inputs.
    """
    if fit not in _FITS:
        raise ValueError(f"fit must be one of {_FITS}, got {fit!r}.")
    p, t = _scores(pred, target, lower_better)
    if _constant("plcc", p, t):
        return math.nan
    if fit == "logistic4":
        p, _ = _logistic_pred(p, t)
    return _pearson(p, t)


def srocc(pred: Any, target: Any, lower_better: bool = False) -> float:
    """Spearman rank-order correlation coefficient (``scipy.stats.spearmanr``).

    Args:
        pred: predicted scores, flattening to ``(N,)``.
        target: subjective scores (MOS), flattening to ``(N,)``.
        lower_better: negate ``pred`` first.

    Returns:
        SROCC in ``[-1, 1]``; ``nan`` (with an :class:`UndefinedMetricWarning`) if either input is constant.

    Raises:
        ValueError: mismatched lengths, fewer than 2 samples, or NaN/inf in the inputs.
    """
    p, t = _scores(pred, target, lower_better)
    if _constant("srocc", p, t):
        return math.nan
    return float(stats.spearmanr(p, t)[0])


def krcc(pred: Any, target: Any, variant: str = "b", lower_better: bool = False) -> float:
    """Kendall rank correlation coefficient (``scipy.stats.kendalltau``).

    Args:
        pred: predicted scores, flattening to ``(N,)``.
        target: subjective scores (MOS), flattening to ``(N,)``.
        variant: ``"b"`` (tau-b, default, pyiqa's and scipy's default, handles ties) or ``"c"``.
        lower_better: negate ``pred`` first.

    Returns:
        KRCC in ``[-1, 1]``; ``nan`` (with an :class:`UndefinedMetricWarning`) if either input is constant.

    Raises:
        ValueError: unknown ``variant``, mismatched lengths, fewer than 2 samples, or NaN/inf in the inputs.
    """
    if variant not in ("b", "c"):
        raise ValueError(f"variant must be 'b' or 'c', got {variant!r}.")
    p, t = _scores(pred, target, lower_better)
    if _constant("krcc", p, t):
        return math.nan
    return float(stats.kendalltau(p, t, variant=variant)[0])


def rmse(pred: Any, target: Any, fit: str | None = None, lower_better: bool = False) -> float:
    """Root mean squared error between ``pred`` and ``target``, raw (in the target's units) or after the logistic.

    Args:
        pred: predicted scores, flattening to ``(N,)``.
        target: subjective scores (MOS), flattening to ``(N,)``.
        fit: ``None`` (raw, pyiqa's default; only meaningful when both are on the same scale) or ``"logistic4"``
            (falls back to raw with a warning when the fit fails).
        lower_better: negate ``pred`` before the logistic fit (ignored by the raw RMSE, which compares values).

    Raises:
        ValueError: unknown ``fit``, mismatched lengths, fewer than 2 samples, or NaN/inf in the inputs.
    """
    if fit not in _FITS:
        raise ValueError(f"fit must be one of {_FITS}, got {fit!r}.")
    p, t = _scores(pred, target)
    if fit == "logistic4":
        mapped, fitted = _logistic_pred(-p if lower_better else p, t)
        if fitted:
            p = mapped
    return float(np.sqrt(np.mean((p - t) ** 2)))


def iqa_summary(pred: Any, target: Any, lower_better: bool = False) -> dict[str, float]:
    """All IQA agreement numbers at once (one logistic fit, at most one warning per problem).

    Args:
        pred: predicted scores, flattening to ``(N,)``.
        target: subjective scores (MOS), flattening to ``(N,)``.
        lower_better: negate ``pred`` before the correlations and the fit.

    Returns:
        ``{"plcc", "plcc_logistic", "srocc", "krcc", "rmse", "rmse_logistic", "n"}``: raw PLCC, PLCC after the
        4-parameter logistic (= raw PLCC when the fit fails, with a warning), SROCC, KRCC (tau-b), raw RMSE in the
        target's units, RMSE after the logistic (= raw RMSE when the fit fails), and the sample count ``n`` (int).
        Correlations are ``nan`` (one warning) when either input is constant.

    Raises:
        ValueError: mismatched lengths, fewer than 2 samples, or NaN/inf in the inputs.
    """
    raw_p, t = _scores(pred, target)
    p = -raw_p if lower_better else raw_p
    out: dict[str, float] = {"n": int(p.size)}
    raw_rmse = float(np.sqrt(np.mean((raw_p - t) ** 2)))
    if _constant("iqa_summary", p, t):
        out.update(plcc=math.nan, plcc_logistic=math.nan, srocc=math.nan, krcc=math.nan)
        out.update(rmse=raw_rmse, rmse_logistic=raw_rmse)
        return out
    mapped, fitted = _logistic_pred(p, t)
    out["plcc"] = _pearson(p, t)
    out["plcc_logistic"] = _pearson(mapped, t) if fitted else out["plcc"]
    out["srocc"] = float(stats.spearmanr(p, t)[0])
    out["krcc"] = float(stats.kendalltau(p, t)[0])
    out["rmse"] = raw_rmse
    out["rmse_logistic"] = float(np.sqrt(np.mean((mapped - t) ** 2))) if fitted else raw_rmse
    return out
