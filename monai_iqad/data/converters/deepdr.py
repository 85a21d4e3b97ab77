"""DeepDRiD regular fundus (MKCNet "DEEPDR"): per-eye DR grade (0-4 → 3 classes) + binary "Overall quality".

Two layouts are accepted:

1. The official MKCNet split files::

       <root>/DEEPDR/train.txt val.txt test.txt   # "image_name,DR_label,IQ_label", rows "Images/<f>,<d>,<q>"
       <root>/DEEPDR/Images/...

2. The DeepDRiD release (deepdrdoc/DeepDRiD), anywhere up to three folders below ``root``::

       regular_fundus_images/regular-fundus-training/regular-fundus-training.csv
       regular_fundus_images/regular-fundus-training/Images/<patient>/<image_id>.jpg
       regular_fundus_images/regular-fundus-validation/regular-fundus-validation.csv  (+ Images/)

   CSV columns used (matched case/space-insensitively): ``image_id``, ``image_path``, ``left_eye_DR_Level``,
   ``right_eye_DR_Level``, ``Overall quality``. The diagnosis is the DR level of the eye in the picture (the
   non-empty per-eye column, or the ``_l``/``_r`` in ``image_id``), remapped 0 → 0, 1/2/3 → 1, 4 → 2; the quality
   is ``Overall quality`` (0 = not good enough for diagnosis, 1 = good). The training CSV gives ``training``, the
   validation CSV ``validation``; a test CSV with the same columns can be passed with ``csv_files={"test": ...}``,
   otherwise ``holdout_fraction`` carves one out of ``training`` (grouped by patient) or the datalist has no test.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path

from monai_iqad.data.converters.common import (
    ConversionError,
    convert_mkcnet_splits_if_present,
    find_file,
    finish_splits,
    index_files,
    raise_if_missing,
    read_table,
)
from monai_iqad.data.datalist import write_datalist
from monai_iqad.data.datasets import IQAD_DATASETS, remap_dr_grade

__all__ = ["convert_deepdr", "read_deepdr_csv"]

DEEPDR_CSV_NAMES = {
    "training": ("regular-fundus-training.csv",),
    "validation": ("regular-fundus-validation.csv",),
    "test": ("regular-fundus-test.csv", "regular-fundus-testing.csv"),
}


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-]", "", name.lower())


def _level(value: str) -> int | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return int(f) if math.isfinite(f) and f.is_integer() else None


def read_deepdr_csv(csv_path: str | os.PathLike) -> list[dict]:
    """Read a DeepDRiD regular-fundus CSV into ``[{"image_id", "image_path", "patient", "diagnosis", "quality"}]``.

    Raises:
        ConversionError: missing columns, no usable per-eye DR level, values out of range (file and line named).
    """
    rows = read_table(csv_path)
    if not rows:
        raise ConversionError(f"{csv_path}: empty DeepDRiD CSV")
    header = [_norm(h) for h in rows[0]]
    col = {}
    for key, names in {
        "image_id": ("imageid",),
        "image_path": ("imagepath", "imgpath"),
        "patient": ("patientid",),
        "left": ("lefteyedrlevel",),
        "right": ("righteyedrlevel",),
        "quality": ("overallquality",),
    }.items():
        col[key] = next((header.index(n) for n in names if n in header), None)
    absent = [k for k in ("image_id", "left", "right", "quality") if col[k] is None]
    if absent:
        raise ConversionError(
            f"{csv_path}: missing DeepDRiD column(s) {absent} (need image_id, left_eye_DR_Level, right_eye_DR_Level, "
            f"Overall quality); header: {rows[0]}"
        )
    out = []
    for lineno, row in enumerate(rows[1:], start=2):
        row = row + [""] * (len(header) - len(row))
        image_id = row[col["image_id"]]
        left, right = _level(row[col["left"]]), _level(row[col["right"]])
        eye = re.search(r"_([lr])\d*$", image_id.lower())
        if left is not None and right is None:
            grade = left
        elif right is not None and left is None:
            grade = right
        elif left is not None and eye is not None:
            grade = left if eye.group(1) == "l" else right
        else:
            raise ConversionError(
                f"{csv_path}:{lineno}: cannot tell the DR level of image {image_id!r} from the per-eye columns"
            )
        if not 0 <= grade <= 4:
            raise ConversionError(f"{csv_path}:{lineno}: DR level {grade} out of range 0..4 ({image_id})")
        quality = _level(row[col["quality"]])
        if quality not in (0, 1):
            raise ConversionError(f"{csv_path}:{lineno}: 'Overall quality' must be 0 or 1, got {row[col['quality']]!r}")
        out.append(
            {
                "image_id": image_id,
                "image_path": row[col["image_path"]] if col["image_path"] is not None else "",
                "patient": row[col["patient"]] if col["patient"] is not None else image_id.split("_")[0],
                "diagnosis": remap_dr_grade(grade),
                "quality": quality,
            }
        )
    return out


def _items_from_csv(csv_path: Path, image_root: Path | None, check_files: bool) -> list[dict]:
    rows = read_deepdr_csv(csv_path)
    index = index_files(csv_path.parent)
    extra = index_files(image_root) if image_root is not None and image_root.is_dir() else {}
    items, missing = [], []
    for row in rows:
        names = [row["image_id"].lower()]
        if row["image_path"]:
            names.insert(0, row["image_path"].replace("\\", "/").split("/")[-1].lower())
        found = next((c[0] for idx in (index, extra) for n in names if (c := idx.get(n))), None)
        if found is None:
            if check_files:
                missing.append(row["image_id"])
                continue
            found = csv_path.parent / "Images" / row["patient"] / f"{row['image_id']}.jpg"
        items.append(
            {"image": str(found), "diagnosis": row["diagnosis"], "quality": row["quality"], "patient": row["patient"]}
        )
    raise_if_missing(csv_path, missing)
    return items


def convert_deepdr(
    root: str | os.PathLike,
    out_path: str | os.PathLike | None = None,
    split_dir: str | os.PathLike | None = None,
    image_root: str | os.PathLike | None = None,
    csv_files: Mapping[str, str | os.PathLike] | None = None,
    val_fraction: float = 0.1,
    holdout_fraction: float = 0.0,
    seed: int = 0,
    check_files: bool = True,
) -> Path:
    """Write the DEEPDR datalist from the MKCNet split files, or else from the DeepDRiD regular-fundus CSVs.

    Args:
        root: data root holding ``DEEPDR/`` with split files, or the DeepDRiD release.
        out_path: output JSON (default ``<dataset folder or root>/datalist.json``).
        split_dir: folder of the MKCNet split files if they are not next to the images.
        image_root: split files: the folder ``Images/...`` is relative to; CSVs: an extra folder searched for images.
        csv_files: ``{"training"|"validation"|"test": csv}`` overriding/adding DeepDRiD CSVs.
        val_fraction: share of ``training`` used as ``validation`` when no validation split/CSV exists.
        holdout_fraction: share of ``training`` held out as ``test`` (grouped by patient) when no test CSV exists.
        seed: seed of the carving.
        check_files: check that every image exists.

    Returns:
        The datalist path.

    Raises:
        ConversionError: neither layout found, missing images, malformed rows, labels out of range.
    """
    info = IQAD_DATASETS["deepdr"]
    splits = dict(val_fraction=val_fraction, holdout_fraction=holdout_fraction, seed=seed, check_files=check_files)
    converted = convert_mkcnet_splits_if_present(info, root, out_path, split_dir, image_root=image_root, **splits)
    if converted is not None:
        return converted
    csvs = {section: find_file(root, names) for section, names in DEEPDR_CSV_NAMES.items()}
    csvs.update({k: Path(v) for k, v in (csv_files or {}).items()})
    if csvs.get("training") is None:
        raise ConversionError(
            f"{root}: no MKCNet split files (DEEPDR/train.txt) and no DeepDRiD 'regular-fundus-training.csv' found"
        )
    extra_root = Path(image_root) if image_root is not None else None
    sections = {s: _items_from_csv(Path(p), extra_root, check_files) for s, p in csvs.items() if p is not None}
    sections = finish_splits(sections, val_fraction, holdout_fraction, seed, group="patient")
    out = Path(out_path) if out_path is not None else Path(root) / "datalist.json"
    return write_datalist(out, {"name": info.official_name, "dataset": info.name, **sections})
