"""``IQADImageReader``: :func:`monai_iqad.data.read_image` as a MONAI :class:`~monai.data.ImageReader`.

With it, any MONAI pipeline reads the 2D formats of this project the way ``read_image`` does (DICOM modality LUT,
YBR/palette colour to RGB, one frame of a cine loop, one slice of a NIfTI volume, errors that name the file)::

    from monai.transforms import LoadImage
    from monai_iqad.data import IQADImageReader

    image = LoadImage(reader=IQADImageReader(), image_only=True)("frame.dcm")  # MetaTensor (C, W, H)

Axis convention (the difference to ``read_image``): ``read_image`` returns ``(C, H, W)`` arrays, **rows first**, as
image-processing code expects. This reader follows MONAI's readers (``PILReader``, ``ITKReader``,
``NibabelReader``): the first spatial axis is the **column** index ``x`` and the second the **row** index ``y``, so
:meth:`IQADImageReader.get_data` returns ``(C, W, H)`` (``np.swapaxes(read_image(...)[0], 1, 2)``), channel-first
with ``original_channel_dim = 0`` (``EnsureChannelFirst`` is a no-op), ``spatial_shape = (W, H)``, and a 3x3
``affine`` ``diag(col_spacing, row_spacing, 1)`` mapping ``(x, y)`` indices to millimetres (spacing 1 when the file
has none). The affine carries spacing only: no origin and no patient orientation (PNG/JPEG have none; for DICOM and
NIfTI world coordinates use MONAI's ``PydicomReader`` / ``NibabelReader``). ``spacing`` in the meta data is in the
same ``(x, y)`` order; ``read_image``'s ``(row, col)`` spacing is not repeated.

MetaImage (``.mha``/``.mhd``) and NRRD (``.nrrd``/``.nhdr``) are read by MONAI's ``ITKReader`` (its axes and LPS→RAS
affine unchanged), then made channel-first like the other formats. They need ITK: ``pip install "monai_iqad[itk]"``.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from monai.data import ImageReader
from monai.utils import OptionalImportError, ensure_tuple

from .image_io import DICOM_SUFFIXES, NIFTI_SUFFIXES, PIL_SUFFIXES, ImageReadError, read_image

__all__ = ["IQADImageReader", "ITK_SUFFIXES", "ITK_INSTALL_HINT"]

ITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr")
ITK_INSTALL_HINT = 'pip install "monai_iqad[itk]"  (or: pip install itk)'
_NONE = "none"  # MONAI's TraceKeys.NONE: how its readers store missing values so that batches still collate


@dataclass
class _IQADImage:
    """One image read by :func:`read_image`: ``(C, H, W)`` rows-first array and its meta dict."""

    array: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


def _has_itk() -> bool:
    """Whether ITK is importable (checked without importing it: ``import itk`` takes seconds)."""
    return importlib.util.find_spec("itk") is not None


def _is_itk_file(name: str | os.PathLike) -> bool:
    return os.fspath(name).lower().endswith(ITK_SUFFIXES)


def _flat_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """``read_image``'s meta with nested dicts flattened (``rescale_slope``...) and ``None`` as ``"none"``."""
    out: dict[str, Any] = {}
    for key, value in meta.items():
        if key == "spacing":
            continue  # replaced by the (x, y) spacing in get_data
        if isinstance(value, dict):
            for sub, sub_value in value.items():
                out[f"{key}_{sub}"] = _NONE if sub_value is None else sub_value
        else:
            out[key] = _NONE if value is None else value
    return out


