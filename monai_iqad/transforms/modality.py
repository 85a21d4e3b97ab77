"""Modality-specific transforms (CT window, fundus field-of-view crop) and the preprocessing pipelines.

The two factories return a ``monai.transforms.Compose`` and can be used from a bundle config either as
``"$monai_iqad.transforms.iqad_preprocessing('eyeq', train=True)"`` or as
``{"_target_": "monai_iqad.transforms.iqad_preprocessing", "dataset": "eyeq", "train": true}``.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import (
    Compose,
    EnsureTyped,
    MapTransform,
    NormalizeIntensityd,
    RandSpatialCropSamplesd,
    Resized,
    SpatialCrop,
    Transform,
)
from monai.utils import convert_to_numpy
from scipy import ndimage

from monai_iqad.data.datasets import IQADDatasetInfo, get_dataset_info
from monai_iqad.transforms.conditioning import ModalityChannelsd
from monai_iqad.transforms.intensity import (
    EnsureChannelsd,
    EnsureClassLabeld,
    InvertMonochrome1d,
    LocalContrastNormalized,
    NormalizeMOSd,
    RequireMinSized,
    ScaleByBitDepth,
    ScaleByBitDepthd,
    image_meta,
)
from monai_iqad.transforms.io import LoadImage2Dd

__all__ = [
    "HUWindow",
    "HUWindowd",
    "CTIntensity",
    "CTIntensityd",
    "FundusFOVCrop",
    "FundusFOVCropd",
    "fov_bounding_box",
    "iqad_preprocessing",
    "saqm_preprocessing",
]


# --------------------------------------------------------------------------------------------------- CT
class HUWindow(Transform):
    """Map CT values in Hounsfield units to [0, 1] through a window: ``(x - (center - width/2)) / width``.

    Examples: soft tissue ``center=40, width=400`` (−160..240 HU → 0..1); lung ``center=-600, width=1500``.

    Args:
        window_center: window level in HU.
        window_width: window width in HU (> 0).
        clip: clip to [0, 1] (values outside the window saturate, as on a viewer).

    Raises:
        ValueError: non-positive width.
    """

    def __init__(self, window_center: float, window_width: float, clip: bool = True) -> None:
        if not window_width > 0:
            raise ValueError(f"window_width must be > 0, got {window_width}")
        self.low = float(window_center) - float(window_width) / 2.0
        self.width = float(window_width)
        self.clip = clip

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Any shape → same shape, float in [0, 1] (when clipped)."""
        out = (img - self.low) / self.width
        return out.clip(0.0, 1.0) if self.clip else out


