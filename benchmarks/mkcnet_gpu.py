"""
MKCNet training cost on a CUDA GPU at the paper configuration (width 1, 256x256, batch 4, DeepDR heads): epoch time
and peak GPU memory of the meta-gradients in float32 and under bf16 autocast (``amp_dtype="bfloat16"``), relative to a
vanilla epoch, plus the agreement of the forward-mode and second-order meta-gradients on the GPU.

Usage (from the repository root, on a machine with a CUDA GPU)::

    python benchmarks/mkcnet_gpu.py              # 32 images, 3 rounds: about a minute on one H200
    python benchmarks/mkcnet_gpu.py --quick      # tiny sizes (also runs on the CPU: a smoke test)

Method: the trainers of ``benchmarks/mkcnet_cost.py`` (same configurations, same seed) on the GPU; every round runs one
epoch of every configuration, interleaved, after a warm-up epoch on one batch; times are wall times with
``torch.cuda.synchronize()``; peak memory is ``torch.cuda.max_memory_allocated`` over the epoch minus the allocation
at its start (weights and optimizer state excluded). TF32 is off, so float32 is float32. Gradient agreement: one
stage II from the same state (after one stage-I step) with each meta-gradient, float32 and float64,
``‖g_forward - g_second‖ / ‖g_second‖`` over all φ.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from bench_utils import (
    DEFAULT_OUTPUT,
    command_line,
    fmt,
    machine_info,
    machine_lines,
    markdown_table,
    median,
    write_section,
)
from ignite.engine import Events
from mkcnet_cost import BF16, Config, build_trainer, make_data
from torch.utils.data import DataLoader

SECTION = "mkcnet_gpu"
CONFIGS = (
    "vanilla",
    "vanilla+bf16",
    "epoch/second_order",
    "epoch/second_order+bf16",
    "epoch/forward_mode",
    "epoch/forward_mode+bf16",
    "epoch/first_order",
    "iteration/second_order",
    "iteration/forward_mode",
    "iteration/forward_mode+bf16",
)
FULL = Config(width=1.0, image_size=256, n_images=32, batch=4, rounds=3, part_reps=0, rss=False)
QUICK = Config(width=1 / 16, image_size=32, n_images=8, batch=4, rounds=1, part_reps=0, rss=False)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def epoch(name: str, cfg: Config, data: list[dict], device: str) -> tuple[float, int]:
    """One epoch of a fresh trainer: ``(seconds, peak bytes above the start)``."""
    trainer = build_trainer(name, cfg, DataLoader(data, batch_size=cfg.batch), device)
    cuda = device.startswith("cuda")
    _sync(device)
    start_bytes = torch.cuda.memory_allocated() if cuda else 0
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    trainer.run()
    _sync(device)
    elapsed = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() - start_bytes if cuda else 0
    return elapsed, peak


def meta_gradient_agreement(cfg: Config, device: str, dtype: torch.dtype) -> float:
    """Relative difference of φ's gradient (λ_R = 0), forward mode vs second order, one stage II from the same state."""
    grads = {}
    data = make_data(Config(**{**cfg.__dict__, "n_images": cfg.batch}))
    for batch in data:
        batch["image"] = batch["image"].to(dtype)
    for gradient in ("second_order", "forward_mode"):
        trainer = build_trainer(f"epoch/{gradient}", cfg, DataLoader(data, batch_size=cfg.batch), device)
        trainer.network.to(dtype)
        trainer.meta_learner.to(dtype)
        trainer.entropy_weight = 0.0  # only the part through θ̃ (the entropy term is the same in both)
        for group in trainer.meta_optimizer.param_groups:
            group["lr"] = 0.0
        state: dict = {}

        def _keep(engine: object, state: dict = state, trainer: object = trainer) -> None:
            state["grads"] = [copy.deepcopy(p.grad) for p in trainer.meta_learner.parameters()]

        trainer.add_event_handler(Events.ITERATION_COMPLETED(once=2), _keep)
        trainer.run()
        grads[gradient] = torch.cat([g.flatten().double() for g in state["grads"]])
    exact = grads["second_order"]
    return float((grads["forward_mode"] - exact).norm() / exact.norm())


def main(argv: Sequence[str] | None = None) -> int:
    """Run, print and write the section."""
    parser = argparse.ArgumentParser(description="MKCNet training cost on a CUDA GPU (paper configuration).")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round (smoke test)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"results file (default {DEFAULT_OUTPUT})")
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    start_all = time.perf_counter()
    info = machine_info()
    data = make_data(cfg)
    for name in CONFIGS:
        epoch(name, cfg, data[: cfg.batch], args.device)
    times: dict[str, list[float]] = {n: [] for n in CONFIGS}
    peaks: dict[str, int] = {}
    for _ in range(cfg.rounds):
        for name in CONFIGS:
            seconds, peak = epoch(name, cfg, data, args.device)
            times[name].append(seconds)
            peaks[name] = max(peaks.get(name, 0), peak)
        print(f"[mkcnet_gpu] round done {time.perf_counter() - start_all:.0f} s", file=sys.stderr, flush=True)
    agreement = {
        str(dt).removeprefix("torch."): meta_gradient_agreement(cfg, args.device, dt)
        for dt in (torch.float32, torch.float64)
    }
    van_p = max(peaks["vanilla"], 1)
    rows = []
    for name in CONFIGS:
        ratios = [t / v for t, v in zip(times[name], times["vanilla"])]
        rows.append(
            [
                f"`{name}`",
                fmt(1e3 * median(times[name])),
                f"{median(ratios):.2f}",
                f"{median(times[name]) / median(times[name.removesuffix(BF16)]):.2f}" if name.endswith(BF16) else "",
                fmt(peaks[name] / 2**20),
                f"{peaks[name] / van_p:.2f}" if args.device.startswith("cuda") else "",
            ]
        )
    gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU (smoke test)"
    lines = [
        "## MKCNet training cost (GPU)",
        "",
        f"`{command_line('mkcnet_gpu', args)}`"
        + (" (**quick smoke-test sizes**)" if args.quick else "")
        + f"; the whole script took {time.perf_counter() - start_all:.0f} s.",
        "",
        *machine_lines(info),
        f"- Device: {gpu}; torch {torch.__version__}; TF32 off. Configuration: DeepDR heads, width {cfg.width:g}, "
        f"{cfg.image_size}x{cfg.image_size}, batch {cfg.batch}, {cfg.n_images} images ({cfg.n_images // cfg.batch} "
        f"batches); {cfg.rounds} interleaved round(s) after a warm-up; trainers of `benchmarks/mkcnet_cost.py`.",
        "",
        markdown_table(
            ["configuration", "epoch ms (median)", "x vanilla", "x its fp32", "peak MiB above start", "x vanilla"], rows
        ),
        "",
        "Meta-gradient agreement on the device (one stage II from the same state, λ_R = 0 so that only the part "
        "through θ̃ is compared; relative L2 difference of φ's gradient, forward mode vs second order): "
        + ", ".join(f"{k} {v:.1e}" for k, v in agreement.items())
        + ".",
    ]
    body = "\n".join(lines) + "\n"
    print(body)
    write_section(args.output, SECTION, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
