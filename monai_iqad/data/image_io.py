"""Read one 2D image (PNG/JPEG/BMP/TIFF, DICOM, NIfTI) into a float32 ``(C, H, W)`` array plus a meta dict.

``read_image`` is the single entry point used by :class:`monai_iqad.transforms.LoadImage2Dd`, the converters and the
demo data. It differs from MONAI's ``LoadImage`` on purpose:

- the result is always channel-first and **rows first** (``(C, H, W)``; MONAI's ``PILReader`` gives ``(W, H)`` by
  default);
- DICOM pixel data go through the modality LUT (rescale slope/intercept, so CT values are in HU), ``YBR_*`` colour
  is converted to RGB and ``PALETTE COLOR`` is expanded to RGB; ``MONOCHROME1`` is kept as stored and only *recorded*
  (inverting it is the job of :class:`monai_iqad.transforms.InvertMonochrome1d`);
- a multi-frame DICOM (cine loop, enhanced multi-frame) gives one frame (``frame=``; the middle frame by default);
- a 3D NIfTI volume is refused unless a ``slice_index`` is chosen;
- NaN or infinite pixel values are refused (they would be scored ``nan`` silently);
- every failure raises :class:`ImageReadError` whose message starts with the file name (a missing file, a broken
  symbolic link and a symbolic link loop are told apart).

It works with numpy 1.26 and 2.x, and with pydicom 2.4 and 3.x.
"""

from __future__ import annotations

import errno
import math
import os
import stat
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from PIL import Image, UnidentifiedImageError
from pydicom.errors import InvalidDicomError

from monai_iqad.utils.errors import MonaiIqadError

try:  # pydicom >= 3
    from pydicom.pixels import apply_color_lut, apply_modality_lut, convert_color_space
    from pydicom.pixels import get_decoder as _get_decoder

    _PYDICOM3 = True
except ImportError:  # pragma: no cover - pydicom 2.x
    from pydicom.pixel_data_handlers.util import apply_color_lut, apply_modality_lut, convert_color_space

    _get_decoder = None
    _PYDICOM3 = False

__all__ = [
    "ImageReadError",
    "read_image",
    "image_format",
    "file_problem",
    "PIL_SUFFIXES",
    "DICOM_SUFFIXES",
    "NIFTI_SUFFIXES",
]

PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".jp2", ".ppm", ".pgm")
DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
NIFTI_SUFFIXES = (".nii", ".nii.gz")

# Pillow modes that are converted on read, and to what.
_PIL_TO_GRAY = {"1": "L", "LA": "L", "La": "L"}
_PIL_TO_RGB = {
    "P": "RGB",
    "PA": "RGB",
    "RGBA": "RGB",
    "RGBa": "RGB",
    "RGBX": "RGB",
    "CMYK": "RGB",
    "YCbCr": "RGB",
    "LAB": "RGB",
    "HSV": "RGB",
}
_PIL_16BIT = ("I;16", "I;16L", "I;16B", "I;16N")

_YBR_CONVERTIBLE = ("YBR_FULL", "YBR_FULL_422")
# JPEG 2000 component transforms are undone by the codec itself: the decoded samples are already RGB.
_YBR_DECODED_AS_RGB = ("YBR_ICT", "YBR_RCT")


class ImageReadError(MonaiIqadError, ValueError):
    """An image file could not be read as one 2D image; the message names the file and the reason (``.file``)."""

    hint = "check that the file is a complete PNG/JPEG/BMP/TIFF, DICOM or NIfTI image, or remove it from the input"


def _fail(path: str | os.PathLike, problem: str, exc: BaseException | None = None) -> ImageReadError:
    """Build an :class:`ImageReadError` whose message starts with the file name."""
    reason = f" ({type(exc).__name__}: {exc})" if exc is not None else ""
    return ImageReadError(f"{os.fspath(path)}: {problem}{reason}", file=path)


