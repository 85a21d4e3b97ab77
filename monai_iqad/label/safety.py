"""Input checks for the MONAI Label app: datastore image ids, label tags, uploads and per-request parameters.

Uploads (``PUT /datastore/image``, ``POST /infer`` with a file) are checked by :func:`check_upload` before they are
stored or used: a size cap (``--conf max_upload_mb``, 512 MB by default; HTTP 413) and a real read of the file as an
image (HTTP 422 naming the problem); :func:`check_infer_request` turns an infer request with neither ``image`` nor a
file into HTTP 400 (MONAI Label answers 500).

MONAI Label 0.8.5 accepts an ``image=`` value that is any existing absolute path on the server (its
``MONAILabelApp.infer`` checks ``os.path.exists`` before the datastore), and its local datastore joins client-given ids
into file paths. The app routes every image through :func:`resolve_image`, so a request can only name an image of the
studies datastore (by id) or the server's own temporary copy of an uploaded file.

Pure Python: nothing here imports ``monailabel``.
"""

from __future__ import annotations

import math
import os
import re
import stat
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "InvalidImageIdError",
    "ImageNotFoundError",
    "InvalidParameterError",
    "validate_image_id",
    "validate_label_tag",
    "is_upload_path",
    "resolve_image",
    "remove_upload",
    "sweep_uploads",
    "check_index_param",
    "check_threshold",
    "check_positive_int",
    "check_fraction",
    "check_mos_range",
    "UploadRejectedError",
    "DEFAULT_MAX_UPLOAD_MB",
    "check_upload",
    "check_infer_request",
]

#: default size cap of an uploaded file, in MiB (``--conf max_upload_mb``)
DEFAULT_MAX_UPLOAD_MB = 512

MAX_ID_LENGTH = 255
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DRIVE = re.compile(r"^[A-Za-z]:")


class InvalidImageIdError(ValueError):
    """An ``image`` value that is not a plain datastore id (absolute path, ``..``, separators, control characters)."""


class ImageNotFoundError(LookupError):
    """A well-formed image id that the studies datastore does not hold."""


class InvalidParameterError(ValueError):
    """A request parameter of the wrong type or out of range (the message names it)."""


class UploadRejectedError(ValueError):
    """An uploaded file refused before it is stored or used; ``status`` is the HTTP status to answer.

    413: larger than the cap. 422: empty, or not readable as a 2D image (the reader's reason, without the server path).
    400: a malformed request (see :func:`check_infer_request`).
    """

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def check_upload(path: str | os.PathLike, max_bytes: int = DEFAULT_MAX_UPLOAD_MB * 2**20, read: bool = True) -> None:
    """Refuse an uploaded file that is too large or is not an image, before it is stored or inferred on.

    The file is read with :func:`monai_iqad.data.read_image` (the reader of every task; a 3D NIfTI volume is read at
    slice 0, a multi-frame DICOM at frame 0), so a text file named ``x.png``, a truncated image, an image with NaN
    pixels or a DICOM without pixel data is refused.

    Args:
        path: the server's temporary copy of the upload.
        max_bytes: the size cap.
        read: also read it as an image (an infer task reads it anyway and reports the same errors: ``False``).

    Raises:
        UploadRejectedError: status 413 (too large) or 422 (empty / not an image); the message never holds the
            server-side path.
    """
    from monai_iqad.data.image_io import ImageReadError, read_image

    size = os.path.getsize(path)
    if size > max_bytes:
        raise UploadRejectedError(
            f"the uploaded file has {size / 2**20:.1f} MiB, more than the {max_bytes / 2**20:g} MiB limit "
            "(server option --conf max_upload_mb)",
            status=413,
        )
    if size == 0:
        raise UploadRejectedError("the uploaded file is empty")
    if not read:
        return
    try:
        read_image(path, slice_index=0)
    except ImageReadError as e:
        reason = str(e).replace(os.fspath(path), "the uploaded file")
        raise UploadRejectedError(f"the uploaded file is not a readable image ({reason})") from None


