"""MONAI-style JSON datalists for IQA (MOS regression, two domains) and IQAD (diagnosis + quality) data.

Format (see ``docs/data.md``)::

    {"training": [{"image": "imgs/a.png", "mos": 5.1, "domain": "source"}, ...],
     "validation": [...], "test": [...]}

- IQA items: ``{"image", "mos", "domain", "frame"?, "slice"?}``; ``mos`` is a finite number, or ``null``/missing for
  unlabelled target images when ``require_mos`` allows it (``NaN``/``Infinity`` are refused in every domain); a MOS
  outside the domain's ``mos_range`` is refused with the item named.
- IQAD items: ``{"image", "diagnosis", "quality"}`` (integers; joint label ``quality * num_diagnosis + diagnosis``).

Relative ``image`` paths are relative to the datalist's folder (or ``base_dir``). Every problem raises
:class:`DatalistError` naming the datalist file, the section key, the item index and the image.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from monai_iqad.utils.errors import EmptyDataError, MonaiIqadError
from monai_iqad.utils.io import atomic_write_text

__all__ = [
    "DatalistError",
    "load_datalist",
    "write_datalist",
    "split_items",
    "datalist_mos_range",
    "list_images",
    "find_images",
    "EmptyDatalistError",
    "labelled_items",
    "DOMAINS",
]

DOMAINS = ("source", "target")
#: MOS values outside ``mos_range`` by at most this fraction of the range are accepted (as ``NormalizeMOS`` does)
MOS_TOLERANCE = 0.05

logger = logging.getLogger(__name__)


class DatalistError(MonaiIqadError, ValueError):
    """A datalist file or one of its items is invalid; the message names the file, key, item index and image.

    Attributes ``file`` (the datalist), ``item`` (the item index) and ``field`` (``"mos"``, ``"domain"``...) say the
    same for programs.
    """

    hint = "correct the datalist item named in the message (see docs/data.md for the datalist format)"


class EmptyDatalistError(DatalistError, EmptyDataError):
    """A datalist section, or one of its domains, holds no (labelled) item: a run would train on nothing."""

    hint = EmptyDataError.hint


def _where(path: str | os.PathLike, key: str, index: int | None = None, image: Any = None) -> str:
    where = f"{os.fspath(path)} [{key!r}]"
    if index is not None:
        where += f" item {index}"
    if image is not None:
        where += f" (image {str(image)!r})"
    return where


def _as_int(value: Any) -> int | None:
    """An integer label (int, numpy int, or an integral float such as 1.0); None when it is not one."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real) and math.isfinite(float(value)) and float(value).is_integer():
        return int(value)
    return None


