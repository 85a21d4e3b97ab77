"""Channel, intensity and label transforms for quality assessment.

Intensities are scaled with **fixed** factors (the stored bit depth, a CT window), never per-image min-max: a
min-max stretch changes contrast and therefore the perceived quality that the models must predict.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from monai_iqad.utils.errors import InputError

__all__ = [
    "LocalContrastNormalize",
    "LocalContrastNormalized",
    "EnsureChannels",
    "EnsureChannelsd",
    "ScaleByBitDepth",
    "ScaleByBitDepthd",
    "InvertMonochrome1",
    "InvertMonochrome1d",
    "NormalizeMOS",
    "NormalizeMOSd",
    "EnsureClassLabel",
    "EnsureClassLabeld",
    "RequireMinSize",
    "RequireMinSized",
    "LUMA_BT601",
    "image_name",
    "image_meta",
    "stored_value_range",
]

LUMA_BT601 = (0.299, 0.587, 0.114)


def image_name(img: Any, default: str = "<in-memory image>") -> str:
    """The file an image came from (``filename_or_obj`` of a ``MetaTensor``, or the path itself), for messages."""
    if isinstance(img, MetaTensor):
        name = img.meta.get("filename_or_obj")
        return str(name) if name else default
    if isinstance(img, (str, bytes)) or hasattr(img, "__fspath__"):
        return str(img)
    return default


def _item_name(d: Mapping[Hashable, Any], image_key: str | None) -> str:
    if image_key is not None and image_key in d:
        return image_name(d[image_key], default="<item without file name>")
    return "<item without image>"


def image_meta(img: Any) -> Mapping[str, Any]:
    """The meta dict of a ``MetaTensor`` (empty for arrays and plain tensors)."""
    return img.meta if isinstance(img, MetaTensor) else {}


def _with_meta(img: NdarrayOrTensor, **updates: Any) -> NdarrayOrTensor:
    """Give a ``MetaTensor`` its own meta dict with ``updates`` (no-op for other types)."""
    if isinstance(img, MetaTensor):
        img.meta = {**img.meta, **updates}
    return img


def _scalar(value: Any) -> Any:
    """One-element tensors/arrays and numpy scalars → Python scalars."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, (np.ndarray, np.generic)) and value.size == 1:
        return value.item()
    return value


def stored_value_range(meta: Mapping[str, Any], default_bits: int = 8) -> tuple[float, float]:
    """The fixed value range of an image, from its stored bit depth and rescale (modality LUT).

    ``[0, 2**bits - 1]`` for unsigned data (``pixel_representation`` 0), ``[-2**(bits-1), 2**(bits-1) - 1]`` for
    signed data, mapped through ``slope * x + intercept`` when the meta records a rescale.

    Raises:
        InputError: rescaled data with an unknown bit depth (naming the file); a ``ValueError``.
    """
    bits = _scalar(meta.get("bits_stored"))
    rescale = meta.get("rescale")
    if not bits:
        if rescale:
            raise InputError(
                f"{meta.get('filename_or_obj', '<image>')}: rescaled values with an unknown stored bit depth; "
                "pass bits= explicitly or use a window (HUWindowd)"
            )
        bits = default_bits
    bits = int(bits)
    if int(_scalar(meta.get("pixel_representation", 0)) or 0) == 1:
        lo, hi = -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
    else:
        lo, hi = 0.0, 2.0**bits - 1
    if rescale:
        slope, intercept = float(_scalar(rescale.get("slope", 1.0))), float(_scalar(rescale.get("intercept", 0.0)))
        lo, hi = sorted((lo * slope + intercept, hi * slope + intercept))
    return float(lo), float(hi)


