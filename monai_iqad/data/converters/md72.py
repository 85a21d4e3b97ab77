"""MD72 (the SAQM target domain: 72 liver ultrasound images with MOS) or any ``path,mos`` CSV of target images.

MD72 is not publicly packaged, so the converter takes a CSV::

    path,mos[,group]            # header optional; extra columns and whitespace are ignored
    us/img01.png, 3.4, liver01
    ...

``path`` is relative to ``image_root`` (default: the CSV's folder). Header names are matched case-insensitively:
path = ``path``/``image``/``file``/``filename``/``image_path``/``name``; MOS = ``mos``/``score``/``mos_score``;
group = ``group``/``reference``/``ref``/``pristine``/``ref_name``/``source_image``. Without a header the first two
columns are path and MOS. All items get ``domain = "target"``.

Splits: by group (all versions of one pristine image in the same split) when a group column exists, else per image.
Semi-supervised DA: ``labelled_fraction`` keeps the MOS of that share of the *training* targets (seeded) and sets the
others to ``null`` (unlabelled); ``None`` keeps every MOS (the trainer decides whether to use it).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from monai_iqad.data.converters.common import ConversionError, raise_if_missing, read_table
from monai_iqad.data.datalist import split_items, write_datalist

__all__ = ["convert_md72", "read_mos_csv"]

_PATH_NAMES = ("path", "image", "file", "filename", "image_path", "img", "name", "image_name")
_MOS_NAMES = ("mos", "score", "mos_score", "mean_opinion_score")
_GROUP_NAMES = ("group", "reference", "ref", "pristine", "ref_name", "source_image", "reference_image")


def _float(value: str) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def read_mos_csv(csv_path: str | os.PathLike) -> list[dict]:
    """Read a ``path,mos[,group]`` CSV (header optional) into ``[{"path", "mos", "group"}]``.

    Raises:
        ConversionError: missing file, no path/MOS column, a MOS that is missing or not a number (file and line).
    """
    rows = read_table(csv_path)
    if not rows:
        raise ConversionError(f"{csv_path}: the MOS CSV is empty")
    first = [c.lower() for c in rows[0]]
    has_header = len(first) < 2 or _float(rows[0][1]) is None
    if has_header:
        ip = next((first.index(n) for n in _PATH_NAMES if n in first), None)
        im = next((first.index(n) for n in _MOS_NAMES if n in first), None)
        ig = next((first.index(n) for n in _GROUP_NAMES if n in first), None)
        if ip is None or im is None:
            raise ConversionError(
                f"{csv_path}: header {rows[0]} needs a path column ({'/'.join(_PATH_NAMES)}) and a MOS column "
                f"({'/'.join(_MOS_NAMES)})"
            )
        body, start = rows[1:], 2
    else:
        ip, im, ig, body, start = 0, 1, None, rows, 1
    out = []
    for lineno, row in enumerate(body, start=start):
        if len(row) <= max(ip, im) or not row[ip]:
            raise ConversionError(f"{csv_path}:{lineno}: expected a path and a MOS, got {row}")
        mos = _float(row[im])
        if mos is None:
            raise ConversionError(f"{csv_path}:{lineno}: MOS missing or not a number ({row[im]!r}) for {row[ip]!r}")
        group = row[ig] if ig is not None and len(row) > ig and row[ig] else None
        out.append({"path": row[ip], "mos": mos, "group": group})
    if not out:
        raise ConversionError(f"{csv_path}: the MOS CSV has no rows")
    return out


def convert_md72(
    csv_path: str | os.PathLike,
    out_path: str | os.PathLike | None = None,
    image_root: str | os.PathLike | None = None,
    labelled_fraction: float | None = None,
    val_fraction: float = 0.0,
    test_fraction: float = 0.3,
    seed: int = 0,
    check_files: bool = True,
) -> Path:
    """Write the target-domain datalist (``domain = "target"``) from a ``path,mos`` CSV.

    Args:
        csv_path: the CSV (see the module docstring).
        out_path: output JSON (default ``<csv folder>/datalist_md72.json``).
        image_root: folder the CSV paths are relative to (default: the CSV's folder).
        labelled_fraction: share of the training targets that keep their MOS (semi-supervised DA); the others get
            ``mos: null``. ``None``: every item keeps its MOS.
        val_fraction: share of the groups/images for ``validation``.
        test_fraction: share of the groups/images held out for ``test`` (results are reported there).
        seed: seed of the split and of the labelled subset.
        check_files: check that every image exists.

    Returns:
        The datalist path. Items: ``{"image", "mos", "domain": "target", "group"?}``.

    Raises:
        ConversionError: malformed CSV, missing image, fractions out of range.
    """
    csv_path = Path(csv_path)
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= value < 1:
            raise ConversionError(f"{name} must be in [0, 1), got {value}")
    if val_fraction + test_fraction >= 1:
        raise ConversionError(f"val_fraction + test_fraction must be < 1, got {val_fraction + test_fraction}")
    if labelled_fraction is not None and not 0 <= labelled_fraction <= 1:
        raise ConversionError(f"labelled_fraction must be in [0, 1] or None, got {labelled_fraction}")
    rows = read_mos_csv(csv_path)
    base = Path(image_root) if image_root is not None else csv_path.parent
    items, missing = [], []
    for row in rows:
        image = Path(row["path"])
        image = image if image.is_absolute() else base / image
        if check_files and not image.is_file():
            missing.append(str(image))
        item = {"image": str(image), "mos": row["mos"], "domain": "target"}
        if row["group"] is not None:
            item["group"] = row["group"]
        items.append(item)
    raise_if_missing(csv_path, missing)
    grouped = any("group" in it for it in items)
    group = (lambda it: it.get("group", it["image"])) if grouped else None
    train, val, test = split_items(
        items, (1 - val_fraction - test_fraction, val_fraction, test_fraction), seed=seed, group=group
    )
    if labelled_fraction is not None and train:
        n_labelled = round(labelled_fraction * len(train))
        n_labelled = max(n_labelled, 1) if labelled_fraction > 0 else 0
        chosen = set(np.random.default_rng(seed + 1).permutation(len(train))[:n_labelled].tolist())
        train = [it if i in chosen else {**it, "mos": None} for i, it in enumerate(train)]
    sections = {k: v for k, v in (("training", train), ("validation", val), ("test", test)) if v}
    out = Path(out_path) if out_path is not None else csv_path.parent / "datalist_md72.json"
    return write_datalist(out, {"name": "MD72", **sections})
