"""Real images available offline inside Python packages: scikit-image's data images, pydicom's (and, when
installed, pydicom-data's) DICOM test files and data files of other installed packages (:func:`package_file`, e.g.
dipy's T1 slice). Nothing is downloaded.

:func:`dicom_path` is the one place that locates a DICOM file; the demo builders call it through this module
(``sources.dicom_path``), so a test can hide files with one ``monkeypatch``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "NATURAL_IMAGES",
    "INSTALL_HINT",
    "available_sources",
    "dicom_frames",
    "dicom_meta",
    "dicom_path",
    "package_file",
    "pydicom_data_dir",
    "skimage_image",
]

#: scikit-image images inside the wheel used as pristine natural references (source domain); all CC0, public domain
#: or "no known copyright restrictions" per their docstrings. Left out: ``clock`` (real motion blur), ``page``
#: (uneven illumination), ``moon`` (low contrast, no licence note), ``stereo_motorcycle`` (Middlebury licence).
NATURAL_IMAGES: tuple[str, ...] = (
    "astronaut", "brick", "camera", "cell", "chelsea", "coffee", "coins",
    "grass", "gravel", "hubble_deep_field", "immunohistochemistry", "rocket", "text",
)  # fmt: skip

_PYDICOM_FILES = ("examples_ybr_color.dcm", "examples_rgb_color.dcm", "examples_palette.dcm", "CT_small.dcm")
_PYDICOM_DATA_FILES = (
    "US1_UNCR.dcm", "OBXXXX1A.dcm", "color3d_jpeg_baseline.dcm", "RG1_UNCR.dcm", "RG3_UNCR.dcm", "693_UNCR.dcm",
)  # fmt: skip

#: What to install for the optional real images (pydicom-data: ultrasound cine, chest and head radiographs/CT).
INSTALL_HINT = "pip install pydicom-data"


@functools.cache
def skimage_image(name: str) -> np.ndarray | None:
    """A scikit-image data image as float64 in [0, 1] (``(H, W)`` or ``(H, W, 3)``), or None if it cannot load."""
    import skimage.data

    try:
        img = getattr(skimage.data, name)()
    except Exception:  # pooch-backed images fail offline: treat as absent
        return None
    if isinstance(img, tuple):  # e.g. stereo_motorcycle -> (left, right, disparity)
        img = img[0]
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[..., :3]
    if img.dtype == np.uint8:
        out = img.astype(np.float64) / 255.0
    else:
        out = img.astype(np.float64)
        out = (out - out.min()) / max(float(np.ptp(out)), 1e-12)
    out.setflags(write=False)
    return out


def pydicom_data_dir() -> Path | None:
    """The data folder of the optional ``pydicom-data`` package (module ``data_store``), or None."""
    import importlib.util

    spec = importlib.util.find_spec("data_store")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "data"
    return folder if folder.is_dir() else None


def package_file(path: str) -> Path | None:
    """Locate a data file shipped inside an installed package, without importing the package.

    Args:
        path: ``"<package>/<path inside the package>"``, e.g. ``"dipy/data/files/t1_coronal_slice.npy"``.

    Returns:
        The file's path, or None when the package is not installed or lacks the file.
    """
    import importlib.util

    package, _, rel = path.partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        if (Path(root) / rel).is_file():
            return Path(root) / rel
    return None


def dicom_path(name: str) -> Path | None:
    """Locate a pydicom test file without any network access (pydicom's own files, then pydicom-data)."""
    import pydicom.data

    local = Path(pydicom.data.__file__).parent / "test_files" / name
    if local.is_file():
        return local
    folder = pydicom_data_dir()
    if folder is not None and (folder / name).is_file():
        return folder / name
    return None


def available_sources() -> dict[str, bool]:
    """Which real images the demos can use on this machine (nothing is downloaded).

    Returns:
        ``{"skimage:<name>": bool, "pydicom:<file>": bool, "pydicom-data:<file>": bool}``. The SAQM demo needs no
        pydicom-data (it falls back to simulated B-mode frames when no ultrasound file is found at all, e.g. with
        pydicom 2.x, which does not ship the ``examples_*`` files); ``iqad_cxr`` needs pydicom-data (``RG1``/``RG3``)
        and ``iqad_ct`` uses only ``CT_small.dcm`` without it.
    """
    out: dict[str, bool] = {}
    for name in (*NATURAL_IMAGES, "retina"):
        out[f"skimage:{name}"] = skimage_image(name) is not None
    for name in _PYDICOM_FILES:
        out[f"pydicom:{name}"] = dicom_path(name) is not None
    folder = pydicom_data_dir()
    for name in _PYDICOM_DATA_FILES:
        out[f"pydicom-data:{name}"] = folder is not None and (folder / name).is_file()
    return out


def _pydicom_major() -> int:
    """Major version of the installed pydicom (2 or 3)."""
    import pydicom

    return int(str(pydicom.__version__).split(".")[0])


def _to_rgb_compat(arr: np.ndarray, ds: Any) -> np.ndarray:
    """pydicom compat shim: YBR → RGB (pydicom 2.x returns JPEG YBR_FULL_422 undecoded) and palette → RGB."""
    pi = str(ds.PhotometricInterpretation)
    if pi == "PALETTE COLOR":
        try:
            from pydicom.pixels import apply_color_lut
        except ImportError:  # pragma: no cover - pydicom 2.x
            from pydicom.pixel_data_handlers.util import apply_color_lut
        return apply_color_lut(arr, ds)
    if pi.startswith("YBR_FULL") and _pydicom_major() < 3:  # pragma: no cover - pydicom 2.x
        from pydicom.pixel_data_handlers.util import convert_color_space

        return convert_color_space(arr, pi, "RGB")
    return arr


@functools.lru_cache(maxsize=32)
def dicom_frames(path: str, frames: tuple[int, ...] | None = None) -> tuple[np.ndarray, ...]:
    """Decode frames of a DICOM file as arrays (RGB for colour files); one decode per (file, frames) per process.

    pydicom 3 decodes only the requested frames; pydicom 2.x decodes the whole cine once.
    """
    import pydicom

    ds = pydicom.dcmread(path)
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if n_frames == 1:
        out = (_to_rgb_compat(ds.pixel_array, ds),)
    else:
        wanted = frames if frames is not None else tuple(range(n_frames))
        if _pydicom_major() >= 3:
            from pydicom.pixels import pixel_array

            out = tuple(_to_rgb_compat(pixel_array(ds, index=i), ds) for i in wanted)
        else:  # pragma: no cover - pydicom 2.x
            full = ds.pixel_array
            out = tuple(_to_rgb_compat(full[i], ds) for i in wanted)
    for arr in out:
        arr.setflags(write=False)
    return out


def dicom_meta(path: str) -> dict[str, Any]:
    """Rescale slope/intercept, photometric interpretation and acquired matrix of a DICOM file (header only).

    ``acquired_matrix`` is the largest entry of the MR ``AcquisitionMatrix`` (0018,1310) (frequency rows, frequency
    columns, phase rows, phase columns; two are 0), i.e. the number of k-space samples along the better-sampled image
    axis, or None where the tag is absent or empty.
    """
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    matrix = [int(v) for v in (ds.get("AcquisitionMatrix") or [])]
    return {
        "slope": float(ds.get("RescaleSlope", 1) or 1),
        "intercept": float(ds.get("RescaleIntercept", 0) or 0),
        "photometric": str(ds.get("PhotometricInterpretation", "")),
        "acquired_matrix": max(matrix) if matrix and max(matrix) > 0 else None,
    }
