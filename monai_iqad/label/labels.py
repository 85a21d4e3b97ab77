"""Datastore labels → a bundle datalist, for fine-tuning from MONAI Label (pure Python; no ``monailabel``).

Labels live in the datastore as **image info** (``PUT /datastore/image/info?image=ID`` with
``info={"mos": 3.2}`` or ``info={"diagnosis": "NPDR", "quality": 2}``, or edited in ``datastore_v2.json``) or as a
**label JSON** saved for the image (``PUT /datastore/label?image=ID&tag=final`` with a ``.json`` file holding the same
keys). Keys may be nested under the bundle name to keep labels of several bundles apart
(``{"fundus_eyeq_mkcnet_iqad": {"diagnosis": 1, "quality": 0}}``); the nested entry wins.

- SAQM: ``mos`` (a finite number, on any scale; see ``mos_range``).
- MKCNet: ``diagnosis`` and ``quality``: class index or class name (case-insensitive).
- Optional ``frame`` (multi-frame DICOM) and ``slice`` (3D NIfTI).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

from monai_iqad.data import split_items

from .safety import InvalidParameterError, check_index_param, check_mos_range

__all__ = ["LabelError", "LabelRecord", "labels_for_bundle", "extract_labels", "build_datalist", "default_mos_range"]


class LabelError(ValueError):
    """Invalid labels in the datastore, or too few labelled images to train (the message names the images)."""


LabelRecord = Mapping[str, Any]
"""One datastore image: ``{"id": str, "image": path, "info": dict, "label_json": dict | None}``."""


def labels_for_bundle(info: Mapping[str, Any] | None, bundle: str) -> dict[str, Any]:
    """The label keys of one image for ``bundle``: top-level keys, overridden by an entry nested under the bundle
    name."""
    info = dict(info or {})
    scoped = info.get(bundle)
    out = {k: v for k, v in info.items() if not isinstance(v, Mapping)}
    if isinstance(scoped, Mapping):
        out.update(scoped)
    return out


def _class_index(value: Any, names: Sequence[str], count: int, key: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"'{key}' must be a class index or name, got {value!r}")
    if isinstance(value, str):
        text = value.strip()
        lowered = [str(n).strip().lower() for n in names]
        if text.lower() in lowered:
            return lowered.index(text.lower())
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"'{key}' {value!r} is not one of {list(names)}") from None
    if isinstance(value, numbers.Real) and math.isfinite(float(value)) and float(value).is_integer():
        index = int(value)
        if 0 <= index < count:
            return index
        raise ValueError(f"'{key}' {index} out of range [0, {count})")
    raise ValueError(f"'{key}' must be a class index or name, got {value!r}")


def extract_labels(
    record: LabelRecord,
    bundle: str,
    kind: str,
    num_diagnosis: int = 0,
    num_quality: int = 0,
    diagnosis_names: Sequence[str] = (),
    quality_names: Sequence[str] = (),
) -> dict[str, Any] | None:
    """The training labels of one datastore image for a bundle, or None when it has none.

    The label JSON (if any) is read first, the image info over it.

    Args:
        record: ``{"id", "image", "info", "label_json"}``.
        bundle: bundle name (for nested labels).
        kind: ``"saqm"`` (needs ``mos``) or ``"mkcnet"`` (needs ``diagnosis`` and ``quality``).
        num_diagnosis, num_quality, diagnosis_names, quality_names: MKCNet classes.

    Returns:
        ``{"mos": float}`` or ``{"diagnosis": int, "quality": int}``, plus ``frame``/``slice`` when given.

    Raises:
        ValueError: labels present but invalid (not a number, unknown class, out of range, half an MKCNet label).
    """
    label_json = record.get("label_json")
    merged = labels_for_bundle(label_json if isinstance(label_json, Mapping) else {}, bundle)
    merged.update(labels_for_bundle(record.get("info"), bundle))
    out: dict[str, Any] = {}
    if kind == "saqm":
        if merged.get("mos") is None:
            return None
        value = merged["mos"]
        try:
            mos = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"'mos' must be a number, got {value!r}") from None
        if isinstance(value, bool) or not math.isfinite(mos):
            raise ValueError(f"'mos' must be a finite number, got {value!r}")
        out["mos"] = mos
    elif kind == "mkcnet":
        has_d, has_q = merged.get("diagnosis") is not None, merged.get("quality") is not None
        if not has_d and not has_q:
            return None
        if has_d != has_q:
            raise ValueError("needs both 'diagnosis' and 'quality' (only one is set)")
        out["diagnosis"] = _class_index(merged["diagnosis"], diagnosis_names, num_diagnosis, "diagnosis")
        out["quality"] = _class_index(merged["quality"], quality_names, num_quality, "quality")
    else:
        raise ValueError(f"unknown bundle kind {kind!r}")
    for key in ("frame", "slice"):
        try:
            index = check_index_param(merged, key)
        except InvalidParameterError as e:
            raise ValueError(str(e)) from None
        if index is not None:
            out[key] = index
    return out


def default_mos_range(values: Sequence[float]) -> tuple[float, float]:
    """``(0, 1)`` when every MOS lies in ``[0, 1]``, else ``(floor(min), ceil(max))`` (widened by 1 if equal)."""
    low, high = min(values), max(values)
    if 0.0 <= low and high <= 1.0:
        return 0.0, 1.0
    low, high = float(math.floor(low)), float(math.ceil(high))
    return (low, high) if low < high else (low, low + 1.0)


def build_datalist(
    records: Sequence[LabelRecord],
    bundle: str,
    kind: str,
    val_split: float = 0.2,
    seed: int = 0,
    mos_range: Sequence[float] | None = None,
    num_diagnosis: int = 0,
    num_quality: int = 0,
    diagnosis_names: Sequence[str] = (),
    quality_names: Sequence[str] = (),
    skip_invalid: bool = False,
    min_validation: int | None = None,
) -> dict[str, Any]:
    """A MONAI-style datalist (``training``/``validation``) from labelled datastore images.

    SAQM items are ``{"image", "mos", "domain": "target", "id"}`` and the datalist records
    ``"mos_range": {"source": r, "target": r}`` (``mos_range`` or :func:`default_mos_range`); MKCNet items are
    ``{"image", "diagnosis", "quality", "id"}``. Images without labels are left out. The split is deterministic
    (``seed``: :func:`monai_iqad.data.split_items`) and both parts get at least one image.

    Args:
        records: datastore images (see :data:`LabelRecord`).
        bundle: bundle name.
        kind: ``"saqm"`` or ``"mkcnet"``.
        val_split: validation fraction in ``[0, 1)``.
        seed: split seed.
        mos_range: SAQM: raw MOS scale ``[low, high]``.
        num_diagnosis, num_quality, diagnosis_names, quality_names: MKCNet classes.
        skip_invalid: leave out images with invalid labels instead of failing.
        min_validation: fewest validation images (default: 2 for SAQM, whose correlation metrics need two, else 1);
            at least ``min_validation + 1`` labelled images are needed.

    Returns:
        The datalist dict, plus ``"skipped"`` (``{id: reason}`` for invalid labels left out) and ``"unlabelled"``
        (count).

    Raises:
        LabelError: invalid labels (unless ``skip_invalid``) or too few labelled images.
    """
    items: list[dict[str, Any]] = []
    problems: dict[str, str] = {}
    unlabelled = 0
    for record in records:
        image_id = str(record.get("id"))
        try:
            labels = extract_labels(record, bundle, kind, num_diagnosis, num_quality, diagnosis_names, quality_names)
        except ValueError as e:
            problems[image_id] = str(e)
            continue
        if labels is None:
            unlabelled += 1
            continue
        item = {"image": str(record["image"]), **labels, "id": image_id}
        if kind == "saqm":
            item["domain"] = "target"
        items.append(item)
    if problems and not skip_invalid:
        listed = "; ".join(f"{k}: {v}" for k, v in sorted(problems.items())[:10])
        raise LabelError(f"invalid labels for bundle '{bundle}' ({len(problems)} image(s)): {listed}")
    min_val = max(1, int(min_validation if min_validation is not None else (2 if kind == "saqm" else 1)))
    need = min_val + 1
    if len(items) < need:
        keys = "'mos'" if kind == "saqm" else "'diagnosis' and 'quality'"
        raise LabelError(
            f"bundle '{bundle}' needs at least {need} labelled images in the datastore, found {len(items)} "
            f"(set {keys} with PUT /datastore/image/info)"
        )
    if not 0.0 <= float(val_split) < 1.0:
        raise LabelError(f"val_split must be in [0, 1), got {val_split!r}")
    train, val = split_items(items, (1.0 - float(val_split), float(val_split)), seed=int(seed))
    while len(val) < min_val:
        val.append(train.pop())
    if not train:
        train.append(val.pop())
    out: dict[str, Any] = {
        "name": f"MONAI Label datastore labels for {bundle}",
        "description": "Written by monai_iqad.label from the datastore's image info / label JSON.",
        "training": train,
        "validation": val,
    }
    if kind == "saqm":
        try:
            low, high = (
                check_mos_range(mos_range) if mos_range is not None else default_mos_range([it["mos"] for it in items])
            )
        except InvalidParameterError as e:
            raise LabelError(str(e)) from None
        slack = 0.05 * (high - low)  # NormalizeMOSd's tolerance
        outside = [it["id"] for it in items if not low - slack <= it["mos"] <= high + slack]
        if outside:
            raise LabelError(f"MOS outside mos_range [{low}, {high}] for image(s) {outside[:10]}")
        out["mos_range"] = {"source": [low, high], "target": [low, high]}
    out["skipped"] = problems
    out["unlabelled"] = unlabelled
    return out
