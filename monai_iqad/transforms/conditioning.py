"""Modality conditioning: one-hot modality planes appended to an image's channels."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

__all__ = ["SAQM_MODALITIES", "MODALITY_ALIASES", "modality_index", "ModalityChannels", "ModalityChannelsd"]

#: Modalities of the pretraining corpus's training split, in plane order (``fundus`` = colour fundus photographs,
#: ``natural`` = photographs of natural scenes). Anything else is "unknown" (all planes zero).
SAQM_MODALITIES: tuple[str, ...] = ("CR", "CT", "MR", "US", "fundus", "natural")

#: DICOM ``Modality`` codes read as one of :data:`SAQM_MODALITIES` (DX/RG: digital and radiographic projection
#: images, like CR; OP: ophthalmic photography; XC: external-camera photography).
MODALITY_ALIASES: dict[str, str] = {"DX": "CR", "RG": "CR", "OP": "fundus", "XC": "natural"}


def modality_index(modality: str | None, modalities: Sequence[str]) -> int | None:
    """Plane index of ``modality`` in ``modalities`` (case-insensitive, :data:`MODALITY_ALIASES` applied), or
    ``None`` when it is unknown (``None``, empty, or not in the list)."""
    if not modality:
        return None
    name = str(modality).strip()
    name = MODALITY_ALIASES.get(name.upper(), name)
    lowered = [m.lower() for m in modalities]
    return lowered.index(name.lower()) if name.lower() in lowered else None


class ModalityChannels(Transform):
    """
    Append ``len(modalities)`` constant planes to a channel-first image: plane ``i`` is 1 when the image's modality
    is ``modalities[i]``, all planes are 0 when it is unknown. A convolution over the result sees the modality as a
    learned per-modality bias of its first layer (zero weights on the planes = the unconditioned network).

    Args:
        modalities: plane order. Defaults to :data:`SAQM_MODALITIES`.
        unknown: modalities always encoded as unknown (all planes 0) although they have a plane, e.g. ``("US",)``
            so that ultrasound is learnt and scored through the unknown input rather than a plane tied to the
            training scanners (issue 11, ``docs/saqm.md``). Names as for ``modality`` (DICOM codes and aliases
            apply). Defaults to none.
    """

    def __init__(self, modalities: Sequence[str] = SAQM_MODALITIES, unknown: Sequence[str] = ()) -> None:
        if not modalities:
            raise ValueError("ModalityChannels needs at least one modality.")
        self.modalities = tuple(str(m) for m in modalities)
        if isinstance(unknown, str):
            unknown = (unknown,)
        self.unknown = {modality_index(m, self.modalities) for m in unknown} - {None}

    def plane_of(self, modality: str | None) -> int | None:
        """Index of the plane set to 1 for ``modality``, or ``None`` when it is encoded as unknown (``None``, not
        listed, or forced by ``unknown``)."""
        i = modality_index(modality, self.modalities)
        return None if i in self.unknown else i

    def __call__(self, img: torch.Tensor, modality: str | None = None) -> torch.Tensor:
        """
        Args:
            img: (C, H, W) image.
            modality: its modality (DICOM code or corpus name); ``None`` or unlisted = unknown.

        Returns:
            (C + len(modalities), H, W), same type, dtype and meta as ``img``.
        """
        planes = torch.zeros((len(self.modalities), *img.shape[1:]), dtype=img.dtype, device=img.device)
        i = self.plane_of(modality)
        if i is not None:
            planes[i] = 1
        out = torch.cat([torch.as_tensor(img), planes], dim=0)
        if isinstance(img, MetaTensor):
            out = MetaTensor(out, meta=img.meta)
        return out


class ModalityChannelsd(MapTransform):
    """
    Dictionary version of :class:`ModalityChannels`. The modality is ``data[modality_key]`` when present (e.g. a
    datalist's ``modality`` field), else the image's ``modality`` meta entry (DICOM ``Modality``, set by
    :class:`~monai_iqad.transforms.LoadImage2Dd`), else unknown.

    Args:
        keys: image keys.
        modalities: plane order. Defaults to :data:`SAQM_MODALITIES`.
        modality_key: data key of the modality.
        unknown: modalities always encoded as unknown (see :class:`ModalityChannels`).
        allow_missing_keys: don't raise when an image key is missing.
    """

    def __init__(
        self,
        keys: KeysCollection,
        modalities: Sequence[str] = SAQM_MODALITIES,
        modality_key: str = "modality",
        unknown: Sequence[str] = (),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.channels = ModalityChannels(modalities, unknown)
        self.modality_key = modality_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            modality = d.get(self.modality_key)
            if modality is None and isinstance(img, MetaTensor):
                modality = img.meta.get("modality")
            d[key] = self.channels(img, modality)
        return d