# --------------------------------------------------------------------------------------------------- channels
class EnsureChannels(Transform):
    """Bring a ``(C, H, W)`` image to ``num_channels`` channels (1 or 3).

    - 1 → 3: the gray channel is replicated;
    - 3 → 1: luminance ``0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601);
    - 3 → 3 with ``source_to_gray``: luminance replicated three times ("gray then replicate"), which removes colour
      cues, e.g. so that a domain classifier cannot tell RGB TID2013 from gray ultrasound by colour alone.

    Args:
        num_channels: 1 or 3.
        source_to_gray: convert colour inputs to luminance before replicating.

    Raises:
        ValueError: ``num_channels`` not 1 or 3; at call time an input that is not ``(C, H, W)`` with C in {1, 3}
            (the message names the file from ``filename_or_obj`` and the channel count).
    """

    def __init__(self, num_channels: int = 3, source_to_gray: bool = False) -> None:
        if num_channels not in (1, 3):
            raise ValueError(f"num_channels must be 1 or 3, got {num_channels}")
        self.num_channels = num_channels
        self.source_to_gray = source_to_gray

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """``(C, H, W)`` → ``(num_channels, H, W)``."""
        if img.ndim != 3:
            raise InputError(f"{image_name(img)}: expected a (C, H, W) image, got shape {tuple(img.shape)}")
        c = int(img.shape[0])
        if c not in (1, 3):
            raise InputError(
                f"{image_name(img)}: unsupported number of channels {c} (expected 1 or 3, shape {tuple(img.shape)})"
            )
        if c == 3 and (self.num_channels == 1 or self.source_to_gray):
            r, g, b = LUMA_BT601
            img = img[0:1] * r + img[1:2] * g + img[2:3] * b
            img = _with_meta(img, photometric_interpretation="MONOCHROME2")
            c = 1
        if c == 1 and self.num_channels == 3:
            img = torch.cat([img, img, img], 0) if isinstance(img, torch.Tensor) else np.concatenate([img] * 3, 0)
        return img


