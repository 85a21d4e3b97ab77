"""TID2013 (Ponomarenko et al.): the SAQM source domain, by default distortion #9 (image denoising) → 125 images.

Expected layout (the public release)::

    <root>/mos_with_names.txt          # one "MOS filename" pair per line, e.g. "6.08 i01_09_1.bmp"
    <root>/distorted_images/           # I01_09_1.bmp, i01_09_2.bmp, I01_11_1.BMP ... (case is inconsistent)
    <root>/reference_images/           # not needed

File names follow ``iXX_YY_Z.bmp`` = reference XX, distortion YY, level Z. They are matched case-insensitively
(the archive mixes ``I01_..``/``i01_..`` and ``.bmp``/``.BMP``). MOS is kept raw (0-9 scale, higher = better);
the pipeline maps it to [0, 1] with ``mos_range=(0, 9)``. Splits are made **by reference image**, so no content
appears in two splits.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

from monai_iqad.data.converters.common import ConversionError, find_child, raise_if_missing
from monai_iqad.data.datalist import split_items, write_datalist

__all__ = ["convert_tid2013", "read_tid2013_mos", "TID2013_DISTORTIONS"]

_NAME = re.compile(r"^i(\d+)_(\d+)_(\d+)\.bmp$", re.IGNORECASE)

TID2013_DISTORTIONS = {
    1: "additive Gaussian noise",
    2: "additive noise in colour components",
    3: "spatially correlated noise",
    4: "masked noise",
    5: "high-frequency noise",
    6: "impulse noise",
    7: "quantization noise",
    8: "Gaussian blur",
    9: "image denoising",
    10: "JPEG compression",
    11: "JPEG2000 compression",
    12: "JPEG transmission errors",
    13: "JPEG2000 transmission errors",
    14: "non-eccentricity pattern noise",
    15: "local block-wise distortions",
    16: "mean shift (intensity shift)",
    17: "contrast change",
    18: "change of colour saturation",
    19: "multiplicative Gaussian noise",
    20: "comfort noise",
    21: "lossy compression of noisy images",
    22: "image colour quantization with dither",
    23: "chromatic aberrations",
    24: "sparse sampling and reconstruction",
}


def read_tid2013_mos(path: str | os.PathLike) -> list[dict]:
    """Parse ``mos_with_names.txt`` into ``[{"name", "mos", "reference", "distortion", "level"}]``.

    Each non-empty line holds a MOS and a file name separated by whitespace (either order is accepted).

    Raises:
        ConversionError: missing file, a line without a number and an ``iXX_YY_Z.bmp`` name (file and line named).
    """
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: TID2013 MOS file not found (expected 'mos_with_names.txt' in the root)")
    out = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8-sig", errors="replace").splitlines(), start=1):
        tokens = line.replace(",", " ").split()
        if not tokens:
            continue
        names = [t for t in tokens if _NAME.match(t)]
        numbers = []
        for t in tokens:
            try:
                numbers.append(float(t))
            except ValueError:
                continue
        if len(names) != 1 or len(numbers) != 1 or not math.isfinite(numbers[0]):
            raise ConversionError(f"{path}:{lineno}: expected 'MOS iXX_YY_Z.bmp', got {line.strip()!r}")
        ref, dist, level = (int(g) for g in _NAME.match(names[0]).groups())
        out.append({"name": names[0], "mos": numbers[0], "reference": ref, "distortion": dist, "level": level})
    if not out:
        raise ConversionError(f"{path}: the MOS file has no rows")
    return out


def convert_tid2013(
    root: str | os.PathLike,
    out_path: str | os.PathLike | None = None,
    distortions: Sequence[int] | None = (9,),
    levels: Sequence[int] | None = (1, 2, 3, 4, 5),
    references: Sequence[int] | None = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    seed: int = 0,
    check_files: bool = True,
) -> Path:
    """Write the TID2013 source-domain datalist (``domain = "source"``).

    Args:
        root: TID2013 folder with ``mos_with_names.txt`` and ``distorted_images/`` (names matched case-insensitively).
        out_path: output JSON (default ``<root>/datalist_tid2013.json``).
        distortions: distortion types to keep (default ``(9,)``: image denoising; None: all 24).
        levels: distortion levels to keep (default all five).
        references: reference images to keep (default all 25).
        val_fraction: share of the *reference images* whose distorted versions form ``validation``.
        test_fraction: share of the reference images that form ``test`` (0: no test section).
        seed: seed of the split.
        check_files: check that every selected image exists (always done case-insensitively).

    Returns:
        The datalist path. Items: ``{"image", "mos", "domain": "source", "reference", "distortion", "level"}``.

    Raises:
        ConversionError: missing MOS file or image folder, a selected image missing, malformed MOS line, empty
            selection.
    """
    root = Path(root)
    if not root.is_dir():
        raise ConversionError(f"{root}: TID2013 root folder not found")
    mos_file = find_child(root, "mos_with_names.txt", kind="file") or root / "mos_with_names.txt"
    rows = read_tid2013_mos(mos_file)
    keep = [
        r
        for r in rows
        if (distortions is None or r["distortion"] in set(distortions))
        and (levels is None or r["level"] in set(levels))
        and (references is None or r["reference"] in set(references))
    ]
    if not keep:
        raise ConversionError(
            f"{mos_file}: no image matches distortions={distortions}, levels={levels}, references={references}"
        )
    img_dir = find_child(root, "distorted_images", kind="dir")
    if img_dir is None:
        raise ConversionError(f"{root}: no 'distorted_images' folder")
    on_disk = {p.name.lower(): p for p in img_dir.iterdir()}
    items, missing = [], []
    for r in keep:
        path = on_disk.get(r["name"].lower())
        if path is None:
            if check_files:
                missing.append(r["name"])
                continue
            path = img_dir / r["name"]
        items.append(
            {
                "image": str(path),
                "mos": r["mos"],
                "domain": "source",
                "reference": f"I{r['reference']:02d}",
                "distortion": r["distortion"],
                "level": r["level"],
            }
        )
    raise_if_missing(img_dir, missing, f"image(s) listed in {mos_file.name} not found (case-insensitive)")
    train, val, test = split_items(
        items, (1 - val_fraction - test_fraction, val_fraction, test_fraction), seed=seed, group="reference"
    )
    sections = {k: v for k, v in (("training", train), ("validation", val), ("test", test)) if v}
    out = Path(out_path) if out_path is not None else root / "datalist_tid2013.json"
    return write_datalist(out, {"name": "TID2013", "mos_range": [0, 9], **sections})
