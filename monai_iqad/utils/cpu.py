"""What this CPU can do for bfloat16 autocast, and a warning where bf16 is emulated (slower than float32)."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Set as AbstractSet
from pathlib import Path

import torch

from .config import as_bool

__all__ = [
    "EmulatedBF16Warning",
    "cpu_bf16",
    "cpu_bf16_kind",
    "cpu_flags",
    "native_cpu_bf16",
    "warn_if_emulated_cpu_bf16",
]


class EmulatedBF16Warning(UserWarning):
    """bfloat16 autocast asked for on a CPU that emulates it (no AVX512-BF16 or AMX-BF16)."""


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo``, read once per process (empty where there is none, e.g. macOS
    or Windows)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return frozenset()
    return frozenset(f for line in text.splitlines() if line.startswith("flags") for f in line.split(":", 1)[1].split())


def cpu_bf16_kind(flags: AbstractSet[str]) -> str | None:
    """How the CPU of ``flags`` computes bfloat16, which decides oneDNN's bf16 kernels (and so the bits of a bf16
    training): ``"amx"`` (AMX-BF16), ``"avx512_bf16"`` (AVX512-BF16 without AMX), ``"emulated"`` (neither), or None
    when ``flags`` is empty (unknown)."""
    if not flags:
        return None
    if "amx_bf16" in flags:
        return "amx"
    return "avx512_bf16" if "avx512_bf16" in flags else "emulated"


def native_cpu_bf16(flags: AbstractSet[str] | None = None) -> bool | None:
    """Whether the CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16).

    Args:
        flags: the CPU's flags (:func:`cpu_flags` by default).

    Returns:
        True or False from the flags; where they are unknown, what torch reports (its private
        ``torch.cpu._is_avx512_bf16_supported`` / ``_is_amx_tile_supported``), or None when that is unavailable too.
    """
    kind = cpu_bf16_kind(cpu_flags() if flags is None else flags)
    if kind is not None:
        return kind != "emulated"
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if not any(callable(p) for p in probes):
        return None
    return any(bool(p()) for p in probes if callable(p))


@functools.cache
def _warn_once(where: str) -> None:
    warnings.warn(
        f"{where}: bfloat16 autocast on a CPU without AVX512-BF16 or AMX-BF16 is emulated and runs slower than "
        "float32 (0.25-0.5x of the fp32 speed in the SAQM benchmarks, docs/benchmarks.md). Turn it off (bf16 false, "
        "amp_dtype null) unless you need bf16's numerics.",
        EmulatedBF16Warning,
        stacklevel=3,
    )


def warn_if_emulated_cpu_bf16(where: str, flags: AbstractSet[str] | None = None) -> bool:
    """Warn (once per ``where`` and process) when this CPU emulates bfloat16; return whether it does.

    Args:
        where: what asked for bf16 autocast, named in the warning (e.g. ``"DomainAdaptationTrainer"``).
        flags: the CPU's flags (:func:`cpu_flags` by default).
    """
    emulated = native_cpu_bf16(flags) is False
    if emulated:
        _warn_once(where)
    return emulated


def cpu_bf16(setting: bool | str | None, where: str = "bf16") -> bool:
    """A config's ``bf16`` switch for CPU autocast (:func:`~monai_iqad.utils.as_bool` of ``setting``), with
    :func:`warn_if_emulated_cpu_bf16` when it is on: the setting is kept (a recipe may need bf16's numerics to
    reproduce its weights), the user learns it is slow here."""
    on = as_bool(setting)
    if on:
        warn_if_emulated_cpu_bf16(where)
    return on
