"""Crash-safe file writing: a reader never sees a half-written checkpoint, datalist or CSV."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["atomic_write", "atomic_torch_save", "atomic_write_text", "atomic_write_json"]


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
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600 files; checkpoints are meant to be shared like any output
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` ``obj`` to ``path`` atomically (temporary file + rename)."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda f: f.write(text), mode="w")


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")