def _as_mos(value: Any) -> float | None:
    """A MOS value as float (finite or NaN); None when it is not a number at all."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    return None


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise DatalistError(f"{path}: datalist file not found", file=path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DatalistError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})", file=path) from e
    except (OSError, UnicodeDecodeError) as e:
        raise DatalistError(f"{path}: cannot read the datalist ({e})", file=path) from e


def load_datalist(
    path: str | os.PathLike,
    key: str = "training",
    task: Literal["iqa", "iqad"] = "iqa",
    base_dir: str | os.PathLike | None = None,
    check_files: bool = True,
    require_mos: bool | Literal["source"] = True,
    num_diagnosis: int | None = None,
    num_quality: int | None = None,
    domain: str | None = None,
    mos_range: Sequence[float] | Mapping[str, Sequence[float] | None] | None = None,
) -> list[dict]:
    """Load and validate one section of a MONAI-style datalist.

    Args:
        path: the JSON datalist.
        key: the section to load (``"training"``, ``"validation"``, ``"test"``...).
        task: ``"iqa"`` (``image``/``mos``/``domain``) or ``"iqad"`` (``image``/``diagnosis``/``quality``).
        base_dir: folder that relative ``image`` paths are relative to; default: the datalist's folder.
        check_files: check that every image exists on disk.
        require_mos: IQA only. ``True``: every item needs a finite MOS. ``False``: a missing/``null`` MOS marks an
            unlabelled image. ``"source"``: required for ``source`` items, optional for ``target`` items.
            Unlabelled items get ``mos = nan`` and ``labelled = 0``; labelled items ``labelled = 1``.
        num_diagnosis: IQAD only; when given, ``diagnosis`` must lie in ``[0, num_diagnosis)``.
        num_quality: IQAD only; when given, ``quality`` must lie in ``[0, num_quality)``.
        domain: keep only the items of this domain (``"source"`` or ``"target"``; items without ``domain`` count as
            ``"source"``).
        mos_range: IQA only: the raw MOS scale ``(low, high)`` (or ``{"source": (low, high), "target": ...}``) that
            every MOS must lie in, give or take ``MOS_TOLERANCE`` of the range (what ``NormalizeMOSd`` accepts).
            Default: the ranges recorded in the datalist's top-level ``"mos_range"`` entry, when it has one.

    Returns:
        A list of new item dicts with absolute ``image`` paths (other keys are kept).

    Raises:
        DatalistError: (a ``ValueError``) missing/invalid file, missing or empty section, item without ``image``,
            image not found, MOS missing where required, not a number, NaN/infinite or outside ``mos_range``, unknown
            domain, diagnosis/quality not an integer or out of range. The message names the datalist file, the key,
            the item index and the image.
        EmptyDatalistError: (a ``DatalistError`` and an ``EmptyDataError``) empty section, or no item left after the
            ``domain`` filter.
    """
    path = Path(path)
    if task not in ("iqa", "iqad"):
        raise ValueError(f"task must be 'iqa' or 'iqad', got {task!r}")
    if require_mos not in (True, False, "source"):
        raise ValueError(f"require_mos must be True, False or 'source', got {require_mos!r}")
    if domain is not None and domain not in DOMAINS:
        raise ValueError(f"domain must be one of {DOMAINS} or None, got {domain!r}")
    data = _read_json(path)
    if not isinstance(data, Mapping):
        raise DatalistError(f"{path}: a datalist must be a JSON object with sections such as 'training'", file=path)
    if key not in data:
        sections = sorted(k for k, v in data.items() if isinstance(v, list))
        raise DatalistError(f"{_where(path, key)}: key not found in the datalist (sections: {sections})", file=path)
    items = data[key]
    if not isinstance(items, list):
        raise DatalistError(f"{_where(path, key)}: must be a list of items, got {type(items).__name__}", file=path)
    if not items:
        raise EmptyDatalistError(f"{_where(path, key)}: the datalist section is empty", file=path, field=key)
    ranges = _mos_ranges(path, data, mos_range) if task == "iqa" else {}
    base = Path(base_dir) if base_dir is not None else path.parent
    out = []
    for index, raw in enumerate(items):
        item = {"image": raw} if isinstance(raw, str) else raw
        if not isinstance(item, Mapping):
            raise DatalistError(
                f"{_where(path, key, index)}: an item must be an object, got {type(raw).__name__}",
                file=path,
                item=index,
            )
        item = dict(item)
        image = item.get("image")
        if not isinstance(image, str) or not image.strip():
            raise DatalistError(
                f"{_where(path, key, index)}: 'image' is missing or not a path string ({image!r})",
                file=path,
                item=index,
                field="image",
            )
        where = _Where(path, key, index, image)
        resolved = Path(os.path.expanduser(image))
        if not resolved.is_absolute():
            resolved = base / resolved
        resolved = Path(os.path.normpath(resolved))
        if check_files and not resolved.is_file():
            from .image_io import file_problem

            raise where.error(f"{file_problem(resolved) or 'not a regular file'}: {resolved}", "image")
        item["image"] = str(resolved)
        for opt in ("frame", "slice"):
            if opt in item and item[opt] is not None:
                value = _as_int(item[opt])
                if value is None or value < 0:
                    raise where.error(f"{opt!r} must be a non-negative integer, got {item[opt]!r}", opt)
                item[opt] = value
        if task == "iqa":
            # items of another domain are not loaded, so their labels are not required (the domain must be valid)
            skip = domain is not None and item.get("domain", "source") != domain
            _validate_iqa(item, where, False if skip else require_mos, ranges)
            if skip:
                continue
        else:
            _validate_iqad(item, where, num_diagnosis, num_quality)
        out.append(item)
    if domain is not None:
        if not out:
            raise EmptyDatalistError(
                f"{_where(path, key)}: the {key!r} split has no item of domain {domain!r} "
                f"(empty domain after filtering; domains present: {sorted({_domain_of(i) for i in items})})",
                file=path,
                field="domain",
            )
    return out


def _domain_of(raw: Any) -> str:
    return str(raw.get("domain", "source")) if isinstance(raw, Mapping) else "source"


class _Where:
    """Where an item is (datalist, key, index, image), to build errors that name it."""

    def __init__(self, path: Path, key: str, index: int, image: Any) -> None:
        self.path, self.key, self.index, self.image = path, key, index, image

    def __str__(self) -> str:
        return _where(self.path, self.key, self.index, self.image)

    def error(self, problem: str, field: str | None = None) -> DatalistError:
        return DatalistError(f"{self}: {problem}", file=self.path, item=self.index, field=field)


def _mos_ranges(
    path: Path, data: Mapping[str, Any], mos_range: Sequence[float] | Mapping[str, Any] | None
) -> dict[str, tuple[float, float]]:
    """``{domain: (low, high)}`` from ``mos_range`` (a pair or a per-domain mapping) or the datalist's record."""
    explicit = mos_range is not None
    if not explicit:
        mos_range = data.get("mos_range")
        if not isinstance(mos_range, Mapping):
            return {}
    if isinstance(mos_range, Mapping):
        per_domain = {d: mos_range.get(d) for d in DOMAINS}
    else:
        per_domain = dict.fromkeys(DOMAINS, mos_range)
    out = {}
    for dom, value in per_domain.items():
        if value is None:
            continue
        try:
            low, high = (float(v) for v in value)
        except (TypeError, ValueError):
            if not explicit:  # an unusable record is reported by datalist_mos_range when a bundle needs it
                continue
            raise ValueError(f"mos_range of domain {dom!r} must be (low, high), got {value!r}") from None
        if math.isfinite(low) and math.isfinite(high) and low < high:
            out[dom] = (low, high)
        elif explicit:
            raise ValueError(f"mos_range of domain {dom!r} must be finite with low < high, got {value!r}")
    return out


