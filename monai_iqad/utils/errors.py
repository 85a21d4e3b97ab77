"""The project's exceptions and how a bundle run shows them to the user.

Every error that a user can fix (a bad input file, datalist item, checkpoint or setting) is a :class:`MonaiIqadError`:
its message names the file / item / field and the problem, and it carries a one-line ``hint`` saying what to do.
The concrete classes keep a built-in base as well (``ImageReadError`` and ``DatalistError`` are ``ValueError``\\ s,
``CheckpointNotFoundError`` is a ``FileNotFoundError``...), so ``except ValueError`` code keeps working.

``python -m monai.bundle run`` is MONAI's entry point: an exception raised while a config expression runs reaches the
user wrapped in MONAI's ``RuntimeError: Failed to evaluate ConfigExpression`` (and, from a ``DataLoader`` worker or a
MONAI transform, in further ``RuntimeError``\\ s), 2–7 chained tracebacks with the project's message in the middle.
Importing ``monai_iqad`` in such a process (every bundle config imports it) installs :func:`bundle_excepthook`, which
finds the project's exception in that chain and prints it alone::

    monai_iqad error (ImageReadError): imgs/bad.png: not a readable PNG/JPEG/BMP/TIFF image (corrupt or unsupported)
    hint: check that the file is a complete PNG/JPEG/BMP/TIFF, DICOM or NIfTI image, or remove it from the input
    (set MONAI_IQAD_DEBUG=1 for the full traceback)

The process still exits with status 1. Errors that are not the project's keep MONAI's and Python's behaviour (the
full traceback), and ``MONAI_IQAD_DEBUG=1`` restores the full traceback for the project's errors too. The same chain
search shortens Ignite's ``Engine run is terminating due to exception: ...`` log line and MONAI's ``StatsHandler``
``Exception: ...`` record (which otherwise logs the whole traceback). Nothing is installed in any
other process (a Python session, pytest, the MONAI Label server): importing the package has no side effect there.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import sys
from collections.abc import Callable
from types import TracebackType
from typing import Any

__all__ = [
    "MonaiIqadError",
    "InputError",
    "EmptyDataError",
    "CheckpointError",
    "CheckpointNotFoundError",
    "FileWriteError",
    "DEBUG_ENV",
    "find_project_error",
    "format_project_error",
    "bundle_excepthook",
    "is_bundle_run",
    "install_excepthook",
    "install_bundle_excepthook",
]

#: environment variable that restores full tracebacks for the project's errors
DEBUG_ENV = "MONAI_IQAD_DEBUG"


class MonaiIqadError(Exception):
    """Base of the errors a user can fix; the message names the file/item/field and the problem.

    Args:
        message: the one-line message (it should start with the file or datalist it is about).
        file: the file concerned (image, datalist, checkpoint), when there is one.
        item: the item index (or id) concerned, when there is one.
        field: the field/key/option concerned (``"mos"``, ``"domain"``...), when there is one.
        hint: what to do about it; default: the class's ``hint``.
    """

    #: default hint of the class (one line)
    hint: str = "fix the input named in the message and run again"

    def __init__(
        self,
        message: str = "",
        *,
        file: str | os.PathLike | None = None,
        item: int | str | None = None,
        field: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.file = os.fspath(file) if file is not None else None
        self.item = item
        self.field = field
        if hint is not None:
            self.hint = hint


class InputError(MonaiIqadError, ValueError):
    """An input value (file content, label, option) that the project refuses; a ``ValueError``."""


class EmptyDataError(MonaiIqadError, ValueError):
    """A run would train or evaluate on nothing: a split / domain holds no (labelled) item."""

    hint = "add labelled items to that split and domain of the datalist, or choose a mode that does not need them"


class CheckpointError(MonaiIqadError, RuntimeError):
    """A checkpoint file exists but cannot be loaded (truncated, empty, not written by ``torch.save``)."""

    hint = "delete or move the damaged file and run again with --resume false (training restarts from epoch 0)"


class CheckpointNotFoundError(MonaiIqadError, FileNotFoundError):
    """A checkpoint or trained model that a run needs does not exist; a ``FileNotFoundError``."""

    hint = "train the bundle first, or point ckpt_dir at the folder holding the file"


class FileWriteError(MonaiIqadError, OSError):
    """An output file (checkpoint, model, CSV, datalist) could not be written; an ``OSError`` naming the path.

    ``errno`` is the one of the underlying ``OSError`` (e.g. 28, no space left on device).
    """

    hint = "free disk space or choose a writable output folder; files written before are unchanged"


# ------------------------------------------------------------------------------------------------ finding the error
_QUALNAME = re.compile(r"^(monai_iqad(?:\.[A-Za-z_]\w*)+): (.*)$")


def _class_from_path(path: str) -> type | None:
    """``monai_iqad.data.image_io.ImageReadError`` → the class, when it is a :class:`MonaiIqadError` subclass."""
    module, _, name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except Exception:  # a module or name that does not exist (any more): not ours
        return None
    return cls if isinstance(cls, type) and issubclass(cls, MonaiIqadError) else None


def _from_text(text: str) -> MonaiIqadError | None:
    """The project's error in a traceback that was turned into text (``DataLoader`` worker errors are re-raised in
    the main process as ``<type>(text of the worker's traceback)``). The last one printed is the outermost."""
    found = None
    for line in text.splitlines():
        match = _QUALNAME.match(line.strip())
        if match:
            cls = _class_from_path(match.group(1))
            if cls is not None:
                found = (cls, match.group(2))
    if found is None:
        return None
    cls, message = found
    try:
        return cls(message)
    except Exception:  # a subclass with another signature: keep the message under the base class
        return MonaiIqadError(message)


def find_project_error(exc: BaseException | None) -> MonaiIqadError | None:
    """The outermost :class:`MonaiIqadError` in the chain of ``exc`` (its causes and contexts), or None.

    Wrappers (MONAI's ``Failed to evaluate ConfigExpression``, ``applying transform``, Ignite) are walked through;
    an exception re-raised from a ``DataLoader`` worker is searched in its text.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, MonaiIqadError):
            return exc
        text = str(exc)
        if "Traceback (most recent call last)" in text:
            parsed = _from_text(text)
            if parsed is not None:
                return parsed
        exc = exc.__cause__ if exc.__cause__ is not None else (None if exc.__suppress_context__ else exc.__context__)
    return None


def format_project_error(error: MonaiIqadError) -> str:
    """The message shown to the user: ``monai_iqad error (Class): message``, ``hint: ...`` and how to see more."""
    message = str(error).strip() or "(no message)"
    lines = [f"monai_iqad error ({type(error).__name__}): {message}"]
    if error.hint:
        lines.append(f"hint: {error.hint}")
    lines.append(f"(set {DEBUG_ENV}=1 for the full traceback)")
    return "\n".join(lines)


def _debug() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


# ------------------------------------------------------------------------------------------------ the hook
_previous_hook: Callable[[type[BaseException], BaseException, TracebackType | None], Any] | None = None


def bundle_excepthook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    """``sys.excepthook`` for bundle runs: the project's errors as one message plus a hint; others unchanged."""
    error = None if _debug() else find_project_error(exc)
    if error is None:
        (_previous_hook or sys.__excepthook__)(exc_type, exc, tb)
        return
    sys.stderr.write(format_project_error(error) + "\n")
    sys.stderr.flush()


def _shorten_error_record(record: logging.LogRecord) -> logging.LogRecord:
    """Shorten an error record that Ignite or MONAI logs while one of the project's errors propagates.

    Ignite logs ``... terminating due to exception: <wrapper text>`` inside its ``except`` block, and MONAI's
    ``StatsHandler`` logs ``Exception: ...`` with the full traceback (``logger.exception``, on its own handler). When
    the exception being handled holds one of the project's errors, the record keeps its first words and gets the
    project's message, without the traceback (the excepthook prints the message and its hint once more at exit).
    """
    if record.levelno < logging.ERROR or _debug():
        return record
    exc = record.exc_info[1] if record.exc_info else sys.exc_info()[1]
    error = find_project_error(exc) if exc is not None else None
    if error is not None:
        head = str(record.msg).split(":", 1)[0]
        record.msg = f"{head}: {type(error).__name__}: {error}"
        record.args = ()
        record.exc_info = None
        record.exc_text = None
    return record


_record_factory: Callable[..., logging.LogRecord] | None = None


def _project_record_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    return _shorten_error_record((_record_factory or logging.LogRecord)(*args, **kwargs))


def is_bundle_run() -> bool:
    """True in a ``python -m monai.bundle ...`` process (also each ``torchrun ... -m monai.bundle`` worker)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and getattr(spec, "name", "") in ("monai.bundle.__main__", "monai.bundle"):
        return True
    argv0 = os.path.normpath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return argv0.endswith(os.path.join("monai", "bundle", "__main__.py"))


def install_excepthook() -> None:
    """Install :func:`bundle_excepthook` and the log-record shortening (idempotent), in any process (e.g. a CLI)."""
    global _previous_hook, _record_factory
    if sys.excepthook is not bundle_excepthook:
        _previous_hook = sys.excepthook
        sys.excepthook = bundle_excepthook
    if logging.getLogRecordFactory() is not _project_record_factory:  # every logger, whatever its handlers
        _record_factory = logging.getLogRecordFactory()
        logging.setLogRecordFactory(_project_record_factory)


def install_bundle_excepthook() -> bool:
    """Run :func:`install_excepthook` only in a bundle run; returns whether it did (``import monai_iqad`` calls it)."""
    if is_bundle_run():
        install_excepthook()
        return True
    return False
