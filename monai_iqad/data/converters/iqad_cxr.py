"""IQAD-CXR (MKCNet): Kermany pediatric CXR (two halves) + NIH ChestX-ray14 images.

Expected layout (the official MKCNet loader reads ``<root>/<NAME>/{train,val,test}.txt`` and opens
``<root>/<NAME>/<path in txt>``)::

    <root>/IQAD_CXR/            (or IQAD-CXR, the name of the repo's dataset_splits folder)
        train.txt  val.txt  test.txt     # "image_name,DR_label,IQ_label" header, rows "Images/<file>,<d>,<q>"
        Images/...

Diagnosis: 0 = normal, 1 = pneumonia. Quality: 0 and 1 = the two halves of the pediatric set, 2 = NIH images.
"""

from __future__ import annotations

import os
from pathlib import Path

from monai_iqad.data.converters.common import convert_mkcnet_splits

__all__ = ["convert_iqad_cxr"]


def convert_iqad_cxr(
    root: str | os.PathLike,
    out_path: str | os.PathLike | None = None,
    split_dir: str | os.PathLike | None = None,
    image_root: str | os.PathLike | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    check_files: bool = True,
) -> Path:
    """Write the IQAD-CXR datalist from the official MKCNet split files.

    Args:
        root: data root holding ``IQAD_CXR/`` or ``IQAD-CXR/`` (or that folder itself).
        out_path: output JSON (default ``<dataset folder>/datalist.json``).
        split_dir: folder of the split files if they are not next to the images (e.g. ``dataset_splits/IQAD-CXR``).
        image_root: folder the ``Images/...`` paths are relative to (default: the dataset folder).
        val_fraction: used only when there is no ``val.txt``.
        seed: seed of that carving.
        check_files: check that every image exists.

    Returns:
        The datalist path.

    Raises:
        ConversionError: missing split file or image, malformed row, label out of range.
    """
    return convert_mkcnet_splits(
        "iqad_cxr",
        root,
        out_path,
        split_dir=split_dir,
        image_root=image_root,
        val_fraction=val_fraction,
        seed=seed,
        check_files=check_files,
    )
