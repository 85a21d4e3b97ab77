"""
Per-image time of the classic NR-IQA metrics (NIQE, BRISQUE, PIQE, variance of the Laplacian, blur effect) at
512x512, float32 input, one thread, as a ratio to a reference operation timed in the same run: a 512x512 @ 512x512
float32 matmul (0.27 GFLOP). Where the reference implementation is installed (``pypiqe``, ``skimage.measure``, OpenCV)
it is timed on the same image for comparison.

Usage (from the repository root)::

    python benchmarks/nr_iqa_speed.py              # 512x512, 7 rounds, ~1 minute
    python benchmarks/nr_iqa_speed.py --quick      # 128x128, 2 rounds: a smoke test

Every workload runs single-threaded (torch and OpenCV set to one thread) and is timed in CPU time of the calling
thread (``time.thread_time``), which leaves out the time spent waiting for a core on a shared machine. Every round runs
every workload once, interleaved, after one warm-up round; times are medians and the ratio column is the median over
rounds of (metric time) / (matmul time) of the same round.
The result is printed and written to the ``nr_iqa_speed`` section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import bench_utils as bu
import numpy as np
import torch
from skimage import data as skdata
from skimage.transform import resize

from monai_iqad.metrics import NR_IQA_METRICS

SECTION = "nr_iqa_speed"


def _references(gray_u8: np.ndarray) -> dict[str, tuple[str, Callable[[], object]]]:
    """Reference implementations that are installed: ``{metric: (label, call)}``."""
    refs: dict[str, tuple[str, Callable[[], object]]] = {}
    try:
        from pypiqe import piqe as pypiqe

        refs["piqe"] = ("pypiqe 1.2 (numpy/OpenCV, per-block loop)", lambda: pypiqe(gray_u8))
    except ImportError:
        pass
    from skimage.measure import blur_effect as sk_blur

    refs["blur"] = ("skimage.measure.blur_effect", lambda: sk_blur(gray_u8))
    try:
        import cv2

        cv2.setNumThreads(1)
        gray64 = gray_u8.astype(np.float64)
        refs["lapvar"] = ("cv2.Laplacian(..., CV_64F).var()", lambda: cv2.Laplacian(gray64, cv2.CV_64F).var())
    except ImportError:
        pass
    return refs


def _cpu_time(call: Callable[[], object]) -> float:
    """CPU time of ``call`` in this thread (everything runs single-threaded here): unlike wall time it does not count
    the time spent waiting for a core on a shared, overloaded machine."""
    start = time.thread_time()
    call()
    return time.thread_time() - start


def run(size: int, rounds: int) -> tuple[list[list[str]], dict[str, float]]:
    """Time every metric (and reference) ``rounds`` times on a ``size``x``size`` image; returns table rows and
    the per-image seconds of our metrics."""
    gray = skdata.camera()
    if size != gray.shape[0]:
        gray = (resize(gray, (size, size), anti_aliasing=True) * 255).round().astype(np.uint8)
    image = torch.from_numpy(gray.astype(np.float32))[None]  # (1, H, W) float32, 0..255
    a = torch.randn(512, 512)
    b = torch.randn(512, 512)
    workloads: dict[str, Callable[[], object]] = {"matmul": lambda: a @ b}
    for name, metric in NR_IQA_METRICS.items():
        workloads[name] = lambda m=metric: m(image)
    refs = _references(gray)
    for name, (_, call) in refs.items():
        workloads[f"ref:{name}"] = call
    times: dict[str, list[float]] = {k: [] for k in workloads}
    for r in range(rounds + 1):
        for key, call in workloads.items():
            t = _cpu_time(call)
            if r:  # round 0 is the warm-up
                times[key].append(t)
    ratios = {k: bu.median([t / m for t, m in zip(v, times["matmul"], strict=True)]) for k, v in times.items()}
    rows = [["matmul 512x512 @ 512x512 (reference)", "", bu.fmt(bu.median(times["matmul"]) * 1e3), "1", "", ""]]
    ours = {}
    for name, metric in NR_IQA_METRICS.items():
        t = bu.median(times[name])
        ours[name] = t
        ref_label, ref_t = "", ""
        if name in refs:
            ref_label = refs[name][0]
            t_ref = bu.median(times["ref:" + name])
            ref_t = f"{bu.fmt(t_ref * 1e3)} ms ({bu.fmt(t_ref / t)}x ours)"
        rows.append([f"`{name}`", metric.description, bu.fmt(t * 1e3), bu.fmt(ratios[name]), ref_label, ref_t])
    return rows, ours


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="128x128 image, 2 rounds (smoke test)")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 7, quick 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--output", default=str(bu.DEFAULT_OUTPUT), help="markdown file to update")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    info = bu.machine_info()
    size = 128 if args.quick else 512
    rounds = args.rounds or (2 if args.quick else 7)
    rows, ours = run(size, rounds)
    table = bu.markdown_table(
        ["metric", "what", f"ms / image ({size}x{size})", "x matmul", "reference implementation", "reference time"],
        rows,
    )
    body = "\n".join(
        [
            "## Classic NR-IQA metrics: time per image (CPU)",
            "",
            f"`{bu.command_line('nr_iqa_speed', args)}`",
            "",
            *bu.machine_lines(info),
            f"- Input: scikit-image `camera`, {size}x{size} gray, float32 tensor (1, H, W), values 0..255; "
            f"{rounds} timed round(s) after one warm-up, interleaved; medians of the CPU time of the (single) "
            "thread (`time.thread_time`, not wall time: the machine is shared). 'x matmul' is the median over rounds "
            "of (metric time) / (512x512 fp32 matmul time) in the same round.",
            "- Ours compute in float64 internally (to reproduce the reference values); colour input adds one luma "
            "conversion.",
            "",
            table,
        ]
    )
    print(body)
    bu.write_section(Path(args.output), SECTION, body)
    slowest = max(ours, key=ours.get)
    print(f"\nslowest: {slowest} {ours[slowest] * 1e3:.1f} ms per {size}x{size} image")
    return 0


if __name__ == "__main__":
    sys.exit(main())
