"""Helpers shared by the dataset converters: tolerant table reading, case-insensitive file lookup, the MKCNet
split-file reader and the conversion of MKCNet split folders into a MONAI datalist."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from monai_iqad.data.datalist import split_items, write_datalist
from monai_iqad.data.datasets import IQADDatasetInfo, get_dataset_info, remap_dr_grade

__all__ = [
    "ConversionError",
    "read_table",
    "find_child",
    "find_file",
    "index_files",
    "parse_int",
    "read_mkcnet_split",
    "find_dataset_dir",
    "has_split_files",
    "check_images",
    "raise_if_missing",
    "finish_splits",
    "labels_from_split",
    "convert_mkcnet_splits",
    "convert_mkcnet_splits_if_present",
    "mkcnet_converter",
    "IMAGE_SUFFIXES",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom", ".nii", ".nii.gz")
SPLIT_FILE_NAMES = {
    "training": ("train.txt", "training.txt", "train.csv"),
    "validation": ("val.txt", "valid.txt", "validation.txt", "val.csv"),
    "test": ("test.txt", "testing.txt", "test.csv"),
}


class ConversionError(ValueError):
    """A public dataset layout could not be converted; the message names the file (and line) at fault."""


def read_table(path: str | os.PathLike) -> list[list[str]]:
    """Read a small delimited text table tolerantly.

    Handles a UTF-8 BOM, ``,``/``;``/tab/whitespace delimiters (sniffed from the first data line), surrounding
    whitespace, blank lines and ``#`` comment lines.

    Returns:
        The rows as lists of stripped strings, header row included (callers decide whether there is one).

    Raises:
        ConversionError: the file is missing or unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise ConversionError(f"{path}: cannot read the file ({e})") from e
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        return []
    first = lines[0]
    delim = next((d for d in (",", "\t", ";") if d in first), None)
    if delim is None:
        return [ln.split() for ln in lines]
    rows = csv.reader(io.StringIO("\n".join(lines)), delimiter=delim, skipinitialspace=True)
    return [[c.strip() for c in row] for row in rows if any(c.strip() for c in row)]


def parse_int(value: str) -> int | None:
    """``"3"``/``"3.0"`` → 3; anything else → None."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return int(f) if f.is_integer() else None


def find_child(folder: str | os.PathLike, names: str | Iterable[str], kind: str = "any") -> Path | None:
    """Find a direct child of ``folder`` whose name matches one of ``names`` case-insensitively.

    Args:
        folder: folder to look in.
        names: candidate names (the first one found wins, in the order given).
        kind: ``"file"``, ``"dir"`` or ``"any"``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    names = [names] if isinstance(names, str) else list(names)
    children = {}
    for child in sorted(folder.iterdir()):
        if kind == "file" and not child.is_file() or kind == "dir" and not child.is_dir():
            continue
        children.setdefault(child.name.lower(), child)
    for name in names:
        if name.lower() in children:
            return children[name.lower()]
    return None


def find_file(root: str | os.PathLike, names: str | Iterable[str], max_depth: int = 3) -> Path | None:
    """Breadth-first, case-insensitive search for a file named like one of ``names`` under ``root``."""
    names = [names] if isinstance(names, str) else list(names)
    level = [Path(root)]
    for _ in range(max_depth + 1):
        nxt = []
        for folder in level:
            found = find_child(folder, names, kind="file")
            if found is not None:
                return found
            if folder.is_dir():
                nxt.extend(sorted(c for c in folder.iterdir() if c.is_dir()))
        level = nxt
    return None


def index_files(root: str | os.PathLike, suffixes: Sequence[str] = IMAGE_SUFFIXES) -> dict[str, list[Path]]:
    """Map lower-case file names *and* lower-case stems of the image files under ``root`` to their paths."""
    index: dict[str, list[Path]] = {}
    for dirpath, _dirs, files in os.walk(root):
        for f in sorted(files):
            low = f.lower()
            if not low.endswith(tuple(suffixes)):
                continue
            p = Path(dirpath) / f
            index.setdefault(low, []).append(p)
            stem = low[: -len(".nii.gz")] if low.endswith(".nii.gz") else os.path.splitext(low)[0]
            index.setdefault(stem, []).append(p)
    return index


