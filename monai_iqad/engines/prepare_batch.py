"""Batch preparation of the trainers as MONAI ``PrepareBatch`` classes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from monai.data import MetaTensor
from monai.engines.utils import PrepareBatch

__all__ = ["PrepareIQADBatch", "PrepareIQABatch"]


def _plain(value: Any) -> torch.Tensor:
    """A plain tensor (a ``MetaTensor`` is unwrapped: the trainers do not need its metadata)."""
    return value.as_tensor() if isinstance(value, MetaTensor) else torch.as_tensor(value)


class PrepareIQADBatch(PrepareBatch):
    """
    Move an IQAD batch dict ``{"image": (B, C, H, W), "diagnosis": (B,), "quality": (B,)}`` to the device: the image
    as a plain tensor, the labels as ``long`` ``(B,)``.

    Args:
        quality: read the quality labels: ``True`` (required), ``False`` (ignored, returned as None) or ``None``
            (used when the batch has them). Defaults to True.

    Returns (when called):
        ``(image, diagnosis, quality)``; ``quality`` is None when it is not read.

    Raises (when called):
        ValueError: When ``batchdata`` is None.
        KeyError: When a required key is missing (the message lists the batch keys).
    """

    image_key, diagnosis_key, quality_key = "image", "diagnosis", "quality"

    def __init__(self, quality: bool | None = True) -> None:
        self.quality = quality

    def __call__(
        self,
        batchdata: Mapping[str, Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """
        Args:
            batchdata: the collated batch.
            device: target device.
            non_blocking: asynchronous host-to-device copy.
            kwargs: other ``Tensor.to`` arguments for the image (the trainer's ``to_kwargs``).
        """
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        read_quality = self.quality or (self.quality is None and self.quality_key in batchdata)
        required = (self.image_key, self.diagnosis_key) + ((self.quality_key,) if read_quality else ())
        for key in required:
            if key not in batchdata:
                raise KeyError(f"batch has no key {key!r}; its keys are {sorted(batchdata)}.")

        def _label(value: Any) -> torch.Tensor:
            return _plain(value).to(device=device, non_blocking=non_blocking).long().reshape(-1)

        image = _plain(batchdata[self.image_key]).to(device=device, non_blocking=non_blocking, **kwargs)
        quality = _label(batchdata[self.quality_key]) if read_quality else None
        return image, _label(batchdata[self.diagnosis_key]), quality


def _float_vector(value: Any, name: str, batch_size: int, device: str | torch.device | None) -> torch.Tensor:
    """``(B,)`` float32 on ``device``; ``None`` entries become NaN."""
    if isinstance(value, (list, tuple)):
        value = [float("nan") if v is None else v for v in value]
    tensor = _plain(value).to(torch.float32).reshape(-1)
    if tensor.numel() != batch_size:
        raise ValueError(f"'{name}' must hold one value per image ({batch_size}), got shape {tuple(tensor.shape)}.")
    return tensor.to(device)


class PrepareIQABatch(PrepareBatch):
    """
    Move an IQA batch dict ``{"image": (B, C, H, W)[, "mos": (B,)][, "labelled": (B,)]}`` to the device, in the
    format of :class:`~monai_iqad.engines.DomainAdaptationTrainer`: the MOS is already normalised to [0, 1] (NaN or
    None for unlabelled images), ``labelled`` holds 1/0 flags.

    Returns (when called):
        ``{"image": (B, C, H, W) plain tensor, "mos": (B,) float32 or None, "labelled": (B,) bool or None}``.

    Raises (when called):
        TypeError: When ``batchdata`` is not a mapping.
        ValueError: When the image is missing, or ``mos``/``labelled`` do not have one value per image.
    """

    image_key, mos_key, labelled_key = "image", "mos", "labelled"

    def __call__(
        self,
        batchdata: Mapping[str, Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> dict[str, torch.Tensor | None]:
        """
        Args:
            batchdata: the collated batch.
            device: target device.
            non_blocking: asynchronous host-to-device copy.
            kwargs: other ``Tensor.to`` arguments for the image (the trainer's ``to_kwargs``).
        """
        if not isinstance(batchdata, Mapping):
            raise TypeError(f"DomainAdaptationTrainer expects dict batches, got {type(batchdata).__name__}.")
        if self.image_key not in batchdata:
            raise ValueError(f"batch has no '{self.image_key}' key; keys are {sorted(batchdata)}.")
        image = _plain(batchdata[self.image_key]).to(device=device, non_blocking=non_blocking, **kwargs)
        batch_size = int(image.shape[0])
        mos, flags = batchdata.get(self.mos_key), batchdata.get(self.labelled_key)
        return {
            "image": image,
            "mos": None if mos is None else _float_vector(mos, self.mos_key, batch_size, device),
            "labelled": None if flags is None else _float_vector(flags, self.labelled_key, batch_size, device) > 0,
        }
