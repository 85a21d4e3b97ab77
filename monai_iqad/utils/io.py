"""Crash-safe file writing: a reader never sees a half-written checkpoint, datalist or CSV."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .errors import FileWriteError

__all__ = [
    "atomic_write",
    "atomic_torch_save",
    "atomic_write_text",
    "atomic_write_json",
    "file_sha256",
    "remove_stale_temporaries",
]

logger = logging.getLogger(__name__)


def _temporary_prefix(path: Path) -> str:
    """Temporary files of ``path`` are ``.<name>.<random>.tmp`` in the same folder."""
    return f".{path.name}."


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that an interrupted :func:`atomic_write` of ``path`` left behind.

    A process killed while it writes (``SIGKILL``, power loss) cannot remove its ``.<name>.<random>.tmp`` file; the
    savers call this when a run starts. Only files of that exact pattern beside ``path`` are touched; two runs must
    not share an output folder (they would overwrite each other's checkpoints anyway).

    Returns:
        the files removed (logged at WARNING level, with their size).
    """
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    prefix = _temporary_prefix(path)
    for entry in path.parent.iterdir():
        if entry.name.startswith(prefix) and entry.name.endswith(".tmp") and entry.is_file():
            try:
                size = entry.stat().st_size
                entry.unlink()
            except OSError:
                continue
            removed.append(entry)
            logger.warning(f"Removed {entry} ({size / 1e6:.1f} MB), left by an interrupted save of {path.name}")
    return removed


def atomic_write(path: str | os.PathLike, write_fn: Callable[[Any], None], mode: str = "wb") -> Path:
    """Write ``path`` through ``write_fn(file_object)`` into a temporary file of the same folder, then rename.

    ``os.replace`` is atomic on POSIX and Windows when source and destination share a file system, so ``path`` holds
    either the old or the new content, never a partial one. The temporary file is removed if ``write_fn`` fails.

    Args:
        path: destination file; its parent folder is created when missing.
        write_fn: callable receiving the open temporary file object.
        mode: ``"wb"`` or ``"w"``.

    Returns:
        the destination path.

    Raises:
        FileWriteError: (an ``OSError`` with the original ``errno``) naming ``path`` when the folder cannot be
            created or the file cannot be written (disk full, read-only folder...); ``path`` keeps its old content and
            no temporary file is left behind.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_temporary_prefix(path), suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600 files; checkpoints are meant to be shared like any output
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
        os_error = _os_error(e)
        if os_error is not None:
            reason = os_error.strerror or str(os_error) or type(os_error).__name__
            error = FileWriteError(f"{path}: cannot write the file ({reason}, errno {os_error.errno})", file=path)
            error.errno = os_error.errno
            raise error from e
        raise
    return path


def _os_error(exc: BaseException | None) -> OSError | None:
    """The ``OSError`` behind a write failure: ``exc`` itself, or its context (``torch.save`` turns a failed
    ``write`` of the file object into ``RuntimeError: ... unexpected pos``). None for other errors and for an
    already formatted :class:`FileWriteError`."""
    for _ in range(4):
        if exc is None or isinstance(exc, FileWriteError):
            return None
        if isinstance(exc, OSError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` ``obj`` to ``path`` atomically (temporary file + rename)."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda f: f.write(text), mode="w")


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of the file ``path`` (read at once: corpus images, model files of a few MB)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