def _validate_iqa(item: dict, where: _Where, require_mos: bool | str, ranges: Mapping[str, tuple]) -> None:
    dom = item.get("domain", "source")
    if dom not in DOMAINS:
        raise where.error(f"domain must be one of {DOMAINS}, got {dom!r}", "domain")
    item["domain"] = dom
    required = require_mos is True or (require_mos == "source" and dom == "source")
    raw = item.get("mos")
    if raw is None:
        if required:
            raise where.error(f"'mos' is missing (required for {dom} items here)", "mos")
        item["mos"], item["labelled"] = float("nan"), 0
        return
    mos = _as_mos(raw)
    if mos is None:
        raise where.error(f"'mos' is not a number ({raw!r})", "mos")
    if not math.isfinite(mos):
        # NaN is not "unlabelled": an unlabelled item says so with null (or no 'mos' at all)
        raise where.error(f"'mos' must be a finite number, or null for an unlabelled image; got {raw!r}", "mos")
    if dom in ranges:
        low, high = ranges[dom]
        slack = MOS_TOLERANCE * (high - low)
        if not low - slack <= mos <= high + slack:
            raise where.error(
                f"'mos' {mos:g} is outside the {dom} mos_range [{low:g}, {high:g}] (tolerance {MOS_TOLERANCE:g} of "
                "the range): a wrong scale (e.g. 0-100 scores, DMOS) or a wrong mos_range",
                "mos",
            )
    item["mos"], item["labelled"] = mos, 1


def _validate_iqad(item: dict, where: _Where, num_diagnosis: int | None, num_quality: int | None) -> None:
    for name, count in (("diagnosis", num_diagnosis), ("quality", num_quality)):
        if name not in item or item[name] is None:
            raise where.error(f"{name!r} label is missing", name)
        value = _as_int(item[name])
        if value is None:
            raise where.error(f"{name!r} must be an integer class index, got {item[name]!r}", name)
        if value < 0 or (count is not None and value >= count):
            bound = f"[0, {count - 1}]" if count is not None else ">= 0"
            raise where.error(f"{name!r} label {value} out of range {bound}", name)
        item[name] = value