def file_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be opened as a regular file, or None when it can.

    ``"image file not found"``, ``"broken symbolic link (its target does not exist)"``, ``"symbolic link loop"``,
    ``"permission denied"``, ``"not a regular file (a folder, device or socket)"``...
    """
    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "symbolic link loop (the link points back to itself)"
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return (
                "broken symbolic link (its target does not exist)" if os.path.islink(path) else "image file not found"
            )
        if e.errno == errno.EACCES:
            return "permission denied"
        return f"cannot access the file ({e.strerror or e})"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file (a folder, device or socket)"
    return None


def image_format(path: str | os.PathLike) -> str:
    """Decide how to read ``path``: ``"pil"``, ``"dicom"`` or ``"nifti"``.

    The suffix decides when it is known; otherwise the content is sniffed (DICOM ``DICM`` magic at byte 128, NIfTI-1/2
    magic, PNG/JPEG/BMP/TIFF/GIF signatures).

    Raises:
        ImageReadError: when the file does not exist or its format is not recognised.
    """
    p = Path(path)
    problem = file_problem(p)
    if problem is not None:
        raise _fail(path, problem)
    name = p.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(DICOM_SUFFIXES):
        return "dicom"
    if name.endswith(PIL_SUFFIXES):
        return "pil"
    try:
        with open(p, "rb") as f:
            head = f.read(352)
    except OSError as e:
        raise _fail(path, "cannot open the file", e) from e
    if head[128:132] == b"DICM":
        return "dicom"
    if head[344:348] in (b"n+1\x00", b"ni1\x00") or head[4:8] in (b"n+2\x00", b"ni2\x00"):
        return "nifti"
    if head.startswith((b"\x89PNG", b"\xff\xd8\xff", b"BM", b"II*\x00", b"MM\x00*", b"GIF8")):
        return "pil"
    raise _fail(path, "unrecognised image format (expected PNG/JPEG/BMP/TIFF, DICOM or NIfTI)")


def _base_meta(path: str | os.PathLike, fmt: str) -> dict[str, Any]:
    return {
        "filename_or_obj": os.fspath(path),
        "format": fmt,
        # the returned array is channel-first, so MONAI's EnsureChannelFirst(d) is a no-op on it
        "original_channel_dim": 0,
        "bits_stored": None,
        "photometric_interpretation": None,
        "modality": None,
        "num_frames": 1,
        "frame": 0,
        "spacing": None,
        "rescale": None,
        "window": None,
    }


def _check_index(path: str | os.PathLike, value: int | None, count: int, what: str, default: int) -> int:
    """Validate a frame/slice index against ``count`` available ones (``None`` → ``default``)."""
    if value is None:
        return default
    try:
        index = int(value)
    except (TypeError, ValueError) as e:
        raise _fail(path, f"{what} must be an integer, got {value!r}") from e
    if index != value or not 0 <= index < count:
        raise _fail(path, f"{what} {value!r} out of range: the file has {count} {what}(s) (valid: 0..{count - 1})")
    return index


def _to_chw(arr: np.ndarray) -> np.ndarray:
    """(H, W) → (1, H, W); (H, W, C) → (C, H, W); float32, C-contiguous."""
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[None]
    else:
        arr = np.moveaxis(arr, -1, 0)
    return np.ascontiguousarray(arr, dtype=np.float32)


# --------------------------------------------------------------------------------------------------- Pillow
def _read_pil(path: str | os.PathLike, frame: int | None, slice_index: int | None) -> tuple[np.ndarray, dict]:
    meta = _base_meta(path, "pil")
    _check_index(path, slice_index, 1, "slice", 0)
    try:
        with Image.open(path) as img:
            n_frames = int(getattr(img, "n_frames", 1) or 1)
            index = _check_index(path, frame, n_frames, "frame", 0)
            if index:
                img.seek(index)
            img.load()
            mode = img.mode
            # spacing stays None: PNG/TIFF resolution tags (dpi) are print settings, not pixel spacing
            meta.update(format=(img.format or "pil").lower(), num_frames=n_frames, frame=index, original_mode=mode)
            bits: int | None = 8
            if mode in _PIL_TO_GRAY:
                img = img.convert(_PIL_TO_GRAY[mode])
            elif mode in _PIL_TO_RGB:
                img = img.convert(_PIL_TO_RGB[mode])
            elif mode in _PIL_16BIT:
                bits = 16
            elif mode == "I":  # 32-bit signed container: 16-bit PNG (older Pillow) or integer TIFF
                bits = _pil_integer_bits(img)
            elif mode == "F":
                bits = None
            elif mode not in ("L", "RGB"):
                raise _fail(path, f"unsupported Pillow image mode {mode!r} (bands {img.getbands()})")
            arr = np.asarray(img)
    except ImageReadError:
        raise
    except FileNotFoundError as e:
        raise _fail(path, "image file not found", e) from e
    except UnidentifiedImageError as e:
        raise _fail(path, "not a readable PNG/JPEG/BMP/TIFF image (corrupt or unsupported)", e) from e
    except Image.DecompressionBombError as e:
        raise _fail(path, "image too large for Pillow's decompression-bomb guard (Image.MAX_IMAGE_PIXELS)", e) from e
    except (OSError, SyntaxError, ValueError, EOFError, TypeError) as e:
        raise _fail(path, "corrupt or truncated image", e) from e
    if arr.ndim == 3 and arr.shape[-1] != 3:
        raise _fail(path, f"unsupported number of channels {arr.shape[-1]} (expected 1 or 3)")
    meta["bits_stored"] = bits
    meta["photometric_interpretation"] = "RGB" if arr.ndim == 3 else "MONOCHROME2"
    return _to_chw(arr), meta


def _pil_integer_bits(img: Image.Image) -> int:
    """Bits per sample of a Pillow mode-"I" image: 16 for PNG (its maximum), the TIFF tag otherwise, else 32."""
    if (img.format or "").upper() == "PNG":
        return 16
    tags = getattr(img, "tag_v2", None)
    if tags is not None:
        bps = tags.get(258)
        if bps:
            return int(bps[0] if isinstance(bps, Sequence) else bps)
    return 32


# --------------------------------------------------------------------------------------------------- DICOM
def _dcmread(path: str | os.PathLike) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(os.fspath(path))
    except InvalidDicomError:
        pass  # no preamble/DICM prefix: retry permissively, then insist on pixel data below
    except FileNotFoundError as e:
        raise _fail(path, "image file not found", e) from e
    except Exception as e:  # pydicom raises many types on corrupt files
        raise _fail(path, "corrupt or unreadable DICOM file", e) from e
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(os.fspath(path), force=True)
            ds.get("PixelData")  # parse lazily stored elements now, inside the guard
    except Exception as e:
        raise _fail(path, "not a DICOM file (no 'DICM' prefix and it cannot be parsed as a raw data set)", e) from e
    return ds


def _dicom_float(value: Any) -> float | None:
    """First value of a (possibly multi-valued) numeric DICOM element as float, or None."""
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        if len(value) == 0:
            return None
        value = value[0]
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _frame_attr(ds: pydicom.Dataset, frame: int, sequence: str, keyword: str) -> Any:
    """``keyword`` from the top level, else from the enhanced multi-frame functional groups (per-frame, then shared)."""
    if keyword in ds:
        return ds.get(keyword)
    for groups, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        try:
            item = getattr(ds, groups)[index]
            value = getattr(item, sequence)[0].get(keyword)
        except (AttributeError, IndexError, KeyError, TypeError):
            continue
        if value is not None:
            return value
    return None


def _dicom_spacing(ds: pydicom.Dataset) -> tuple[float, float] | None:
    """(row, col) spacing in mm from PixelSpacing, ImagerPixelSpacing or the shared functional groups."""
    candidates = [ds.get("PixelSpacing"), ds.get("ImagerPixelSpacing")]
    try:
        candidates.append(ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing)
    except (AttributeError, IndexError, KeyError, TypeError):
        pass
    for value in candidates:
        try:
            if value is not None and len(value) >= 2:
                row, col = float(value[0]), float(value[1])
                if row > 0 and col > 0 and math.isfinite(row) and math.isfinite(col):
                    return (row, col)
        except (TypeError, ValueError):
            continue
    return None


def _ensure_transfer_syntax(ds: pydicom.Dataset) -> None:
    """Data sets read with ``force=True`` may lack a transfer syntax; infer it from how they were encoded."""
    file_meta = getattr(ds, "file_meta", None)
    if file_meta is not None and "TransferSyntaxUID" in file_meta:
        return
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom 3 deprecates is_implicit_VR in favour of original_encoding
        encoding = getattr(ds, "original_encoding", None)
        implicit = encoding[0] if encoding is not None else getattr(ds, "is_implicit_VR", True)
    implicit = True if implicit is None else bool(implicit)
    if file_meta is None:
        ds.file_meta = file_meta = FileMetaDataset()
    file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian


def _decode_dicom_frame(
    path: str | os.PathLike, ds: pydicom.Dataset, index: int, n_frames: int
) -> tuple[np.ndarray, str]:
    """Decode one frame; return it and the photometric interpretation *of the returned samples*."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if _PYDICOM3:
        tsyntax = ds.file_meta.TransferSyntaxUID
        try:
            decoder = _get_decoder(tsyntax)
        except NotImplementedError as e:
            raise _fail(path, f"no pixel data decoder for transfer syntax {tsyntax.name}", e) from e
        if not decoder.is_available:
            missing = decoder.missing_dependencies
            missing = "; ".join(str(m) for m in (missing.values() if isinstance(missing, dict) else missing)) or "?"
            raise _fail(path, f"cannot decode transfer syntax {tsyntax.name}: missing plugin ({missing})")
        arr, info = decoder.as_array(ds, index=index)  # as_rgb=True: YBR_FULL(_422) → RGB
        return arr, str(info.get("photometric_interpretation", photometric)).strip().upper()
    arr = ds.pixel_array  # pragma: no cover - pydicom 2.x decodes every frame
    if n_frames > 1:  # pragma: no cover
        arr = arr[index]
    return arr, photometric  # pragma: no cover


