"""Helpers for values that reach bundle configs from the command line."""

from __future__ import annotations

import sys
from typing import Any

from .dist import is_rank0

__all__ = ["as_bool", "console_is_interactive"]

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0", "none", ""}


def as_bool(value: Any) -> bool:
    """Interpret a config flag given as a bool, a number or a string.

    ``python -m monai.bundle run ... --resume false`` passes the *string* ``"false"`` (Python Fire only turns
    ``True``/``False`` into booleans), and ``not "false"`` is ``False`` in a config expression, which would silently
    enable the flag. Bundles therefore write ``"_disabled_": "$not monai_iqad.utils.as_bool(@resume)"``.

    Args:
        value: ``True``/``False``, ``None``, an integer, or one of ``true/false``, ``yes/no``, ``on/off``, ``1/0``
            (any case, surrounding spaces ignored).

    Raises:
        ValueError: for any other value (e.g. ``"treu"``), naming it.
    """
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    if isinstance(value, int):
        return value != 0
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise ValueError(f"expected a boolean flag (true/false, yes/no, on/off, 1/0), got {value!r}.")


def console_is_interactive() -> bool:
    """Whether progress bars belong on this process's console: stderr is a terminal and this is rank 0.

    Bundles write ``"cache_progress": "$monai_iqad.utils.console_is_interactive()"`` so caching progress bars show
    in a terminal but never fill log files, CI output or the other ranks of a ``torchrun`` job.
    """
    return sys.stderr.isatty() and is_rank0()