def labelled_items(
    items: Sequence[Mapping[str, Any]],
    datalist: str | os.PathLike | None = None,
    key: str = "training",
    domain: str | None = None,
) -> list[Mapping[str, Any]]:
    """The items of ``items`` (from :func:`load_datalist`) that have a MOS; an error when there is none.

    A training run over no labelled item would otherwise "succeed": MONAI skips a run whose data loader is empty
    (``dataloader is empty... skip the run``), exits 0 and writes no model.

    Args:
        items: loaded items (with the ``labelled`` flag set by :func:`load_datalist`).
        datalist, key, domain: named in the error message.

    Raises:
        EmptyDatalistError: no item is labelled.
    """
    out = [it for it in items if it.get("labelled", 1)]
    if not out:
        where = f"{os.fspath(datalist)} [{key!r}]" if datalist is not None else f"[{key!r}]"
        dom = f" of domain {domain!r}" if domain else ""
        raise EmptyDatalistError(
            f"{where}: nothing to train on: the {key!r} split has no labelled item{dom} ({len(items)} item(s), all "
            "with mos null)",
            file=datalist,
            field="mos",
            hint="give some of these items a MOS, or train in a mode that does not need them "
            "(e.g. the unsupervised_da.json overlay)",
        )
    return out


def _jsonable(value: Any) -> Any:
    """numpy scalars → Python; NaN → None (JSON has no NaN); Paths → str."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def write_datalist(
    path: str | os.PathLike, sections: Mapping[str, Any], base_dir: str | os.PathLike | None = None
) -> Path:
    """Write a datalist JSON with ``image`` paths relative to the datalist's folder (atomic: temp file + rename).

    Args:
        path: output JSON file (parent folders are created).
        sections: ``{"training": [items], "validation": [...], ...}``. Lists of dicts are items; other values (e.g.
            ``"name"``, ``"description"``) are written as they are.
        base_dir: folder that relative ``image`` paths in ``sections`` are relative to (default: the current working
            directory).

    Returns:
        The path written.
    """
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    base = Path(base_dir).absolute() if base_dir is not None else Path.cwd()
    out: dict[str, Any] = {}
    for name, value in sections.items():
        if isinstance(value, list) and all(isinstance(v, Mapping) for v in value):
            items = []
            for item in value:
                item = dict(item)
                if isinstance(item.get("image"), (str, os.PathLike)):
                    image = Path(os.fspath(item["image"]))
                    image = image if image.is_absolute() else base / image
                    try:
                        item["image"] = Path(os.path.relpath(os.path.normpath(image), path.parent)).as_posix()
                    except ValueError:  # another drive on Windows
                        item["image"] = str(image)
                items.append(_jsonable(item))
            out[str(name)] = items
        else:
            out[str(name)] = _jsonable(value)
    atomic_write_text(path, json.dumps(out, indent=2, allow_nan=False) + "\n")
    return path


def split_items(
    items: Sequence[Any],
    fractions: Sequence[float],
    seed: int = 0,
    group: str | Callable[[Any], Hashable] | None = None,
) -> list[list[Any]]:
    """Split ``items`` deterministically into ``len(fractions)`` parts, optionally keeping groups together.

    Groups (e.g. the reference image of TID2013 distortions, or the pristine image of MD72 versions) are shuffled
    with ``numpy.random.default_rng(seed)`` and dealt out by largest-remainder rounding of ``fractions`` applied to the
    number of groups, so no group (content) appears in two parts. Item order inside a part follows the input order.

    Args:
        items: the items to split.
        fractions: non-negative fractions, normalised to sum to 1 (e.g. ``(0.8, 0.2)``).
        seed: random seed.
        group: dict key or callable giving each item's group; default: every item is its own group.

    Returns:
        One list per fraction.

    Raises:
        ValueError: negative fractions or all zero.
    """
    fr = np.asarray(fractions, dtype=float)
    if fr.ndim != 1 or fr.size == 0 or (fr < 0).any() or fr.sum() <= 0:
        raise ValueError(f"fractions must be non-negative with a positive sum, got {list(fractions)}")
    fr = fr / fr.sum()
    if group is None:
        keys: list[Hashable] = list(range(len(items)))
    elif callable(group):
        keys = [group(it) for it in items]
    else:
        keys = [it[group] for it in items]
    unique = sorted(set(keys), key=lambda k: (str(type(k)), str(k)))
    order = np.random.default_rng(seed).permutation(len(unique))
    exact = fr * len(unique)
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: len(unique) - counts.sum()]:
        counts[i] += 1
    part_of: dict[Hashable, int] = {}
    start = 0
    for part, count in enumerate(counts):
        for j in order[start : start + count]:
            part_of[unique[j]] = part
        start += count
    parts: list[list[Any]] = [[] for _ in fr]
    for item, k in zip(items, keys):
        parts[part_of[k]].append(item)
    return parts


def datalist_mos_range(
    path: str | os.PathLike, domain: str, default: Sequence[float] | None = None
) -> tuple[float, float]:
    """The raw MOS scale of ``domain`` recorded in a datalist's top-level ``"mos_range"`` entry.

    Datalists written by the converters and the demo record each domain's scale, e.g.
    ``{"mos_range": {"source": [0, 9], "target": [1, 5]}}``; bundles use it to map MOS to ``[0, 1]``.

    Args:
        path: datalist JSON.
        domain: ``"source"`` or ``"target"``.
        default: used when the datalist records no range for ``domain``.

    Raises:
        DatalistError: when neither the datalist nor ``default`` gives a valid ``(low, high)`` with ``low < high``.
    """
    data = _read_json(Path(path))
    recorded = data.get("mos_range", {}) if isinstance(data, dict) else {}
    value = recorded.get(domain, default) if isinstance(recorded, dict) else default
    try:
        low, high = (float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError) as exc:
        raise DatalistError(
            f"{path}: no usable 'mos_range' for domain '{domain}' ({value!r}); add "
            f'"mos_range": {{"{domain}": [low, high]}} to the datalist or set the bundle\'s mos_range.',
            file=path,
            field="mos_range",
        ) from exc
    if not low < high:
        raise DatalistError(
            f"{path}: 'mos_range' of domain '{domain}' must have low < high, got {value!r}.",
            file=path,
            field="mos_range",
        )
    return low, high


def find_images(folder: str | os.PathLike, recursive: bool = True) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """The image files under ``folder`` and the files left out, each with the reason.

    A file whose name has an image suffix (PNG/JPEG/BMP/TIFF, DICOM, NIfTI) is an image item, even when it cannot be
    opened (a broken symbolic link, a link loop, no permission): leaving it out would hide it, so it reaches the
    reader, which names the problem (an error, or an error row with ``on_error="skip"``). Other files are left out
    with ``"not an image file name (suffix ...)"``; symbolic links to folders are not followed (``rglob``) and are
    left out with that reason. Both lists are sorted by path.

    Returns:
        ``(items, skipped)``: ``[{"image": path}, ...]`` and ``[{"file": path, "reason": why}, ...]``.

    Raises:
        DatalistError: when ``folder`` does not exist.
    """
    from .image_io import DICOM_SUFFIXES, NIFTI_SUFFIXES, PIL_SUFFIXES

    root = Path(folder)
    if not root.is_dir():
        raise DatalistError(f"{root}: input folder does not exist.", file=root)
    suffixes = PIL_SUFFIXES + DICOM_SUFFIXES + NIFTI_SUFFIXES
    items, skipped = [], []
    for p in sorted(root.rglob("*") if recursive else root.iterdir()):
        if p.name.lower().endswith(suffixes) and not p.is_dir():
            items.append({"image": str(p)})
        elif p.is_symlink() and p.is_dir():
            skipped.append({"file": str(p), "reason": "symbolic link to a folder (not followed)"})
        elif not p.is_dir():
            skipped.append({"file": str(p), "reason": f"not an image file name (suffix not in {', '.join(suffixes)})"})
    return items, skipped


def list_images(folder: str | os.PathLike, recursive: bool = True) -> list[dict[str, str]]:
    """``[{"image": path}, ...]`` for every image file (PNG/JPEG/BMP/TIFF, DICOM, NIfTI) under ``folder``.

    Used by the inference configs to score a folder without a datalist. Files are sorted for determinism. The files
    left out (see :func:`find_images`) are counted and listed in a warning, never dropped silently.

    Raises:
        DatalistError: when ``folder`` does not exist or holds no image.
    """
    items, skipped = find_images(folder, recursive)
    if skipped:
        shown = "; ".join(f"{s['file']} ({s['reason']})" for s in skipped[:20])
        more = f"; ... and {len(skipped) - 20} more" if len(skipped) > 20 else ""
        logger.warning(f"{folder}: {len(items)} image file(s); skipped {len(skipped)} other file(s): {shown}{more}")
    if not items:
        reasons = f" ({len(skipped)} other file(s) skipped: {skipped[0]['file']}: {skipped[0]['reason']}...)"
        raise EmptyDatalistError(
            f"{folder}: no image files found{reasons if skipped else ''}",
            file=folder,
            hint="point input_dir at a folder of PNG/JPEG/BMP/TIFF, DICOM or NIfTI files",
        )
    return items
