"""Shared helpers of the benchmark scripts: machine description, timing, tables and the shared results file.

The scripts in this folder import this module as a sibling (``python benchmarks/<script>.py`` puts the folder on
``sys.path``).
"""

from __future__ import annotations

import datetime
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "DOCS_INTRO",
    "DEFAULT_OUTPUT",
    "command_line",
    "machine_info",
    "machine_lines",
    "load_average",
    "time_call",
    "median",
    "markdown_table",
    "write_section",
    "current_rss_bytes",
    "peak_rss_bytes",
    "reset_peak_rss",
    "fmt",
    "cluster_bootstrap_means",
]

#: The shared results page, relative to the repository root.
DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"

DOCS_INTRO = """# Benchmarks

Measured figures of `monai_iqad` on the machine named in each section. Each section is written by its script between
`<!-- name:start -->` / `<!-- name:end -->` markers; re-running a script replaces only its own section.

| section | script |
|---|---|
| SAQM throughput | `python benchmarks/saqm_throughput.py` |
| MKCNet training cost | `python benchmarks/mkcnet_cost.py` |

Absolute timings on a shared CPU machine fluctuate; compare the **ratios**, which are measured against a reference
run in the same process, interleaved with the workload.
"""


def _cpu_model() -> tuple[str, set[str]]:
    model: str | None = None
    flags: set[str] = set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return model or platform.processor() or "unknown", flags


def machine_info() -> dict[str, Any]:
    """CPU model and features, thread counts, library versions, load average and the date (UTC)."""
    import monai

    model, flags = _cpu_model()
    simd = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return {
        "cpu": model,
        "simd": ", ".join(simd) or "n/a",
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load_avg_1min": load_average(),
    }


def load_average() -> float:
    """1-minute load average of the machine (NaN where unavailable)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def machine_lines(info: dict[str, Any]) -> list[str]:
    """The machine description as markdown bullet lines (with the load average at start and now)."""
    return [
        f"- Machine: {info['cpu']} ({info['simd']}), {info['logical_cpus']} logical CPUs, "
        f"torch threads {info['torch_threads']}; 1-min load average {info['load_avg_1min']:.2f} at start, "
        f"{load_average():.2f} at the end (other users' processes share the machine).",
        f"- Software: torch {info['torch']}, MONAI {info['monai']}, Python {info['python']}; run on {info['date']}.",
    ]


def command_line(script: str, args: Any) -> str:
    """The command that reproduces a run: ``python benchmarks/<script>.py`` plus the non-default options."""
    parts = [f"python benchmarks/{script}.py"]
    if getattr(args, "quick", False):
        parts.append("--quick")
    for option in ("threads", "rounds", "image_size", "part_reps", "configs", "device"):
        value = getattr(args, option, None)
        if value is not None and value is not False:
            value = " ".join(value) if isinstance(value, (list, tuple)) else value
            parts.append(f"--{option.replace('_', '-')} {value}")
    if getattr(args, "no_rss", False):
        parts.append("--no-rss")
    section = getattr(args, "section", None)
    if section and section != script:  # a section of its own (another CPU kind)
        parts.append(f"--section {section}")
    return " ".join(parts)


def time_call(fn: Callable[[], Any]) -> float:
    """Wall time of one call of ``fn`` in seconds (CPU: no device synchronisation needed)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median(values: Sequence[float]) -> float:
    """Median of a non-empty sequence (NaN when empty)."""
    return statistics.median(values) if len(values) else float("nan")


def fmt(value: float, digits: int = 3) -> str:
    """Compact number formatting for tables (``digits`` significant digits, no exponent for usual magnitudes)."""
    if value != value:  # NaN
        return "n/a"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 10 ** (digits - 1):
        return f"{value:,.0f}"
    decimals = max(0, digits - 1 - int(f"{magnitude:e}".split("e")[1]))
    return f"{value:.{decimals}f}"


def cluster_bootstrap_means(
    values: np.ndarray, clusters: Sequence[Any], num_boot: int = 10_000, seed: int = 0
) -> np.ndarray:
    """
    Cluster (block) bootstrap of column means: the items of one cluster (e.g. every ladder cut from one source image)
    are drawn together, so items that share a cluster are not counted as independent evidence.

    Each replicate draws ``C`` clusters with replacement among the ``C`` distinct ones and takes, per column, the
    mean over every item of the drawn clusters (an item counted as often as its cluster is drawn). Percentiles of
    the replicates give an interval (``np.percentile(reps, [2.5, 97.5], axis=0)``); replicates of several columns
    drawn together give paired intervals of their differences.

    Args:
        values: ``(N,)`` or ``(N, M)`` item values (NaN not allowed).
        clusters: ``N`` cluster labels, one per item.
        num_boot: number of replicates.
        seed: seed of the draws.

    Returns:
        ``(num_boot,)`` or ``(num_boot, M)`` replicate means.

    Raises:
        ValueError: When ``values`` and ``clusters`` differ in length, are empty, or ``values`` is not finite.
    """
    values = np.asarray(values, dtype=float)
    if values.shape[0] != len(clusters) or values.shape[0] == 0:
        raise ValueError(f"need one cluster label per item, got {values.shape[0]} values and {len(clusters)} labels.")
    if not np.isfinite(values).all():
        raise ValueError("values must be finite.")
    _, ids = np.unique(np.asarray(clusters, dtype=object).astype(str), return_inverse=True)
    num = int(ids.max()) + 1
    counts = np.random.default_rng(seed).multinomial(num, np.full(num, 1.0 / num), size=int(num_boot))
    weights = counts[:, ids].astype(float)  # (B, N): each item weighted by its cluster's draw count
    flat = values.reshape(values.shape[0], -1)
    means = weights @ flat / weights.sum(axis=1, keepdims=True)
    return means if values.ndim > 1 else means[:, 0]


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table (cells converted with ``str``)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(path: str | Path, name: str, body: str, intro: str = DOCS_INTRO) -> Path:
    """
    Write ``body`` between ``<!-- name:start -->`` and ``<!-- name:end -->`` in ``path``, replacing that section only.

    The file is created with ``intro`` when absent; a missing section is appended at the end.

    Args:
        path: the markdown file (e.g. ``docs/benchmarks.md``).
        name: section name used in the markers.
        body: the section's markdown (without markers).
        intro: text of a new file.

    Returns:
        The path written.

    Raises:
        ValueError: When the file holds a start marker without its end marker (or the reverse).
    """
    path = Path(path)
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}\n"
    text = path.read_text() if path.exists() else intro.rstrip() + "\n"
    has_start, has_end = start in text, end in text
    if has_start != has_end:
        raise ValueError(f"{path} has an unbalanced '{name}' section (one marker only); fix it by hand.")
    if has_start:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail.lstrip("\n")
    else:
        text = text.rstrip() + "\n\n" + block
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def current_rss_bytes() -> int:
    """Current resident set size of this process (from ``/proc/self/statm``; peak RSS where unavailable)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return peak_rss_bytes()


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def peak_rss_bytes() -> int:
    """
    Peak resident set size of this process's address space (``VmHWM`` of ``/proc/self/status``).

    ``getrusage(...).ru_maxrss`` is the fallback only: Linux carries it over ``execve``, so a subprocess started by a
    large parent would report the parent's size.
    """
    kib = _status_kib("VmHWM")
    if kib is None:
        kib = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return kib * 1024


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0: write 5 to ``/proc/self/clear_refs``); True on success."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True
