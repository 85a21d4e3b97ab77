"""Loading transforms: :func:`monai_iqad.data.read_image` wrapped into a MONAI ``MetaTensor`` ``(C, H, W)``."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from monai_iqad.data.image_io import read_image

__all__ = ["LoadImage2D", "LoadImage2Dd", "to_metatensor"]


def _collate_safe(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Meta values that MONAI's collate can batch: None dropped, tuples → arrays, nested dicts cleaned likewise.

    MONAI collates the keys common to all items of a batch, so a key dropped for one item (e.g. ``window`` of a PNG
    next to a DICOM) simply disappears from the batch instead of failing.
    """
    out: dict[str, Any] = {}
    for key, value in meta.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            value = _collate_safe(value)
        elif isinstance(value, (tuple, list)):
            value = np.asarray(value, dtype=float)
        out[key] = value
    return out


def to_metatensor(array: np.ndarray, meta: Mapping[str, Any], dtype: torch.dtype | None = torch.float32) -> MetaTensor:
    """Wrap a ``(C, H, W)`` array and its :func:`read_image` meta into a ``MetaTensor``.

    The affine is ``diag(row spacing, column spacing, 1, 1)`` when the spacing is known (identity otherwise), and the
    meta gains ``spatial_shape`` ``(H, W)`` and MONAI's ``filename_or_obj`` for savers/CSV writers.
    """
    clean = _collate_safe(meta)
    spacing = meta.get("spacing") or (1.0, 1.0)
    affine = torch.diag(torch.tensor([float(spacing[0]), float(spacing[1]), 1.0, 1.0], dtype=torch.float64))
    clean["spatial_shape"] = np.asarray(array.shape[1:], dtype=np.int64)
    clean["original_affine"] = affine.numpy().copy()
    tensor = torch.as_tensor(np.ascontiguousarray(array), dtype=dtype)
    return MetaTensor(tensor, affine=affine, meta=clean)


class LoadImage2D(Transform):
    """Read one 2D image file into a float32 ``MetaTensor`` shaped ``(C, H, W)`` (rows first).

    PNG/JPEG/BMP/TIFF, DICOM (modality LUT applied, colour converted to RGB, one frame of a multi-frame object) and
    NIfTI (a chosen slice of a volume) are read by :func:`monai_iqad.data.read_image`; see that function for the
    meta keys. Unlike MONAI's ``LoadImage`` the result is already channel-first (``original_channel_dim = 0``), so
    ``EnsureChannelFirst`` is not needed.

    Args:
        image_only: return only the ``MetaTensor`` (True) or ``(MetaTensor, meta dict)``.
        dtype: torch dtype of the result.

    Raises:
        monai_iqad.data.ImageReadError: the file cannot be read as one 2D image (the message names the file).
    """

    def __init__(self, image_only: bool = True, dtype: torch.dtype | None = torch.float32) -> None:
        self.image_only = image_only
        self.dtype = dtype

    def __call__(
        self, filename: str | os.PathLike, frame: int | None = None, slice_index: int | None = None
    ) -> MetaTensor | tuple[MetaTensor, dict]:
        """Load ``filename`` (``frame`` of a multi-frame file, ``slice_index`` of a volume) → ``(C, H, W)``."""
        array, meta = read_image(filename, frame=frame, slice_index=slice_index)
        img = to_metatensor(array, meta, self.dtype)
        return img if self.image_only else (img, dict(img.meta))


class LoadImage2Dd(MapTransform):
    """Dictionary version of :class:`LoadImage2D`; the frame/slice to read may come from the item itself.

    Args:
        keys: keys holding image paths (e.g. ``"image"``).
        frame_key: item key holding the frame index of a multi-frame file (absent/None → default frame).
        slice_key: item key holding the slice index of a 3D volume.
        meta_key_postfix: with ``image_only=False`` the meta dict is also stored as ``"{key}_{meta_key_postfix}"``.
        image_only: see above; the ``MetaTensor`` always carries the meta.
        dtype: torch dtype of the images.
        allow_missing_keys: do not fail when a key is absent.
    """

    def __init__(
        self,
        keys: KeysCollection,
        frame_key: str | None = "frame",
        slice_key: str | None = "slice",
        meta_key_postfix: str = "meta_dict",
        image_only: bool = True,
        dtype: torch.dtype | None = torch.float32,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.frame_key = frame_key
        self.slice_key = slice_key
        self.meta_key_postfix = meta_key_postfix
        self.image_only = image_only
        self.loader = LoadImage2D(image_only=True, dtype=dtype)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Replace each path under ``keys`` by its ``MetaTensor``."""
        d = dict(data)
        frame = d.get(self.frame_key) if self.frame_key is not None else None
        slice_index = d.get(self.slice_key) if self.slice_key is not None else None
        for key in self.key_iterator(d):
            img = self.loader(d[key], frame=frame, slice_index=slice_index)
            d[key] = img
            if not self.image_only:
                d[f"{key}_{self.meta_key_postfix}"] = dict(img.meta)
        return d
