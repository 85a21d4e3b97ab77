"""DRAC 2022 (MKCNet): ultra-wide OCT angiography, grayscale, DR grading (3 classes) + binary quality.

Expected layout::

    <root>/DRAC/
        train.txt            # official MKCNet split (611 images): "image_name,DR_label,IQ_label", "Images/<f>,<d>,<q>"
        test.txt             # NOT shipped officially (test labels are hidden by the challenge): optional
        Images/...

The official code selects the model on the test split for DRAC (it has no validation split). Without ``test.txt``
either pass ``test_file=`` (a split file in the same format) or let ``holdout_fraction`` (default 0.2) carve a
seeded held-out test set out of ``train.txt``. ``validation`` mirrors ``test`` unless ``val_fraction > 0``.
"""

from __future__ import annotations

import os
from pathlib import Path

from monai_iqad.data.converters.common import convert_mkcnet_splits

__all__ = ["convert_drac"]


def convert_drac(
    root: str | os.PathLike,
    out_path: str | os.PathLike | None = None,
    split_dir: str | os.PathLike | None = None,
    image_root: str | os.PathLike | None = None,
    test_file: str | os.PathLike | None = None,
    holdout_fraction: float = 0.2,
    val_fraction: float = 0.0,
    seed: int = 0,
    check_files: bool = True,
) -> Path:
    """Write the DRAC datalist from the official MKCNet ``train.txt`` plus a user test file or a held-out split.

    Args:
        root: data root holding ``DRAC/`` (or that folder itself).
        out_path: output JSON (default ``<dataset folder>/datalist.json``).
        split_dir: folder of the split files if they are not next to the images.
        image_root: folder the ``Images/...`` paths are relative to (default: the dataset folder).
        test_file: split file with labelled test images, used when there is no ``test.txt``.
        holdout_fraction: fraction of ``train.txt`` held out as ``test`` when there is no test file.
        val_fraction: fraction of the remaining training images used as ``validation``; 0 (default) makes
            ``validation`` a copy of ``test``, as the official code selects on the test split for DRAC.
        seed: seed of the carving.
        check_files: check that every image exists.

    Returns:
        The datalist path.

    Raises:
        ConversionError: missing ``train.txt`` or image, malformed row, label out of range, no test split at all.
    """
    return convert_mkcnet_splits(
        "drac",
        root,
        out_path,
        split_dir=split_dir,
        image_root=image_root,
        test_file=test_file,
        val_fraction=val_fraction,
        holdout_fraction=holdout_fraction,
        seed=seed,
        check_files=check_files,
    )
