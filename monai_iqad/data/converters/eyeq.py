"""EyeQ (MKCNet): EyePACS fundus photographs with the HzFu/EyeQ quality grades; DR 0-4 remapped to 3 classes.

Two layouts are accepted:

1. The official MKCNet split files (preferred: they define the paper's random 17,274 / 2,879 / 8,637 split)::

       <root>/EYEQ/train.txt val.txt test.txt    # "image_name,DR_label,IQ_label", rows "Images/<f>,<d>,<q>"
       <root>/EYEQ/Images/...

   Labels there already use MKCNet's quality order (0 = Reject, 1 = Usable, 2 = Good); DR grades are remapped
   0 → 0, 1/2/3 → 1, 4 → 2.

2. The official EyeQ label files ``Label_EyeQ_train.csv`` / ``Label_EyeQ_test.csv`` (columns ``image``,
   ``quality`` with 0 = Good, 1 = Usable, 2 = Reject, and ``DR_grade``), found anywhere up to three folders below
   ``root``. The quality is **reversed** to MKCNet's order (``q = 2 - quality``) and DR is remapped. Images are looked
   up by file name or stem (the EyeQ crop script writes ``.png`` for ``.jpeg`` names) under ``image_root``
   (its ``train/``/``test/`` sub-folders first). ``training``/``validation`` come from the train CSV (seeded
   ``val_fraction``), ``test`` from the test CSV: the official EyeQ split, not the paper's re-split.
"""

from __future__ import annotations

import os
from pathlib import Path

from monai_iqad.data.converters.common import (
    ConversionError,
    find_child,
    find_file,
    finish_splits,
    index_files,
    mkcnet_converter,
    parse_int,
    raise_if_missing,
    read_table,
)
from monai_iqad.data.datalist import write_datalist
from monai_iqad.data.datasets import IQAD_DATASETS, remap_dr_grade

__all__ = ["convert_eyeq", "read_eyeq_labels"]

_SUFFIX_PREFERENCE = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def _pick(candidates: list[Path], name: str) -> Path:
    exact = [p for p in candidates if p.name.lower() == name.lower()]
    if exact:
        return exact[0]
    rank = {s: i for i, s in enumerate(_SUFFIX_PREFERENCE)}
    return sorted(candidates, key=lambda p: (rank.get(p.suffix.lower(), len(rank)), str(p)))[0]


def read_eyeq_labels(csv_path: str | os.PathLike) -> list[dict]:
    """Read an official ``Label_EyeQ_*.csv`` into ``[{"name", "diagnosis", "quality"}]`` in MKCNet's encoding.

    Quality is reversed (EyeQ 0 Good / 1 Usable / 2 Reject → MKCNet 0 Reject / 1 Usable / 2 Good) and DR grades
    0-4 are remapped to 0 / 1 / 2. An unnamed leading index column and extra columns are ignored.

    Raises:
        ConversionError: missing columns or values out of range (file and line named).
    """
    rows = read_table(csv_path)
    if not rows:
        raise ConversionError(f"{csv_path}: empty EyeQ label file")
    header = [h.strip().lower() for h in rows[0]]
    try:
        ci = header.index("image")
        cq = header.index("quality")
        cd = next(header.index(n) for n in ("dr_grade", "dr grade", "level", "dr") if n in header)
    except (ValueError, StopIteration) as e:
        raise ConversionError(f"{csv_path}: expected columns 'image', 'quality' and 'DR_grade', got {rows[0]}") from e
    out = []
    for lineno, row in enumerate(rows[1:], start=2):
        if len(row) <= max(ci, cq, cd):
            raise ConversionError(f"{csv_path}:{lineno}: too few columns: {row}")
        q, d = parse_int(row[cq]), parse_int(row[cd])
        if q is None or not 0 <= q <= 2:
            raise ConversionError(f"{csv_path}:{lineno}: EyeQ quality must be 0, 1 or 2, got {row[cq]!r}")
        if d is None or not 0 <= d <= 4:
            raise ConversionError(f"{csv_path}:{lineno}: DR grade must be 0..4, got {row[cd]!r}")
        out.append({"name": row[ci], "diagnosis": remap_dr_grade(d), "quality": 2 - q})
    return out


def _resolve_images(rows: list[dict], roots: list[Path], source: Path, check_files: bool) -> list[dict]:
    indexes = [index_files(r) for r in roots if r.is_dir()]
    items, missing = [], []
    for row in rows:
        name = row["name"].replace("\\", "/").split("/")[-1]
        stem = os.path.splitext(name)[0].lower()
        found = None
        for index in indexes:
            cands = index.get(name.lower()) or index.get(stem)
            if cands:
                found = _pick(cands, name)
                break
        if found is None:
            if check_files:
                missing.append(name)
                continue
            found = roots[0] / name
        items.append({"image": str(found), "diagnosis": row["diagnosis"], "quality": row["quality"]})
    raise_if_missing(source, missing, f"image(s) not found under {', '.join(map(str, roots))}")
    return items


def _convert_label_csvs(
    root: str | os.PathLike,
    out_path: str | os.PathLike | None,
    image_root: str | os.PathLike | None,
    val_fraction: float,
    seed: int,
    check_files: bool,
) -> Path:
    """The official ``Label_EyeQ_*.csv`` layout (used when there are no MKCNet split files)."""
    info = IQAD_DATASETS["eyeq"]
    train_csv = find_file(root, "Label_EyeQ_train.csv")
    if train_csv is None:
        raise ConversionError(
            f"{root}: no MKCNet split files (EYEQ/train.txt) and no official 'Label_EyeQ_train.csv' found"
        )
    test_csv = find_file(root, "Label_EyeQ_test.csv")
    base = Path(image_root) if image_root is not None else Path(root)
    sections = {}
    for section, csv_path, sub in (("training", train_csv, ("train", "training")), ("test", test_csv, ("test",))):
        if csv_path is None:
            continue
        folder = find_child(base, sub, kind="dir")
        roots = [folder, base] if folder is not None else [base]
        sections[section] = _resolve_images(read_eyeq_labels(csv_path), roots, csv_path, check_files)
    sections = finish_splits(sections, val_fraction, 0.0, seed)
    out = Path(out_path) if out_path is not None else Path(root) / "datalist.json"
    return write_datalist(out, {"name": info.official_name, "dataset": info.name, **sections})


_CONVERT_EYEQ_DOC = """Write the EyeQ datalist from the MKCNet split files, or else from the official EyeQ label CSVs.

    Args:
        root: data root holding ``EYEQ/`` with split files, or a folder with ``Label_EyeQ_train.csv``/``test.csv``.
        out_path: output JSON (default ``<dataset folder>/datalist.json``).
        split_dir: folder of the MKCNet split files if they are not next to the images.
        image_root: where the images are (split files: the folder ``Images/...`` is relative to; EyeQ CSVs: the
            folder searched for the images, default ``root``).
        val_fraction: share of the training images used for ``validation`` when no validation split is given.
        seed: seed of that carving.
        check_files: check that every image exists.

    Returns:
        The datalist path.

    Raises:
        ConversionError: neither layout found, missing images, malformed rows, labels out of range.
    """

# convert_eyeq(root, out_path=None, split_dir=None, image_root=None, val_fraction=0.1, seed=0, check_files=True)
convert_eyeq = mkcnet_converter("eyeq", __name__, doc=_CONVERT_EYEQ_DOC, fallback=_convert_label_csvs)