class IQADImageReader(ImageReader):
    """MONAI image reader for one 2D image per file: PNG/JPEG/BMP/TIFF, DICOM, NIfTI, and (with ITK) MetaImage/NRRD.

    ``read`` + ``get_data`` give what ``LoadImage`` expects; the array is float32 ``(C, W, H)`` (MONAI's axis order,
    see the module docstring for the difference to :func:`read_image`). Several files given together are
    concatenated along the channel axis (they must have the same spatial shape).

    Args:
        frame: frame of a multi-frame DICOM / 4D NIfTI / multi-page TIFF (default: as :func:`read_image`).
        slice_index: slice of a 3D NIfTI volume (required for volumes; ``read_image`` refuses them otherwise).
        itk_kwargs: arguments of MONAI's ``ITKReader`` for MetaImage/NRRD files (e.g. ``affine_lps_to_ras``).

    Raises:
        ImageReadError: from :meth:`read` / :meth:`get_data`, naming the file (missing, corrupt, unsupported).
        OptionalImportError: from :meth:`read` for a MetaImage/NRRD file when ITK is not installed; the message
            names the file and the ``[itk]`` extra.
    """

    def __init__(self, frame: int | None = None, slice_index: int | None = None, **itk_kwargs: Any) -> None:
        super().__init__()
        self.frame = frame
        self.slice_index = slice_index
        self.itk_kwargs = itk_kwargs
        self._itk_reader: ImageReader | None = None

    # ------------------------------------------------------------------------------------------------ ImageReader
    def verify_suffix(self, filename: Sequence[str | os.PathLike] | str | os.PathLike) -> bool:
        """True when every file name ends with a suffix this reader handles.

        MetaImage/NRRD suffixes count only when ITK is installed, so that ``LoadImage``'s automatic reader choice
        falls back to another reader instead of failing here. (Called directly, :meth:`read` still explains what
        to install.)
        """
        suffixes = PIL_SUFFIXES + DICOM_SUFFIXES + NIFTI_SUFFIXES + (ITK_SUFFIXES if _has_itk() else ())
        return all(os.fspath(name).lower().endswith(suffixes) for name in ensure_tuple(filename))

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs: Any) -> Any:
        """Read one file (an image object) or several (a list of them).

        Args:
            data: file name(s).
            kwargs: ``frame`` / ``slice_index`` for this call (override the constructor's).

        Raises:
            ImageReadError: a file cannot be read as one 2D image (the message starts with the file name).
            OptionalImportError: a MetaImage/NRRD file and ITK is not installed.
        """
        frame = kwargs.pop("frame", self.frame)
        slice_index = kwargs.pop("slice_index", self.slice_index)
        images = []
        for name in ensure_tuple(data):
            if _is_itk_file(name):
                images.append(self._itk(name).read(name, **kwargs))
            else:
                images.append(_IQADImage(*read_image(name, frame=frame, slice_index=slice_index)))
        return images if len(images) > 1 else images[0]

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        """Array ``(C, W, H)`` float32 and meta dict (``affine``, ``original_affine``, ``spatial_shape``,
        ``original_channel_dim`` = 0, ``spacing`` (x, y), plus ``read_image``'s keys, flattened).

        Raises:
            ImageReadError: when several images have different spatial shapes.
        """
        arrays, metas = [], []
        for item in img if isinstance(img, (list, tuple)) else [img]:
            array, meta = self._get_one(item)
            arrays.append(array)
            metas.append(meta)
        meta = metas[0]
        for other in metas[1:]:
            if tuple(other["spatial_shape"]) != tuple(meta["spatial_shape"]):
                raise ImageReadError(
                    f"{other.get('filename_or_obj', '?')}: spatial shape {tuple(other['spatial_shape'])} differs from"
                    f" {tuple(meta['spatial_shape'])} of {meta.get('filename_or_obj', '?')}; cannot stack as channels"
                )
        return (arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)), meta

    # ------------------------------------------------------------------------------------------------ helpers
    def _itk(self, name: str | os.PathLike) -> ImageReader:
        """MONAI's ``ITKReader`` (built once), or a clear error naming the extra when ITK is missing."""
        if not _has_itk():
            raise OptionalImportError(
                f"{os.fspath(name)}: MetaImage/NRRD files are read through ITK, which is not installed: "
                f"{ITK_INSTALL_HINT}"
            )
        if self._itk_reader is None:
            from monai.data import ITKReader

            self._itk_reader = ITKReader(**self.itk_kwargs)
        return self._itk_reader

    def _get_one(self, item: Any) -> tuple[np.ndarray, dict]:
        if isinstance(item, _IQADImage):
            array = np.ascontiguousarray(np.swapaxes(item.array, 1, 2), dtype=np.float32)  # (C, H, W) -> (C, W, H)
            row_col = item.meta.get("spacing")
            spacing = np.array([row_col[1], row_col[0]] if row_col else [1.0, 1.0], dtype=np.float64)
            affine = np.diag([*spacing, 1.0])
            meta = _flat_meta(item.meta)
            meta.update(
                affine=affine,
                original_affine=affine.copy(),
                spatial_shape=np.asarray(array.shape[1:]),
                original_channel_dim=0,
                spacing=spacing,
            )
            return array, meta
        if self._itk_reader is None:
            raise ImageReadError(f"IQADImageReader.get_data: unknown image object {type(item).__name__}")
        array, meta = self._itk_reader.get_data(item)
        channel_dim = meta.get("original_channel_dim")
        if channel_dim is None or (isinstance(channel_dim, float) and np.isnan(channel_dim)):
            array = array[None]
        else:
            array = np.moveaxis(array, int(channel_dim), 0)
        meta["original_channel_dim"] = 0
        return np.ascontiguousarray(array, dtype=np.float32), meta