class HUWindowd(MapTransform):
    """Dictionary version of :class:`HUWindow`."""

    def __init__(
        self,
        keys: KeysCollection,
        window_center: float,
        window_width: float,
        clip: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = HUWindow(window_center, window_width, clip)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d


class CTIntensity(Transform):
    """CT intensities to [0, 1]: window HU data, scale stored-value data (PNG/JPEG slices) by their bit depth.

    Data count as HU when the reader applied a modality LUT (DICOM rescale slope/intercept, NIfTI ``scl_slope``), or
    for NIfTI volumes of signed/float type (``bits_stored`` unknown); ``assume_hu`` forces the choice. PNG slices
    such as IQAD-CT's are already windowed by whoever exported them, so they are only divided by 255.

    Args:
        window_center: window level in HU for HU data.
        window_width: window width in HU for HU data.
        default_bits: bit depth of non-HU data without meta.
        assume_hu: ``True``/``False`` to force, ``None`` to decide from the meta.
    """

    def __init__(
        self, window_center: float, window_width: float, default_bits: int = 8, assume_hu: bool | None = None
    ) -> None:
        self.window = HUWindow(window_center, window_width, clip=True)
        self.scale = ScaleByBitDepth(default_bits=default_bits)
        self.assume_hu = assume_hu

    def is_hu(self, img: NdarrayOrTensor) -> bool:
        """Whether ``img`` holds Hounsfield units (see the class docstring)."""
        if self.assume_hu is not None:
            return self.assume_hu
        meta = image_meta(img)
        if meta.get("rescale"):
            return True
        return meta.get("format") == "nifti" and not meta.get("bits_stored")

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        return self.window(img) if self.is_hu(img) else self.scale(img)


class CTIntensityd(MapTransform):
    """Dictionary version of :class:`CTIntensity`."""

    def __init__(
        self,
        keys: KeysCollection,
        window_center: float,
        window_width: float,
        default_bits: int = 8,
        assume_hu: bool | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = CTIntensity(window_center, window_width, default_bits, assume_hu)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d


# --------------------------------------------------------------------------------------------------- fundus
def fov_bounding_box(
    channel: np.ndarray,
    threshold_fraction: float = 0.1,
    min_size_fraction: float = 0.2,
    max_side: int = 512,
) -> tuple[int, int, int, int] | None:
    """Bounding box ``(row0, col0, row1, col1)`` (end-exclusive) of the bright field of view of a fundus photo.

    A pixel is inside when it exceeds ``min + threshold_fraction * (p99 - min)`` of the channel; the FOV is the
    largest connected inside region, which ignores separate bright marks such as burnt-in text. The search runs on
    a strided copy with at most ``max_side`` pixels per side (the box is exact to that stride). Returns None (no
    crop) when nothing is found or the box is implausibly small (under ``min_size_fraction`` of the image in either
    direction).
    """
    chan = np.asarray(channel, dtype=np.float32)
    if chan.ndim != 2 or chan.size == 0 or not np.isfinite(chan).all():
        return None
    h, w = chan.shape
    step = max(1, -(-max(h, w) // max_side))
    small = chan[::step, ::step]
    lo, hi = float(small.min()), float(np.percentile(small, 99))
    if not hi > lo:
        return None
    labels, count = ndimage.label(small > lo + threshold_fraction * (hi - lo))
    if count == 0:
        return None
    biggest = labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
    rows, cols = np.flatnonzero(biggest.any(1)), np.flatnonzero(biggest.any(0))
    r0, r1 = int(rows[0]) * step, min((int(rows[-1]) + 1) * step, h)
    c0, c1 = int(cols[0]) * step, min((int(cols[-1]) + 1) * step, w)
    if (r1 - r0) < min_size_fraction * h or (c1 - c0) < min_size_fraction * w:
        return None
    return r0, c0, r1, c1


class FundusFOVCrop(Transform):
    """Crop a fundus photograph ``(C, H, W)`` to the bounding box of its circular field of view (FOV).

    The FOV is found on the red channel (``channel=0``; the mean over channels for ``channel=None`` or gray images)
    with :func:`fov_bounding_box`. When no FOV is found (a black or uniform image, a rejected-quality photo) the image
    is returned unchanged. Cropping to the FOV removes the variable black border so that resizing to 256×256 keeps
    the retina at a comparable scale across cameras.

    Args:
        channel: channel used to find the FOV (0 = red), or None for the channel mean.
        threshold_fraction: see :func:`fov_bounding_box`.
        margin: pixels kept around the box (clamped to the image).
    """

    def __init__(
        self,
        channel: int | None = 0,
        threshold_fraction: float = 0.1,
        margin: int = 0,
    ) -> None:
        self.channel = channel
        self.threshold_fraction = threshold_fraction
        self.margin = int(margin)

    def bounding_box(self, img: NdarrayOrTensor) -> tuple[int, int, int, int] | None:
        """The crop box of ``img`` or None."""
        arr = convert_to_numpy(img)
        if arr.ndim != 3:
            return None
        chan = arr[self.channel] if self.channel is not None and arr.shape[0] > self.channel else arr.mean(0)
        return fov_bounding_box(chan, self.threshold_fraction)

    def roi(self, img: NdarrayOrTensor) -> tuple[list[int], list[int]] | None:
        """``(roi_start, roi_end)`` of the crop, margin included, or None when there is nothing to crop."""
        box = self.bounding_box(img)
        if box is None:
            return None
        h, w, m = int(img.shape[1]), int(img.shape[2]), self.margin
        start, end = [max(box[0] - m, 0), max(box[1] - m, 0)], [min(box[2] + m, h), min(box[3] + m, w)]
        return None if (start == [0, 0] and end == [h, w]) else (start, end)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """``(C, H, W)`` → ``(C, h, w)`` with ``h <= H``, ``w <= W``."""
        roi = self.roi(img)
        return img if roi is None else SpatialCrop(roi_start=roi[0], roi_end=roi[1])(img)


class FundusFOVCropd(MapTransform):
    """Dictionary version of :class:`FundusFOVCrop`; the box is found on ``source_key`` and applied to all keys."""

    def __init__(
        self,
        keys: KeysCollection,
        source_key: str | None = None,
        channel: int | None = 0,
        threshold_fraction: float = 0.1,
        margin: int = 0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.source_key = source_key
        self.cropper = FundusFOVCrop(channel, threshold_fraction, margin)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        keys = list(self.key_iterator(d))
        if not keys:
            return d
        roi = self.cropper.roi(d[self.source_key if self.source_key is not None else keys[0]])
        if roi is None:
            return d
        crop = SpatialCrop(roi_start=roi[0], roi_end=roi[1])
        for key in keys:
            d[key] = crop(d[key])
        return d


# --------------------------------------------------------------------------------------------------- pipelines
def iqad_preprocessing(
    dataset: str | IQADDatasetInfo,
    spatial_size: Sequence[int] | None = None,
    image_key: str = "image",
    train: bool = False,
    label_keys: Sequence[str] = ("diagnosis", "quality"),
    fov_crop: bool = True,
    window: Sequence[float] | None = None,
) -> Compose:
    """Preprocessing for MKCNet (IQAD) data: load → modality → channels → resize → per-dataset normalisation.

    Per modality (from :data:`monai_iqad.data.IQAD_DATASETS`):

    - fundus (``deepdr``, ``eyeq``): RGB (gray replicated), crop to the field of view (``fov_crop``), ``/255``;
    - OCTA (``drac``): gray (luminance if stored as RGB), divided by its bit depth;
    - CT (``iqad_ct``): gray; DICOM/NIfTI in HU are windowed (``window`` or the dataset's default, lung window
      L -600 / W 1500), PNG/JPEG slices (as shipped) are divided by their bit depth;
    - CXR (``iqad_cxr``): ``MONOCHROME1`` inverted, gray, divided by the stored bit depth (e.g. 15-bit CR → 32767).

    Then ``Resized(spatial_size, mode="bilinear", anti_aliasing=True)``, ``NormalizeIntensityd(subtrahend=mean,
    divisor=std, channel_wise=True)`` with the official per-dataset statistics, the labels checked against the
    dataset's class counts and cast to 0-d ``torch.long``, and ``EnsureTyped``. There is no augmentation: the paper
    trains and tests with the same transforms, so ``train`` only makes the labels mandatory (at evaluation and
    inference they may be absent).

    Args:
        dataset: ``"deepdr"``, ``"drac"``, ``"eyeq"``, ``"iqad_ct"``, ``"iqad_cxr"`` (or an official/folder name).
        spatial_size: network input size; default the dataset's ``(256, 256)``.
        image_key: key of the image path.
        train: labels required (True) or optional (False).
        label_keys: ``(diagnosis_key, quality_key)``.
        fov_crop: fundus only: crop to the field of view (set False to match the official code exactly).
        window: CT only: ``(center, width)`` in HU for DICOM/NIfTI input.

    Returns:
        A ``Compose`` producing ``{image: (C, H, W) float32, diagnosis: long, quality: long, ...}``.

    Raises:
        KeyError: unknown dataset.
    """
    info = get_dataset_info(dataset)
    size = tuple(int(s) for s in (spatial_size if spatial_size is not None else info.spatial_size))
    k = image_key
    xs: list = [LoadImage2Dd(k), InvertMonochrome1d(k), EnsureChannelsd(k, num_channels=info.channels)]
    if info.modality == "fundus" and fov_crop:
        xs.append(FundusFOVCropd(k))
    if info.modality == "ct":
        center, width = window if window is not None else (info.window or (-600.0, 1500.0))
        xs.append(CTIntensityd(k, window_center=center, window_width=width))
    else:
        xs.append(ScaleByBitDepthd(k))
    xs += [
        Resized(k, spatial_size=size, mode="bilinear", anti_aliasing=True),
        NormalizeIntensityd(k, subtrahend=list(info.mean), divisor=list(info.std), channel_wise=True),
        EnsureClassLabeld(
            list(label_keys),
            num_classes=[info.num_diagnosis, info.num_quality],
            image_key=k,
            allow_missing_keys=not train,
        ),
        EnsureTyped(k, dtype=torch.float32),
    ]
    return Compose(xs)


def saqm_preprocessing(
    train: bool,
    num_patches: int = 32,
    patch_size: int = 32,
    mos_range: Sequence[float] = (0.0, 9.0),
    channels: int = 3,
    source_to_gray: bool = False,
    image_key: str = "image",
    mos_key: str = "mos",
    local_contrast: bool = True,
    lcn_kernel_size: int = 7,
    lcn_eps: float = 0.05,
    modalities: Sequence[str] | None = None,
    modality_key: str = "modality",
    contrast_context: bool = False,
    unknown_modalities: Sequence[str] = (),
) -> Compose:
    """Preprocessing for SAQM (patch-based IQA): load → channels → bit-depth scaling → patches → MOS to [0, 1].

    - ``MONOCHROME1`` is inverted, then channels are made ``channels`` (gray replicated; ``source_to_gray`` turns
      colour into luminance first), then values are divided by the stored bit depth (fixed, not min-max).
    - Training: ``RandSpatialCropSamplesd(roi_size=patch_size, num_samples=num_patches, random_size=False)``: the
      item becomes a list of ``num_patches`` items, each one ``(C, patch_size, patch_size)`` patch carrying the image's
      normalised MOS (Kang et al. 2014 / Bosse et al. 2018). MONAI's DataLoader flattens them into the batch.
    - Validation/inference: the full image (the network averages its non-overlapping patch scores).
    - ``mos`` becomes ``(mos - lo) / (hi - lo)`` as a 0-d float32 tensor; NaN (unlabelled target) stays NaN; an absent
      ``mos`` (inference) is allowed.

    Args:
        train: random patches (True) or the full image (False).
        num_patches: patches per image per training step.
        patch_size: patch side in pixels.
        mos_range: ``(lo, hi)`` of the dataset's MOS scale (TID2013 ``(0, 9)``).
        channels: network input channels (SAQM: 3).
        source_to_gray: colour → luminance before replicating (removes colour as a domain cue).
        image_key: key of the image path.
        mos_key: key of the MOS.
        local_contrast: local contrast normalisation of the whole image before patching (Kang et al. 2014; see
            :class:`LocalContrastNormalized`); the paper leaves the input normalisation open.
        lcn_kernel_size: LCN window side.
        lcn_eps: LCN stabiliser.
        modalities: when given, one-hot modality planes are appended after the normalisation
            (:class:`~monai_iqad.transforms.ModalityChannelsd`; the network then has ``channels + len(modalities)``
            input channels). ``None`` (default, the paper): no conditioning.
        modality_key: data key of the modality (else the image's DICOM ``Modality``, else unknown = zero planes).
        contrast_context: append the luminance's local mean and standard deviation (what LCN removes) as two
            channels after the image's (``LocalContrastNormalize(context=True)``); the network then has
            ``channels + 2`` (+ modality planes) input channels. Needs ``local_contrast``. Default off (the paper).
        unknown_modalities: modalities given the unknown input (all planes 0) although ``modalities`` lists them
            (e.g. ``["US"]``; :class:`~monai_iqad.transforms.ModalityChannels`). Default none.

    Returns:
        A ``Compose``.

    Raises:
        ValueError: ``contrast_context`` without ``local_contrast``; at call time, an image smaller than one patch
            (naming the file).
    """
    if contrast_context and not local_contrast:
        raise ValueError("contrast_context needs local_contrast (it adds what the normalisation removes).")
    k = image_key
    p = int(patch_size)
    xs: list = [
        LoadImage2Dd(k),
        InvertMonochrome1d(k),
        EnsureChannelsd(k, num_channels=channels, source_to_gray=source_to_gray),
        ScaleByBitDepthd(k),
        RequireMinSized(k, min_size=p),
        NormalizeMOSd(mos_key, mos_range=mos_range, image_key=k, allow_missing_keys=True),
    ]
    if local_contrast:
        xs.append(LocalContrastNormalized(k, kernel_size=lcn_kernel_size, eps=lcn_eps, context=contrast_context))
    if modalities is not None:
        xs.append(ModalityChannelsd(k, modalities=modalities, modality_key=modality_key, unknown=unknown_modalities))
    if train:
        xs.append(RandSpatialCropSamplesd(k, roi_size=(p, p), num_samples=int(num_patches), random_size=False))
    xs.append(EnsureTyped(k, dtype=torch.float32))
    return Compose(xs)