class EnsureChannelsd(MapTransform):
    """Dictionary version of :class:`EnsureChannels`."""

    def __init__(
        self,
        keys: KeysCollection,
        num_channels: int = 3,
        source_to_gray: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = EnsureChannels(num_channels, source_to_gray)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d


# --------------------------------------------------------------------------------------------------- intensity
class ScaleByBitDepth(Transform):
    """Map stored values to [0, 1] with a fixed factor: ``x / (2**bits_stored - 1)``.

    ``bits_stored`` comes from the image meta (``MetaTensor`` from :class:`LoadImage2Dd`; 8-bit PNG/JPEG → 255,
    16-bit PNG → 65535, a 15-bit CR → 32767), else ``default_bits``. Signed data and a recorded rescale (modality
    LUT) shift the range accordingly (see :func:`stored_value_range`). This is *not* a per-image min-max, which would
    change the contrast and thus the perceived quality.

    Args:
        default_bits: bit depth when the meta has none (plain arrays, float images).
        bits: force a bit depth, ignoring the meta.
        clip: clip the result to [0, 1].
    """

    def __init__(self, default_bits: int = 8, bits: int | None = None, clip: bool = False) -> None:
        self.default_bits = default_bits
        self.bits = bits
        self.clip = clip

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Any shape → same shape, float."""
        meta = dict(image_meta(img))
        if self.bits is not None:
            meta["bits_stored"] = self.bits
        lo, hi = stored_value_range(meta, self.default_bits)
        out = (img - lo) / (hi - lo)
        if self.clip:
            out = out.clip(0.0, 1.0)
        return out


class ScaleByBitDepthd(MapTransform):
    """Dictionary version of :class:`ScaleByBitDepth`."""

    def __init__(
        self,
        keys: KeysCollection,
        default_bits: int = 8,
        bits: int | None = None,
        clip: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = ScaleByBitDepth(default_bits, bits, clip)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d


class InvertMonochrome1(Transform):
    """Invert a ``MONOCHROME1`` image (low values = white, e.g. many CR/DX chest films) to ``MONOCHROME2``.

    ``x → lo + hi - x`` over the fixed stored range (:func:`stored_value_range`), so an inverted 15-bit CR still
    lies in ``[0, 32767]`` and :class:`ScaleByBitDepth` applies unchanged. Images whose meta does not say
    ``MONOCHROME1`` pass through; the result's meta says ``MONOCHROME2`` (so it is never inverted twice).

    Args:
        default_bits: bit depth when the meta has none.
    """

    def __init__(self, default_bits: int = 8) -> None:
        self.default_bits = default_bits

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        meta = image_meta(img)
        if str(meta.get("photometric_interpretation", "")).upper() != "MONOCHROME1":
            return img
        lo, hi = stored_value_range(meta, self.default_bits)
        return _with_meta((lo + hi) - img, photometric_interpretation="MONOCHROME2", inverted_monochrome1=True)


class InvertMonochrome1d(MapTransform):
    """Dictionary version of :class:`InvertMonochrome1`."""

    def __init__(self, keys: KeysCollection, default_bits: int = 8, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = InvertMonochrome1(default_bits)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d


class RequireMinSize(Transform):
    """Fail clearly when an image is smaller than ``min_size`` (e.g. one 32×32 patch); returns it unchanged.

    Raises:
        InputError: naming the file and both sizes (a ``ValueError``).
    """

    def __init__(self, min_size: int | Sequence[int]) -> None:
        self.min_size = (int(min_size),) * 2 if isinstance(min_size, numbers.Integral) else tuple(map(int, min_size))

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        spatial = tuple(int(s) for s in img.shape[1:])
        if len(spatial) != len(self.min_size) or any(s < m for s, m in zip(spatial, self.min_size)):
            raise InputError(
                f"{image_name(img)}: image of size {spatial} is smaller than the minimum {self.min_size} "
                "(e.g. one patch)"
            )
        return img


class RequireMinSized(MapTransform):
    """Dictionary version of :class:`RequireMinSize`."""

    def __init__(self, keys: KeysCollection, min_size: int | Sequence[int], allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = RequireMinSize(min_size)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d


# --------------------------------------------------------------------------------------------------- labels
class NormalizeMOS(Transform):
    """Map a raw MOS to [0, 1]: ``(mos - lo) / (hi - lo)``; NaN (unlabelled) stays NaN.

    Values outside ``mos_range`` by at most ``tolerance * (hi - lo)`` are clipped to [0, 1]; further out is an error
    (a wrong ``mos_range`` or scale, e.g. DMOS or 0-100 scores).

    Args:
        mos_range: the ``(lo, hi)`` of the MOS scale (TID2013: ``(0, 9)``).
        tolerance: allowed overshoot as a fraction of the range.

    Raises:
        ValueError: empty range; at call time a value that is not a number or is out of range (naming the image).
    """

    def __init__(self, mos_range: Sequence[float] = (0.0, 9.0), tolerance: float = 0.05) -> None:
        lo, hi = (float(v) for v in mos_range)
        if not hi > lo:
            raise ValueError(f"mos_range must be (lo, hi) with hi > lo, got {tuple(mos_range)}")
        self.lo, self.hi, self.tolerance = lo, hi, float(tolerance)

    def __call__(self, mos: Any, name: str = "<image>") -> torch.Tensor:
        """Scalar → 0-d float32 tensor in [0, 1] (or NaN)."""
        try:
            value = float(_scalar(mos)) if mos is not None else math.nan
        except (TypeError, ValueError) as e:
            raise InputError(f"{name}: MOS is not a number ({mos!r})") from e
        if math.isnan(value):
            return torch.tensor(math.nan, dtype=torch.float32)
        slack = self.tolerance * (self.hi - self.lo)
        if not self.lo - slack <= value <= self.hi + slack:
            raise InputError(
                f"{name}: MOS {value} outside mos_range ({self.lo}, {self.hi}) (tolerance {self.tolerance:g} of the "
                "range); check the dataset's mos_range"
            )
        norm = min(max((value - self.lo) / (self.hi - self.lo), 0.0), 1.0)
        return torch.tensor(norm, dtype=torch.float32)


class NormalizeMOSd(MapTransform):
    """Dictionary version of :class:`NormalizeMOS`; errors name the item's image.

    Args:
        keys: MOS keys (default ``"mos"``).
        mos_range: ``(lo, hi)`` of the MOS scale.
        tolerance: allowed overshoot as a fraction of the range.
        image_key: key whose file name is used in error messages.
        allow_missing_keys: skip items without a MOS (inference).
    """

    def __init__(
        self,
        keys: KeysCollection = "mos",
        mos_range: Sequence[float] = (0.0, 9.0),
        tolerance: float = 0.05,
        image_key: str | None = "image",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = NormalizeMOS(mos_range, tolerance)
        self.image_key = image_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key], name=_item_name(d, self.image_key))
        return d


class EnsureClassLabel(Transform):
    """Check an integer class label against ``num_classes`` and return it as a 0-d ``torch.long`` tensor.

    Raises:
        InputError: not an integer, or outside ``[0, num_classes)`` (naming the image); a ``ValueError``.
    """

    def __init__(self, num_classes: int | None = None, label_name: str = "label") -> None:
        self.num_classes = num_classes
        self.label_name = label_name

    def __call__(self, label: Any, name: str = "<image>") -> torch.Tensor:
        value = _scalar(label)
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not float(value).is_integer():
            raise InputError(f"{name}: {self.label_name} must be an integer class index, got {label!r}")
        value = int(value)
        if value < 0 or (self.num_classes is not None and value >= self.num_classes):
            bound = f"[0, {self.num_classes - 1}]" if self.num_classes is not None else ">= 0"
            raise InputError(f"{name}: {self.label_name} {value} out of range {bound}")
        return torch.tensor(value, dtype=torch.long)


class EnsureClassLabeld(MapTransform):
    """Dictionary version of :class:`EnsureClassLabel`.

    Args:
        keys: label keys, e.g. ``("diagnosis", "quality")``.
        num_classes: one count per key (or one for all; None: only ``>= 0`` is checked).
        image_key: key whose file name is used in error messages.
        allow_missing_keys: skip absent labels (inference).
    """

    def __init__(
        self,
        keys: KeysCollection,
        num_classes: int | Sequence[int | None] | None = None,
        image_key: str | None = "image",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        counts = num_classes if isinstance(num_classes, Sequence) else [num_classes] * len(self.keys)
        if len(counts) != len(self.keys):
            raise ValueError(f"num_classes needs one value per key {self.keys}, got {num_classes}")
        self.transforms = {k: EnsureClassLabel(n, label_name=str(k)) for k, n in zip(self.keys, counts)}
        self.image_key = image_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transforms[key](d[key], name=_item_name(d, self.image_key))
        return d


class LocalContrastNormalize(Transform):
    """Local contrast normalisation (LCN) of each channel: ``(x - mean_local) / (std_local + eps)``.

    The normalisation of Kang et al., "Convolutional Neural Networks for No-Reference Image Quality Assessment",
    CVPR 2014 (a (2P+1)×(2Q+1) window with P = Q = 3): it removes the local luminance and contrast of the content so
    that a quality network sees the distortion structure (noise, blur, blocking) rather than the scene. SAQM's paper
    does not state its input normalisation; this is monai_iqad's documented default for SAQM (``docs/saqm.md``),
    switchable off in the bundles (``local_contrast_normalization``).

    What the normalisation removes is also what separates an intensity remap (gamma, a darker or flatter display)
    from the pristine: with ``context=True`` the local mean and local standard deviation of the channel-mean
    (luminance) image, over the same window, are appended as two channels, so a network can still see brightness and
    contrast (monai_iqad's choice for issue 11's gamma family; ``docs/saqm.md``).

    Args:
        kernel_size: side of the square uniform window (7 = Kang's P = Q = 3).
        eps: stabiliser added to the local standard deviation, on the scale of the input (0.05 on [0, 1] images).
        context: append the luminance's local mean and local standard deviation: ``(C, H, W)`` → ``(C + 2, H, W)``.

    Raises:
        ValueError: for an even or non-positive ``kernel_size`` or a negative ``eps``.
    """

    #: channels appended with ``context=True`` (local mean, local standard deviation)
    CONTEXT_CHANNELS = 2

    def __init__(self, kernel_size: int = 7, eps: float = 0.05, context: bool = False) -> None:
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}.")
        if eps < 0:
            raise ValueError(f"eps must be non-negative, got {eps}.")
        self.kernel_size = int(kernel_size)
        self.eps = float(eps)
        self.context = bool(context)

    def _local_stats(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Local mean and standard deviation of ``batch`` (N, C, H, W) over the window, reflect-padded."""
        k, r = self.kernel_size, self.kernel_size // 2
        mode = "reflect" if min(batch.shape[2:]) > r else "replicate"
        padded = torch.nn.functional.pad(batch, (r, r, r, r), mode=mode)
        mean = torch.nn.functional.avg_pool2d(padded, k, stride=1)
        sq = torch.nn.functional.avg_pool2d(padded * padded, k, stride=1)
        return mean, (sq - mean * mean).clamp_min(0.0).sqrt()

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """(C, H, W) → (C, H, W) float32 (``(C + 2, H, W)`` with ``context``); reflect padding at the borders; meta
        is kept."""
        x = torch.as_tensor(img, dtype=torch.float32)
        plain = x.as_tensor() if isinstance(x, MetaTensor) else x
        if plain.ndim != 3:
            raise InputError(
                f"LocalContrastNormalize expects (C, H, W), got shape {tuple(plain.shape)} ({image_name(img)})."
            )
        batch = plain[None]  # (1, C, H, W)
        mean, std = self._local_stats(batch)
        out = ((batch - mean) / (std + self.eps))[0]
        if self.context:
            lum_mean, lum_std = self._local_stats(batch.mean(dim=1, keepdim=True))
            out = torch.cat([out, lum_mean[0], lum_std[0]])
        if isinstance(img, MetaTensor):
            return MetaTensor(out, meta=img.meta)
        if isinstance(img, np.ndarray):
            return out.numpy()
        return out


class LocalContrastNormalized(MapTransform):
    """Dictionary version of :class:`LocalContrastNormalize`."""

    def __init__(
        self,
        keys: KeysCollection,
        kernel_size: int = 7,
        eps: float = 0.05,
        context: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = LocalContrastNormalize(kernel_size, eps, context)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d