def _read_dicom(path: str | os.PathLike, frame: int | None, slice_index: int | None) -> tuple[np.ndarray, dict]:
    meta = _base_meta(path, "dicom")
    ds = _dcmread(path)
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise _fail(path, "DICOM file has no pixel data (not an image object, or not a DICOM file)")
    try:
        n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        n_frames = 1
    # a multi-frame CT/MR object stores its slices as frames: slice_index is accepted as an alias for frame
    chosen = frame if frame is not None else slice_index
    index = _check_index(path, chosen, n_frames, "frame", n_frames // 2)
    original_pi = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples not in (1, 3):
        raise _fail(path, f"unsupported SamplesPerPixel {samples} (expected 1 or 3)")
    try:
        _ensure_transfer_syntax(ds)
        arr, decoded_pi = _decode_dicom_frame(path, ds, index, n_frames)
    except ImageReadError:
        raise
    except Exception as e:  # decoders raise many types on corrupt or truncated data
        raise _fail(path, "cannot decode the DICOM pixel data (corrupt, truncated or unsupported)", e) from e
    bits = ds.get("BitsStored")
    bits = int(bits) if bits is not None else None
    pixel_representation = int(ds.get("PixelRepresentation", 0) or 0)
    rescale = None
    try:
        if decoded_pi == "PALETTE COLOR":
            arr = apply_color_lut(arr, ds)
            desc = ds.get("RedPaletteColorLookupTableDescriptor")
            bits, pixel_representation = (int(desc[2]) if desc is not None else 16), 0  # the LUT's output
            decoded_pi = "RGB"
        elif decoded_pi in _YBR_CONVERTIBLE:
            arr = convert_color_space(arr, decoded_pi, "RGB")
            decoded_pi = "RGB"
        elif decoded_pi in _YBR_DECODED_AS_RGB:
            decoded_pi = "RGB"
        elif decoded_pi.startswith("MONOCHROME"):
            rescale_seq = "PixelValueTransformationSequence"
            slope = _dicom_float(_frame_attr(ds, index, rescale_seq, "RescaleSlope"))
            intercept = _dicom_float(_frame_attr(ds, index, rescale_seq, "RescaleIntercept"))
            has_lut = "ModalityLUTSequence" in ds
            if has_lut:
                arr = apply_modality_lut(arr, ds)
                bits = int(ds.ModalityLUTSequence[0].LUTDescriptor[2])  # the LUT's output depth, unsigned
                pixel_representation = 0
            elif slope is not None or intercept is not None:  # also enhanced multi-frame (functional groups)
                arr = arr * (1.0 if slope is None else slope) + (0.0 if intercept is None else intercept)
            if has_lut or slope is not None or intercept is not None:
                rtype = str(_frame_attr(ds, index, rescale_seq, "RescaleType") or "")
                if has_lut:
                    rtype = str(ds.ModalityLUTSequence[0].get("ModalityLUTType", rtype))
                if str(ds.get("Modality", "")) == "CT" and rtype in ("", "US"):
                    rtype = "HU"  # CT rescale output is HU by definition
                rescale = {
                    "slope": 1.0 if slope is None else slope,
                    "intercept": 0.0 if intercept is None else intercept,
                    "type": rtype,
                    "lut": has_lut,
                }
        elif decoded_pi != "RGB":
            raise _fail(path, f"unsupported photometric interpretation {decoded_pi!r}")
    except ImageReadError:
        raise
    except Exception as e:
        raise _fail(path, f"cannot convert {decoded_pi} pixel data", e) from e
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[-1] != 3 or arr.ndim not in (2, 3):
        raise _fail(path, f"unexpected decoded pixel array shape {arr.shape} for one frame")
    center = _dicom_float(_frame_attr(ds, index, "FrameVOILUTSequence", "WindowCenter"))
    width = _dicom_float(_frame_attr(ds, index, "FrameVOILUTSequence", "WindowWidth"))
    meta.update(
        bits_stored=bits,
        pixel_representation=pixel_representation,
        photometric_interpretation=original_pi if original_pi.startswith("MONOCHROME") else decoded_pi,
        original_photometric_interpretation=original_pi,
        modality=str(ds.get("Modality", "")) or None,
        num_frames=n_frames,
        frame=index,
        spacing=_dicom_spacing(ds),
        rescale=rescale,
        window={"center": center, "width": width} if center is not None and width is not None and width > 0 else None,
        transfer_syntax=str(ds.file_meta.TransferSyntaxUID),
    )
    return _to_chw(arr), meta


# --------------------------------------------------------------------------------------------------- NIfTI
def _read_nifti(path: str | os.PathLike, frame: int | None, slice_index: int | None) -> tuple[np.ndarray, dict]:
    import nibabel as nib

    meta = _base_meta(path, "nifti")
    try:
        img = nib.load(os.fspath(path))
        data = np.asanyarray(img.dataobj)
        zooms = tuple(float(z) for z in img.header.get_zooms())
    except FileNotFoundError as e:
        raise _fail(path, "image file not found", e) from e
    except Exception as e:  # nibabel/gzip/zlib raise many types on corrupt files
        raise _fail(path, "corrupt or unreadable NIfTI file", e) from e
    if data.dtype.names:  # RGB24/RGBA32 structured voxels → trailing channel axis
        names = [n for n in data.dtype.names if n.upper() in ("R", "G", "B")] or list(data.dtype.names)[:3]
        data = np.stack([data[n] for n in names], axis=-1)
        data = data.reshape(data.shape[:-1] + (1,) * max(0, 4 - (data.ndim - 1)) + (data.shape[-1],))
    if data.ndim > 5 or data.ndim < 2:
        raise _fail(path, f"unsupported NIfTI shape {data.shape} (expected 2D, 3D, 2D+channel or 3D+time)")
    dtype = data.dtype
    full = data.reshape(data.shape + (1,) * (5 - data.ndim))  # (X, Y, Z, T, C)
    nx, ny, nz, nt, nc = full.shape
    if nz > 1 and slice_index is None:
        raise _fail(path, f"3D volume in a 2D pipeline: pass slice_index (the volume has {nz} slices, {data.shape})")
    z = _check_index(path, slice_index, nz, "slice", 0)
    t = _check_index(path, frame, nt, "frame", nt // 2)
    plane = full[:, :, z, t, :]  # (X, Y, C)
    # NIfTI's first axis varies fastest on disk, like the column index of a raster: rows = j, columns = i
    arr = np.transpose(plane, (2, 1, 0))
    if np.issubdtype(dtype, np.unsignedinteger) and dtype.itemsize <= 2:
        bits = 8 * dtype.itemsize
    else:
        bits = None
    slope, inter = getattr(img.dataobj, "slope", 1.0), getattr(img.dataobj, "inter", 0.0)
    rescale = None
    try:
        if (float(slope), float(inter)) != (1.0, 0.0) and math.isfinite(float(slope)):
            rescale = {"slope": float(slope), "intercept": float(inter), "type": "", "lut": False}
            bits = None
    except (TypeError, ValueError):
        rescale = None
    meta.update(
        bits_stored=bits,
        photometric_interpretation="RGB" if nc == 3 else "MONOCHROME2",
        num_frames=nt,
        frame=t,
        num_slices=nz,
        slice_index=z,
        spacing=(zooms[1], zooms[0]) if len(zooms) >= 2 and zooms[0] > 0 and zooms[1] > 0 else None,
        rescale=rescale,
    )
    return np.ascontiguousarray(arr, dtype=np.float32), meta


_READERS = {"pil": _read_pil, "dicom": _read_dicom, "nifti": _read_nifti}


def read_image(
    path: str | os.PathLike, frame: int | None = None, slice_index: int | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Read one 2D image as a float32 ``(C, H, W)`` array (rows first) and a meta dict.

    Args:
        path: image file. PNG/JPEG/BMP/TIFF (Pillow), DICOM (``.dcm``/``.dicom``, or any name with the ``DICM``
            magic at byte 128) or NIfTI (``.nii``/``.nii.gz``).
        frame: frame of a multi-frame file (DICOM cine/multi-frame, NIfTI 4th axis, multi-page TIFF/GIF).
            Default: the middle frame (``num_frames // 2``) for DICOM and NIfTI, the first page for Pillow files.
        slice_index: slice of a 3D NIfTI volume (required for 3D volumes); for a multi-frame DICOM it is an alias
            for ``frame``.

    Returns:
        ``(array, meta)``. ``array`` is float32 ``(C, H, W)`` with ``C`` = 1 (gray) or 3 (RGB) and the stored values
        kept (8-bit stays 0..255, 16-bit PNG 0..65535, CT in HU after the modality LUT). ``meta`` holds
        ``filename_or_obj``, ``format``, ``original_channel_dim`` (always 0: the array is channel-first),
        ``bits_stored`` (None when unknown, e.g. float data or rescaled values), ``photometric_interpretation``
        (``MONOCHROME1``/``MONOCHROME2``/``RGB``; colour data are always RGB after reading), ``modality``,
        ``num_frames``, ``frame``, ``spacing`` (row, col) in mm or None, ``rescale`` (``slope``, ``intercept``,
        ``type``, ``lut``) or None, ``window`` (``center``, ``width``) or None; DICOM adds ``pixel_representation``,
        ``original_photometric_interpretation`` and ``transfer_syntax``; NIfTI adds ``num_slices``/``slice_index``;
        Pillow adds ``original_mode``.

    Raises:
        ImageReadError: (a ``ValueError``) naming the file: missing file, broken symbolic link or link loop, unknown
            format, corrupt/truncated data, unsupported channel count or colour model, frame/slice out of range, 3D
            volume without ``slice_index``, NaN or infinite pixel values (also values beyond the float32 range).
    """
    fmt = image_format(path)
    array, meta = _READERS[fmt](path, frame, slice_index)
    _check_finite(path, array)
    return array, meta


def _check_finite(path: str | os.PathLike, array: np.ndarray) -> None:
    """Refuse NaN/inf pixels: a network maps them to a ``nan`` score without any warning."""
    finite = np.isfinite(array)
    if finite.all():
        return
    n_nan = int(np.isnan(array).sum())
    n_inf = int(array.size - finite.sum()) - n_nan
    raise _fail(
        path,
        f"{n_nan + n_inf} non-finite pixel value(s) of {array.size} ({n_nan} NaN, {n_inf} infinite; values beyond "
        "the float32 range count as infinite): repair or exclude the image",
    )