def read_mkcnet_split(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read an official MKCNet split file ``image_name,DR_label,IQ_label``.

    The header line is skipped when present (the official files have one, the README example does not). Rows are
    ``Images/<file>,<diagnosis>,<quality>``; whitespace and extra trailing columns are tolerated. Labels are
    returned raw (no DR remap).

    Returns:
        ``[{"image": "Images/<file>", "diagnosis": int, "quality": int, "line": int}, ...]``.

    Raises:
        ConversionError: missing file, or a row without an image and two integer labels (file and line named).
    """
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: MKCNet split file not found")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConversionError(f"{path}: cannot read the split file ({e})") from e
    items = []
    first = True
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.replace("\t", ",").split(",")]
        ints = [parse_int(f) for f in fields[1:3]] if len(fields) >= 3 else [None, None]
        if first and (len(fields) < 3 or None in ints):
            first = False  # header line, e.g. "image_name,DR_label,IQ_label"
            continue
        first = False
        if len(fields) < 3 or not fields[0] or None in ints:
            raise ConversionError(
                f"{path}:{lineno}: expected 'image,diagnosis,quality' with integer labels, got {line!r}"
            )
        items.append({"image": fields[0].replace("\\", "/"), "diagnosis": ints[0], "quality": ints[1], "line": lineno})
    if not items:
        raise ConversionError(f"{path}: the split file has no rows")
    return items


def find_dataset_dir(root: str | os.PathLike, info: IQADDatasetInfo) -> Path:
    """The folder holding ``train.txt``: ``root`` itself or ``root/<NAME>`` for any accepted folder name.

    Accepts the official loader's names (``IQAD_CT``) and the repo's split-folder names (``IQAD-CT``), any case.
    Returns ``root`` when neither holds split files (callers then look for other layouts).
    """
    root = Path(root)
    if not root.is_dir():
        raise ConversionError(f"{root}: dataset root folder not found")
    if find_child(root, SPLIT_FILE_NAMES["training"], kind="file") is not None:
        return root
    for name in info.folder_names:
        sub = find_child(root, name, kind="dir")
        if sub is not None and find_child(sub, SPLIT_FILE_NAMES["training"], kind="file") is not None:
            return sub
    for name in info.folder_names:
        sub = find_child(root, name, kind="dir")
        if sub is not None:
            return sub
    return root


def has_split_files(folder: str | os.PathLike) -> bool:
    """True when ``folder`` holds an MKCNet ``train.txt``."""
    return find_child(folder, SPLIT_FILE_NAMES["training"], kind="file") is not None


def raise_if_missing(source: str | os.PathLike, missing: Sequence[str], what: str = "image(s) not found") -> None:
    """Raise one :class:`ConversionError` ``"<source>: N <what>: a, b, c, d, e and K more"`` when ``missing`` is
    not empty (up to 5 names listed)."""
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise ConversionError(f"{source}: {len(missing)} {what}: {', '.join(missing[:5])}{more}")


def check_images(items: Sequence[Mapping[str, Any]], source: str) -> None:
    """Raise :class:`ConversionError` listing (up to 5 of) the images that do not exist."""
    missing = [str(it["image"]) for it in items if not Path(it["image"]).is_file()]
    raise_if_missing(source, missing, "image file(s) not found")


def finish_splits(
    sections: dict[str, list[dict]],
    val_fraction: float,
    holdout_fraction: float,
    seed: int,
    mirror_test_as_validation: bool = False,
    group: str | None = None,
) -> dict[str, list[dict]]:
    """Fill in missing ``test``/``validation`` sections by carving them out of ``training`` (seeded).

    ``test`` (if absent) takes ``holdout_fraction`` of the training items; ``validation`` (if absent) takes
    ``val_fraction`` of what is left, or mirrors ``test`` when ``val_fraction`` is 0 and ``mirror_test_as_validation``
    (the official DRAC protocol selects the model on its test split).
    """
    train = sections["training"]
    if "test" not in sections and holdout_fraction > 0:
        train, test = split_items(train, (1 - holdout_fraction, holdout_fraction), seed=seed, group=group)
        sections["test"] = test
    if "validation" not in sections:
        if val_fraction > 0:
            train, val = split_items(train, (1 - val_fraction, val_fraction), seed=seed + 1, group=group)
            sections["validation"] = val
        elif mirror_test_as_validation and "test" in sections:
            sections["validation"] = list(sections["test"])
    sections["training"] = train
    if not train:
        raise ConversionError("no training item left after carving validation/test splits")
    order = ("training", "validation", "test")
    return {k: sections[k] for k in order if k in sections and sections[k]}


def labels_from_split(
    rows: list[dict[str, Any]], info: IQADDatasetInfo, split_path: Path, image_root: Path
) -> list[dict[str, Any]]:
    """Turn split-file rows into datalist items: DR remap where needed, range checks, absolute image paths."""
    items = []
    for row in rows:
        where = f"{split_path}:{row['line']}"
        d, q = row["diagnosis"], row["quality"]
        if info.remap_dr:
            if not 0 <= d <= 4:
                raise ConversionError(f"{where}: DR grade {d} out of range 0..4 ({row['image']})")
            d = remap_dr_grade(d)
        if not 0 <= d < info.num_diagnosis:
            raise ConversionError(f"{where}: diagnosis {d} out of range 0..{info.num_diagnosis - 1} ({row['image']})")
        if not 0 <= q < info.num_quality:
            raise ConversionError(f"{where}: quality {q} out of range 0..{info.num_quality - 1} ({row['image']})")
        items.append({"image": str(image_root / row["image"]), "diagnosis": d, "quality": q})
    return items


def convert_mkcnet_splits(
    dataset: str | IQADDatasetInfo,
    root: str | os.PathLike,
    out_path: str | os.PathLike | None = None,
    split_dir: str | os.PathLike | None = None,
    image_root: str | os.PathLike | None = None,
    test_file: str | os.PathLike | None = None,
    val_fraction: float = 0.1,
    holdout_fraction: float = 0.0,
    seed: int = 0,
    check_files: bool = True,
) -> Path:
    """Convert an MKCNet dataset folder (``train.txt``/``val.txt``/``test.txt`` + ``Images/``) to a datalist.

    Args:
        dataset: key of :data:`monai_iqad.data.IQAD_DATASETS` (``"eyeq"``, ``"iqad_ct"``...).
        root: the data root (holding ``<NAME>/`` with any accepted folder name) or the dataset folder itself.
        out_path: output JSON; default ``<dataset folder>/datalist.json``.
        split_dir: folder with the split files (e.g. the official repo's ``dataset_splits/IQAD-CT``); default: the
            dataset folder.
        image_root: folder the split files' image paths are relative to; default: the dataset folder.
        test_file: a split file to use as ``test`` when the folder has no ``test.txt`` (DRAC ships none).
        val_fraction: fraction of ``training`` carved out as ``validation`` when there is no ``val.txt``
            (0: ``validation`` mirrors ``test``).
        holdout_fraction: fraction of ``training`` carved out as ``test`` when there is neither ``test.txt`` nor
            ``test_file``.
        seed: seed of the carving.
        check_files: check that every image exists.

    Returns:
        The datalist path. Items are ``{"image", "diagnosis", "quality"}`` with DR grades remapped for DEEPDR/EYEQ.

    Raises:
        ConversionError: missing split files or images, malformed rows, labels out of range.
    """
    info = get_dataset_info(dataset)
    ds_dir = find_dataset_dir(root, info)
    split_dir = Path(split_dir) if split_dir is not None else ds_dir
    image_root = Path(image_root) if image_root is not None else ds_dir
    sections: dict[str, list[dict]] = {}
    for section, names in SPLIT_FILE_NAMES.items():
        found = find_child(split_dir, names, kind="file")
        if found is None and section == "test" and test_file is not None:
            found = Path(test_file)
        if found is None:
            if section == "training":
                raise ConversionError(
                    f"{split_dir}: no MKCNet split file {names[0]!r} for {info.official_name} "
                    f"(accepted folder names under the root: {', '.join(info.folder_names)})"
                )
            continue
        sections[section] = labels_from_split(read_mkcnet_split(found), info, found, image_root)
        if check_files:
            check_images(sections[section], str(found))
    if "test" not in sections and holdout_fraction <= 0:
        raise ConversionError(
            f"{split_dir}: no test split for {info.official_name}: pass test_file=... or holdout_fraction > 0"
        )
    sections = finish_splits(sections, val_fraction, holdout_fraction, seed, mirror_test_as_validation=True)
    out = Path(out_path) if out_path is not None else ds_dir / "datalist.json"
    return write_datalist(out, {"name": info.official_name, "dataset": info.name, **sections})


def convert_mkcnet_splits_if_present(
    dataset: str | IQADDatasetInfo,
    root: str | os.PathLike,
    out_path: str | os.PathLike | None = None,
    split_dir: str | os.PathLike | None = None,
    **kwargs: Any,
) -> Path | None:
    """:func:`convert_mkcnet_splits` when ``split_dir`` is given or the dataset folder holds ``train.txt``.

    For converters that accept a second, dataset-specific layout. ``kwargs`` go to :func:`convert_mkcnet_splits`.

    Returns:
        The datalist path, or None when there are no MKCNet split files (the caller tries its other layout).

    Raises:
        ConversionError: ``root`` is not a folder, or as :func:`convert_mkcnet_splits`.
    """
    info = get_dataset_info(dataset)
    ds_dir = find_dataset_dir(root, info)
    if split_dir is None and not has_split_files(ds_dir):
        return None
    return convert_mkcnet_splits(info, root, out_path, split_dir=split_dir, **kwargs)


_MKCNET_CONVERTER_DOC = """Write the {display} datalist from the official MKCNet split files.

    Args:
        root: data root holding ``{folder}/`` or ``{display}/`` (or that folder itself).
        out_path: output JSON (default ``<dataset folder>/datalist.json``).
        split_dir: folder of the split files if they are not next to the images (e.g. ``dataset_splits/{display}``).
        image_root: folder the ``Images/...`` paths are relative to (default: the dataset folder).
        val_fraction: used only when there is no ``val.txt``.
        seed: seed of that carving.
        check_files: check that every image exists.

    Returns:
        The datalist path.

    Raises:
        ConversionError: missing split file or image, malformed row, label out of range.
    """


def mkcnet_converter(
    dataset: str, module: str, doc: str | None = None, fallback: Callable[..., Path] | None = None
) -> Callable[..., Path]:
    """Build the public ``convert_<dataset>(root, out_path, split_dir, image_root, val_fraction, seed, check_files)``
    of a dataset laid out as MKCNet split files, optionally with a second layout.

    Args:
        dataset: key of :data:`monai_iqad.data.IQAD_DATASETS` (``"eyeq"``, ``"iqad_ct"``...).
        module: ``__name__`` of the module that exposes the function (its ``__module__``, for pickling and docs).
        doc: the function's docstring; default: the split-files docstring naming the dataset's folder names.
        fallback: ``fallback(root, out_path, image_root, val_fraction, seed, check_files) -> Path`` converting the
            dataset's other layout when there is no ``split_dir`` and the dataset folder has no ``train.txt``;
            None: split files only (a missing ``train.txt`` raises :class:`ConversionError`).
    """
    info = get_dataset_info(dataset)

    def convert(
        root: str | os.PathLike,
        out_path: str | os.PathLike | None = None,
        split_dir: str | os.PathLike | None = None,
        image_root: str | os.PathLike | None = None,
        val_fraction: float = 0.1,
        seed: int = 0,
        check_files: bool = True,
    ) -> Path:
        splits = dict(split_dir=split_dir, image_root=image_root, val_fraction=val_fraction, seed=seed)
        if fallback is None:
            return convert_mkcnet_splits(info, root, out_path, check_files=check_files, **splits)
        converted = convert_mkcnet_splits_if_present(info, root, out_path, check_files=check_files, **splits)
        if converted is not None:
            return converted
        return fallback(root, out_path, image_root, val_fraction, seed, check_files)

    convert.__name__ = convert.__qualname__ = f"convert_{info.name}"
    convert.__module__ = module
    convert.__doc__ = doc or _MKCNET_CONVERTER_DOC.format(display=info.folder_names[1], folder=info.folder_names[0])
    return convert
