"""IQAD-CT (MKCNet): COVID-CT (UCSD-AI4H) + SARS-CoV-2 CT-scan images; quality = source data set.

Expected layout (the official MKCNet loader reads ``<root>/<NAME>/{train,val,test}.txt`` and opens
``<root>/<NAME>/<path in txt>``)::

    <root>/IQAD_CT/            (or IQAD-CT, the name of the repo's dataset_splits folder)
        train.txt  val.txt  test.txt     # "image_name,DR_label,IQ_label" header, rows "Images/<file>,<d>,<q>"
        Images/...

Diagnosis: 0 = non-COVID, 1 = COVID. Quality: 0 = COVID-CT (figures taken from papers), 1 = SARS-CoV-2 CT scans.
"""

from __future__ import annotations

import os
from pathlib import Path

from monai_iqad.data.converters.common import convert_mkcnet_splits

__all__ = ["convert_iqad_ct"]


def convert_iqad_ct(
    root: str | os.PathLike,
    out_path: str | os.PathLike | None = None,
    split_dir: str | os.PathLike | None = None,
    image_root: str | os.PathLike | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    check_files: bool = True,
) -> Path:
    """Write the IQAD-CT datalist from the official MKCNet split files.

    Args:
        root: data root holding ``IQAD_CT/`` or ``IQAD-CT/`` (or that folder itself).
        out_path: output JSON (default ``<dataset folder>/datalist.json``).
        split_dir: folder of the split files if they are not next to the images (e.g. ``dataset_splits/IQAD-CT``).
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
        "iqad_ct",
        root,
        out_path,
        split_dir=split_dir,
        image_root=image_root,
        val_fraction=val_fraction,
        seed=seed,
        check_files=check_files,
    )
