"""Helpers for values that reach bundle configs from the command line."""

from __future__ import annotations

from typing import Any

__all__ = ["as_bool"]

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