def check_infer_request(image: Any, file: Any, session_id: Any = None) -> None:
    """An infer request must name an image (a datastore id) or upload a file.

    Raises:
        UploadRejectedError: status 400 when it does neither.
    """
    if not file and not image and not session_id:
        raise UploadRejectedError("pass image=<datastore id> or upload a file (the request has neither)", status=400)


def validate_image_id(image_id: Any) -> str:
    """Check that ``image_id`` is a plain datastore id and return it.

    MONAI Label's local datastore lists only the top folder of the studies directory, so an id is a file name without
    its image suffix (``img001`` for ``img001.png``): never a path.

    Args:
        image_id: the ``image`` value of a request.

    Raises:
        InvalidImageIdError: not a string, empty, longer than 255 characters, ``.``/``..``, containing ``/`` or ``\\``,
            a drive letter, a leading ``~`` or a control character (NUL included).
    """
    if not isinstance(image_id, str):
        raise InvalidImageIdError(f"image id must be a string, got {type(image_id).__name__}")
    if not image_id or not image_id.strip():
        raise InvalidImageIdError("image id is empty")
    if len(image_id) > MAX_ID_LENGTH:
        raise InvalidImageIdError(f"image id is longer than {MAX_ID_LENGTH} characters")
    if _CONTROL.search(image_id):
        raise InvalidImageIdError(f"image id {image_id!r} contains control characters")
    if "/" in image_id or "\\" in image_id or _DRIVE.match(image_id):
        raise InvalidImageIdError(
            f"image id {image_id!r} is a path: only ids of the studies datastore are accepted (or upload the file)"
        )
    if image_id in (".", "..") or image_id.startswith("~"):
        raise InvalidImageIdError(f"image id {image_id!r} is not a datastore id")
    return image_id


def validate_label_tag(tag: Any) -> str:
    """Check a datastore label tag (``final``, ``original``...) with the same rules as an image id.

    Raises:
        InvalidImageIdError: see :func:`validate_image_id`.
    """
    try:
        return validate_image_id(tag)
    except InvalidImageIdError as e:
        raise InvalidImageIdError(str(e).replace("image id", "label tag")) from None


def is_upload_path(path: Any, upload_dir: str | os.PathLike | None) -> bool:
    """True when ``path`` is a regular file (not a link) directly inside ``upload_dir``, named ``tmp*``.

    That is how MONAI Label's endpoints name the temporary copy of an uploaded file
    (``tempfile.NamedTemporaryFile(suffix=...)``) once the app points ``tempfile.tempdir`` at ``upload_dir``.
    """
    if not upload_dir or not isinstance(path, str) or not os.path.isabs(path):
        return False
    p = Path(path)
    if not p.name.startswith("tmp") or os.path.realpath(p.parent) != os.path.realpath(upload_dir):
        return False
    try:
        return stat.S_ISREG(os.lstat(p).st_mode)
    except OSError:
        return False


def resolve_image(
    image: Any, lookup: Callable[[str], str | None], upload_dir: str | os.PathLike | None = None
) -> tuple[str, bool]:
    """The file to read for a request's ``image`` value, and whether it is an upload.

    Args:
        image: a datastore id, or the path MONAI Label gave the uploaded file.
        lookup: datastore id → image file path (``""``/``None`` when the datastore has no such id), e.g.
            ``LocalDatastore.get_image_uri``.
        upload_dir: the private folder holding uploaded files; absolute paths elsewhere are refused.

    Returns:
        ``(path, is_upload)``.

    Raises:
        InvalidImageIdError: an absolute path outside ``upload_dir`` or a malformed id (see :func:`validate_image_id`).
        ImageNotFoundError: a well-formed id that is not in the datastore, or whose file is gone.
    """
    if isinstance(image, str) and (os.path.isabs(image) or image.startswith("file:")):
        if is_upload_path(image, upload_dir):
            return image, True
        raise InvalidImageIdError(
            "server-side paths are refused: pass the id of an image in the studies datastore or upload the file"
        )
    image_id = validate_image_id(image)
    path = lookup(image_id)
    if not path or not os.path.isfile(path):
        raise ImageNotFoundError(f"image id {image_id!r} is not in the studies datastore")
    return path, False


