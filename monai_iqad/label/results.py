"""JSON replies of the MONAI Label tasks (pure Python + numpy/torch; no ``monailabel``).

- SAQM: ``{"quality": {"score", "patch_scores", "patch_grid", "patch_size", "model"}}``
- MKCNet: ``{"diagnosis": {"label", "index", "probabilities"}, "quality": {"grade", "index", "probabilities"},
  "model"}``, from the named heads the bundle's postprocessing writes (``diagnosis_pred``, ``quality_pred``)
- triage: ``{"quality": <SAQM>, "diagnosis": <MKCNet diagnosis + "quality_grade", "model", "gated_by_quality">,
  "gated_by_quality", "quality_score", "quality_threshold"}``

``probabilities`` maps each class name to its probability (rounded to ``digits``), in the network's channel order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["HEADS", "unique_names", "quality_result", "diagnosis_result", "triage_result", "to_list"]

HEADS = ("diagnosis", "quality")
"""Names of the two MKCNet heads, in the order of ``MKCNetInference``'s output."""


def to_list(value: Any) -> Any:
    """A tensor / array / nested sequence as plain Python floats (for JSON)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().float().numpy()
    return np.asarray(value, dtype=np.float64).tolist()


def _round(value: float, digits: int) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"non-finite network output {value!r}")
    return round(value, digits)


def unique_names(names: Sequence[str] | None, count: int, prefix: str) -> list[str]:
    """``count`` distinct display names: ``names`` when they fit, ``"<prefix> <i>"`` for missing ones, and
    ``"<name> (<i>)"`` for duplicates (a JSON object cannot hold the same key twice)."""
    names = [str(n) for n in (names or [])][:count]
    names += [f"{prefix} {i}" for i in range(len(names), count)]
    out: list[str] = []
    for i, name in enumerate(names):
        out.append(f"{name} ({i})" if name in out or names.count(name) > 1 else name)
    return out


def _head(probs: Sequence[float], names: Sequence[str], digits: int) -> tuple[int, dict[str, float]]:
    values = [_round(p, digits) for p in probs]
    index = int(np.argmax(np.asarray([float(p) for p in probs])))
    return index, dict(zip(names, values))


def quality_result(
    score: float | torch.Tensor,
    model: str,
    patch_scores: Any = None,
    patch_size: int | None = None,
    digits: int = 4,
) -> dict[str, Any]:
    """The SAQM reply.

    Args:
        score: image quality score in ``[0, 1]`` (higher = better).
        model: task (bundle) name.
        patch_scores: optional ``(nh, nw)`` grid of patch scores (row-major, top-left first).
        patch_size: patch side in pixels, reported with the grid.
        digits: rounding.

    Raises:
        ValueError: a non-finite score or a score outside ``[0, 1]``.
    """
    value = _round(score.item() if isinstance(score, torch.Tensor) else score, digits)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"quality score {value} outside [0, 1]")
    out: dict[str, Any] = {"score": value, "model": model}
    if patch_scores is not None:
        grid = np.asarray(to_list(patch_scores), dtype=np.float64)
        grid = grid.reshape(grid.shape[-2:]) if grid.ndim > 2 else np.atleast_2d(grid)
        out["patch_scores"] = [[_round(v, digits) for v in row] for row in grid]
        out["patch_grid"] = [int(grid.shape[0]), int(grid.shape[1])]
        if patch_size is not None:
            out["patch_size"] = int(patch_size)
    return {"quality": out}


def diagnosis_result(
    heads: Mapping[str, Any],
    diagnosis_names: Sequence[str] | None,
    quality_names: Sequence[str] | None,
    model: str,
    digits: int = 4,
) -> dict[str, Any]:
    """The MKCNet reply from the probabilities of both heads (the bundle's postprocessing names them).

    Args:
        heads: ``{"diagnosis": (num_diagnosis,), "quality": (num_quality,)}`` probabilities; each head sums to 1.
        diagnosis_names: one name per diagnosis class.
        quality_names: one name per quality grade (index 0 = lowest quality).
        model: task (bundle) name.
        digits: rounding.

    Raises:
        ValueError: a missing or empty head, or non-finite values.
    """
    missing = [h for h in HEADS if h not in heads]
    if missing:
        raise ValueError(f"no {missing} head in the network output (heads: {sorted(heads)})")
    d_values, q_values = (np.asarray(to_list(heads[h]), dtype=np.float64).reshape(-1) for h in HEADS)
    if d_values.size < 1 or q_values.size < 1:
        raise ValueError(f"empty head: {d_values.size} diagnosis and {q_values.size} quality probabilities")
    d_names = unique_names(diagnosis_names, d_values.size, "diagnosis")
    q_names = unique_names(quality_names, q_values.size, "quality")
    d_index, d_probs = _head(d_values, d_names, digits)
    q_index, q_probs = _head(q_values, q_names, digits)
    return {
        "diagnosis": {"label": d_names[d_index], "index": d_index, "probabilities": d_probs},
        "quality": {"grade": q_names[q_index], "index": q_index, "probabilities": q_probs},
        "model": model,
    }


def triage_result(quality: Mapping[str, Any], diagnosis: Mapping[str, Any], threshold: float) -> dict[str, Any]:
    """Combine a SAQM reply and an MKCNet reply: the diagnosis is flagged ``gated_by_quality`` when the quality score
    is below ``threshold`` (strictly).

    Args:
        quality: :func:`quality_result` output.
        diagnosis: :func:`diagnosis_result` output.
        threshold: quality threshold in ``[0, 1]``.
    """
    q = dict(quality["quality"])
    score = float(q["score"])
    gated = bool(score < float(threshold))
    d = dict(diagnosis["diagnosis"])
    d["quality_grade"] = dict(diagnosis["quality"])  # MKCNet's own quality head
    d["model"] = diagnosis.get("model")
    d["gated_by_quality"] = gated
    return {
        "quality": q,
        "diagnosis": d,
        "gated_by_quality": gated,
        "quality_score": score,
        "quality_threshold": float(threshold),
        "message": (
            f"image quality {score:.3f} < threshold {float(threshold):.3f}: treat the diagnosis with caution"
            if gated
            else f"image quality {score:.3f} >= threshold {float(threshold):.3f}"
        ),
    }