def remove_upload(path: str | None, upload_dir: str | os.PathLike | None) -> bool:
    """Delete an uploaded temporary file (only if it is one, see :func:`is_upload_path`). Returns True if removed."""
    if path and is_upload_path(path, upload_dir):
        try:
            os.unlink(path)
            return True
        except FileNotFoundError:
            return False
    return False


def sweep_uploads(upload_dir: str | os.PathLike | None, max_age_s: float = 600.0) -> int:
    """Delete ``tmp*`` files older than ``max_age_s`` seconds in ``upload_dir`` (leftovers of requests that failed
    before reaching the app, e.g. an invalid ``params`` JSON). Returns the number of files removed."""
    if not upload_dir or not os.path.isdir(upload_dir):
        return 0
    now = time.time()
    removed = 0
    for entry in os.scandir(upload_dir):
        try:
            if entry.name.startswith("tmp") and entry.is_file(follow_symlinks=False):
                if now - entry.stat(follow_symlinks=False).st_mtime > max_age_s:
                    os.unlink(entry.path)
                    removed += 1
        except OSError:
            continue
    return removed


def check_index_param(params: Mapping[str, Any], key: str) -> int | None:
    """A ``frame``/``slice`` request parameter as a non-negative int (None when absent).

    Raises:
        InvalidParameterError: not an integer ≥ 0.
    """
    value = params.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InvalidParameterError(f"'{key}' must be a non-negative integer, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise InvalidParameterError(f"'{key}' must be a non-negative integer, got {value!r}") from None
    if not math.isfinite(number) or not number.is_integer() or number < 0:
        raise InvalidParameterError(f"'{key}' must be a non-negative integer, got {value!r}")
    return int(number)


def check_threshold(value: Any, name: str = "quality_threshold") -> float:
    """A quality threshold as a float in ``[0, 1]``.

    Raises:
        InvalidParameterError: not a number in ``[0, 1]``.
    """
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidParameterError(f"'{name}' must be a number in [0, 1], got {value!r}") from None
    if isinstance(value, bool) or not 0.0 <= number <= 1.0:
        raise InvalidParameterError(f"'{name}' must be a number in [0, 1], got {value!r}")
    return number


def check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
    """An integer request parameter ≥ ``minimum`` (``max_epochs``, ``seed`` with ``minimum=0``...).

    Raises:
        InvalidParameterError: not an integer ≥ ``minimum``.
    """
    kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    if isinstance(value, bool):
        raise InvalidParameterError(f"'{name}' must be {kind}, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidParameterError(f"'{name}' must be {kind}, got {value!r}") from None
    if not math.isfinite(number) or not number.is_integer() or number < minimum:
        raise InvalidParameterError(f"'{name}' must be {kind}, got {value!r}")
    return int(number)


def check_fraction(value: Any, name: str, low: float = 0.0, high: float = 1.0) -> float:
    """A float request parameter in ``[low, high)``.

    Raises:
        InvalidParameterError: not a number in range.
    """
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidParameterError(f"'{name}' must be a number in [{low}, {high}), got {value!r}") from None
    if isinstance(value, bool) or not (low <= number < high):
        raise InvalidParameterError(f"'{name}' must be a number in [{low}, {high}), got {value!r}")
    return number


def check_mos_range(value: Any) -> tuple[float, float]:
    """A ``[low, high]`` MOS scale with finite ``low < high``.

    Raises:
        InvalidParameterError: anything else.
    """
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise InvalidParameterError(f"'mos_range' must be [low, high], got {value!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise InvalidParameterError(f"'mos_range' must be finite with low < high, got {value!r}")
    return low, high
