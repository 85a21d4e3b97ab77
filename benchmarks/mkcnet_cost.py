"""
MKCNet training cost: time, peak memory and FLOPs of one training epoch of every MKCNet schedule (``schedule`` in
{epoch, iteration} x ``meta_gradient`` in {second_order, forward_mode, first_order}; some also with
``amp_dtype="bfloat16"``, suffix ``+bf16``) relative to a vanilla epoch
(``VanillaTrainer`` + ``VanillaNet``) and the multi-task baseline, on the same in-memory data, with the real engines.

Usage (from the repository root)::

    python benchmarks/mkcnet_cost.py            # width 1/4, 128x128, batch 4, 16 images: a few minutes on 2 cores
    python benchmarks/mkcnet_cost.py --quick    # width 1/16, 32x32: a smoke test of a few seconds

Method:

- **Time.** Every round builds each configuration afresh (same seed) and runs one epoch of its trainer
  (``trainer.run()``, ``max_epochs=1``), after a warm-up round on one batch. Within a round every configuration
  runs between two vanilla epochs (vanilla, c1, vanilla, c2, ..., vanilla), so that load changes on a shared machine
  hit a configuration and its reference alike. The table gives the median epoch time, the median over rounds of the
  ratio to the mean of the two vanilla epochs around it (wall time, and CPU time of the single thread, which does
  not count time spent waiting for a core), and a load-robust ratio built from the median time of each kind of
  iteration (stage I, stage II, or both) times its count.
- **Peak memory, two ways.** (a) *Tensor peak*: ``torch.profiler`` with ``profile_memory=True`` records every CPU
  allocation and free; the peak of their running sum over one epoch (two batches, fresh trainer) is the peak of live
  tensor bytes above the level at its start (weights and data excluded; gradients, activations, autograd graphs and
  optimizer state included). Deterministic, independent of the allocator and of the machine load. (b) *RSS*: each
  configuration runs one full epoch in a fresh subprocess (1 thread); reported is the peak resident set size
  (``VmHWM``, reset after setup; not ``ru_maxrss``, which Linux carries over from the parent across ``execve``)
  minus the resident set size after setup (imports, data, models, optimizers) and a small warm-up run (which maps
  in the library code and one-time buffers, ~25 MiB whatever the configuration), so it includes the allocator's
  caching and fragmentation (skipped with ``--quick``).
- **Where the time goes.** The stages are split into the parts of the engine code (same calls, in the same order, as
  ``MetaAuxiliaryTrainer._task_step`` / ``_meta_step`` / ``_first_order_gradients``), timed with manual timers (median
  of repeated runs on one batch) and counted with ``torch.utils.flop_counter.FlopCounterMode``. FLOPs = 2 x MACs of
  convolutions and matrix products (BN, activations, losses and SGD updates not counted). The parts' totals are
  checked against ``FlopCounterMode`` wrapped around a real engine run. The paper configuration (width 1, 256x256,
  batch 4) is counted on the ``meta`` device (no compute); its forward FLOPs are also derived analytically per layer
  (``2 * C_in * C_out * 9 * H * W`` per 3x3 convolution, ``2 * in * out`` per linear layer).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn as nn
import torch.nn.functional as F
from bench_utils import (
    DEFAULT_OUTPUT,
    command_line,
    current_rss_bytes,
    fmt,
    machine_info,
    machine_lines,
    markdown_table,
    median,
    peak_rss_bytes,
    reset_peak_rss,
    write_section,
)
from ignite.engine import Events
from torch.func import functional_call
from torch.profiler import ProfilerActivity, profile
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from monai_iqad.engines import MetaAuxiliaryTrainer, MultiTaskTrainer, VanillaTrainer
from monai_iqad.networks import MetaLearner, MKCNet, VanillaNet

SECTION = "mkcnet_cost"
#: DeepDR (official configs/datasets): NUM_T, NUM_IQ, k, λ_R, META_LR.
NUM_T, NUM_IQ, K, ENTROPY_WEIGHT, META_LR = 3, 2, 7, 0.3, 0.001
LR, WEIGHT_DECAY = 0.01, 5e-4
CONFIGS: tuple[str, ...] = (
    "vanilla",
    "multitask",
    "epoch/second_order",
    "epoch/forward_mode",
    "epoch/forward_mode-recompute",
    "epoch/first_order",
    "iteration/second_order",
    "iteration/forward_mode",
    "iteration/first_order",
    "vanilla+bf16",
    "epoch/second_order+bf16",
    "epoch/forward_mode+bf16",
    "iteration/forward_mode+bf16",
)
#: suffix of the configurations run under ``amp_dtype="bfloat16"`` (CPU autocast)
BF16 = "+bf16"
#: suffix of the forward-mode configuration whose forward-mode pass recomputes its primal forward
#: (``reuse_activations=False``, the state before ``TangentReplay``)
RECOMPUTE = "-recompute"


FP32_CONFIGS = tuple(name for name in CONFIGS if not name.endswith(BF16))


def base_name(name: str) -> str:
    """The configuration without its precision and recompute suffixes."""
    return name.removesuffix(BF16).removesuffix(RECOMPUTE)


@dataclass(frozen=True)
class Config:
    """Sizes of one benchmark run."""

    width: float
    image_size: int
    n_images: int
    batch: int
    rounds: int  #: timed epoch rounds
    part_reps: int  #: timed repetitions of the per-part decomposition
    rss: bool  #: measure peak RSS in fresh subprocesses


FULL = Config(width=0.25, image_size=128, n_images=16, batch=4, rounds=3, part_reps=5, rss=True)
QUICK = Config(width=1 / 16, image_size=32, n_images=8, batch=4, rounds=1, part_reps=1, rss=False)
PAPER = Config(width=1.0, image_size=256, n_images=4, batch=4, rounds=0, part_reps=0, rss=False)


# ----------------------------------------------------------------------------------------------------------------
# data and trainers
def make_data(cfg: Config) -> list[dict[str, Any]]:
    """``n_images`` synthetic samples ``{"image": (3, S, S), "diagnosis": int, "quality": int}`` (fixed seed)."""
    g = torch.Generator().manual_seed(0)
    return [
        {
            "image": torch.randn(3, cfg.image_size, cfg.image_size, generator=g),
            "diagnosis": i % NUM_T,
            "quality": (i // NUM_T) % NUM_IQ,
        }
        for i in range(cfg.n_images)
    ]


def _sgd(module: nn.Module, lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(module.parameters(), lr=lr, weight_decay=WEIGHT_DECAY)


def build_trainer(name: str, cfg: Config, loader: Any, device: str = "cpu") -> Any:
    """
    A fresh trainer of configuration ``name`` (official DeepDR optimizers: SGD 0.01 / META_LR, wd 5e-4).

    The networks are created on the default device (under ``with torch.device("meta")`` they hold no data) and moved
    to ``device`` when it is not the CPU.
    """
    torch.manual_seed(0)
    common = {"decollate": False, "amp_dtype": "bfloat16" if name.endswith(BF16) else None}
    extra = {"reuse_activations": False} if name.removesuffix(BF16).endswith(RECOMPUTE) else {}
    name = base_name(name)
    move = (lambda m: m) if device == "cpu" else (lambda m: m.to(device))
    if name == "vanilla":
        net = move(VanillaNet(NUM_T, width=cfg.width))
        return VanillaTrainer(device, 1, loader, net, _sgd(net, LR), **common)
    net = move(MKCNet(NUM_T, NUM_IQ, K, width=cfg.width))
    if name == "multitask":
        return MultiTaskTrainer(device, 1, loader, net, _sgd(net, LR), **common)
    schedule, meta_gradient = name.split("/")
    meta = move(MetaLearner(NUM_T, NUM_IQ, K, width=cfg.width))
    return MetaAuxiliaryTrainer(
        device,
        1,
        loader,
        net,
        _sgd(net, LR),
        meta,
        _sgd(meta, META_LR),
        entropy_weight=ENTROPY_WEIGHT,
        schedule=schedule,
        meta_gradient=meta_gradient,
        **extra,
        **common,
    )


def iteration_kind(name: str, stage: int) -> str:
    """ "I", "II", "I+II" (iteration schedule) or "step" (baselines)."""
    if name.startswith("iteration/"):
        return "I+II"
    if name.startswith("epoch/"):
        return "I" if stage == 1 else "II"
    return "step"


@dataclass
class EpochRecord:
    """Timings of one configuration over the rounds."""

    epochs: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  #: CPU time of the (single) thread per epoch
    iterations: dict[str, list[float]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    #: per round, (wall, CPU) epoch time over the mean of the vanilla epochs run just before and just after it
    ratios: list[float] = field(default_factory=list)
    cpu_ratios: list[float] = field(default_factory=list)


def time_epoch(name: str, cfg: Config, data: list[dict], record: EpochRecord | None) -> tuple[float, float]:
    """Run one epoch of a fresh trainer; record and return its wall and thread CPU times (and per-iteration wall
    times by kind)."""
    loader = DataLoader(data, batch_size=cfg.batch, shuffle=False)
    trainer = build_trainer(name, cfg, loader)
    starts: list[float] = []
    per_kind: dict[str, list[float]] = {}

    def _start(engine: Any) -> None:
        starts.append(time.perf_counter())

    def _end(engine: Any) -> None:
        kind = iteration_kind(name, int(getattr(engine.state, "stage", 1)))
        per_kind.setdefault(kind, []).append(time.perf_counter() - starts.pop())

    trainer.add_event_handler(Events.ITERATION_STARTED, _start)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, _end)
    start, cpu_start = time.perf_counter(), time.thread_time()
    trainer.run()
    elapsed, cpu = time.perf_counter() - start, time.thread_time() - cpu_start
    if record is not None:
        record.epochs.append(elapsed)
        record.cpu.append(cpu)
        for kind, values in per_kind.items():
            record.iterations.setdefault(kind, []).extend(values)
            record.counts[kind] = len(values)
    return elapsed, cpu


def time_rounds(cfg: Config, data: list[dict], log: Callable[[str], None]) -> dict[str, EpochRecord]:
    """
    ``cfg.rounds`` rounds; in each, every configuration's epoch runs between two vanilla epochs (vanilla, c1,
    vanilla, c2, ..., vanilla), so that load changes on the shared machine hit a configuration and its reference
    alike; its ratio is taken to the mean of those two vanilla epochs.
    """
    records = {name: EpochRecord() for name in CONFIGS}
    for r in range(cfg.rounds):
        before = time_epoch("vanilla", cfg, data, records["vanilla"])
        for name in CONFIGS:
            if name == "vanilla":
                continue
            rec = records[name]
            wall, cpu = time_epoch(name, cfg, data, rec)
            after = time_epoch("vanilla", cfg, data, records["vanilla"])
            rec.ratios.append(2 * wall / (before[0] + after[0]))
            rec.cpu_ratios.append(2 * cpu / (before[1] + after[1]))
            before = after
        log(f"epoch round {r + 1}/{cfg.rounds} done")
    records["vanilla"].ratios = records["vanilla"].cpu_ratios = [1.0]
    return records


# ----------------------------------------------------------------------------------------------------------------
# memory
@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null (the profiler prints start/stop lines from C++)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def tensor_peak_bytes(name: str, cfg: Config, data: list[dict]) -> int:
    """Peak of live CPU tensor bytes above the start level during one epoch on two batches (``torch.profiler``)."""
    loader = DataLoader(data[: 2 * cfg.batch], batch_size=cfg.batch, shuffle=False)
    trainer = build_trainer(name, cfg, loader)
    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        trainer.run()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def _malloc_trim() -> None:
    """Return the C allocator's free memory to the system (glibc ``malloc_trim(0)``; no-op elsewhere)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def child_rss(name: str, quick: bool) -> dict[str, int]:
    """
    Subprocess body: set up, warm up, measure the RSS, run one epoch, report the peak RSS (bytes).

    The warm-up (a trainer of the same configuration on one batch of 1/4-side images) maps in the library code and
    one-time buffers the epoch uses (~25 MiB, the same for every configuration); ``malloc_trim`` then releases its
    freed heap, and the peak (``VmHWM``) is reset to the current RSS where the kernel allows it
    (``/proc/self/clear_refs``); otherwise the warm-up's own peak (1/16 of the activations) stays below the epoch's.
    """
    torch.set_num_threads(1)
    cfg = QUICK if quick else FULL
    data = make_data(cfg)
    small = Config(**{**cfg.__dict__, "image_size": max(32, cfg.image_size // 4), "n_images": cfg.batch})
    build_trainer(name, small, DataLoader(make_data(small), batch_size=cfg.batch)).run()
    trainer = build_trainer(name, cfg, DataLoader(data, batch_size=cfg.batch, shuffle=False))
    _malloc_trim()
    reset = reset_peak_rss()
    baseline, peak_before = current_rss_bytes(), peak_rss_bytes()
    trainer.run()
    return {"baseline": baseline, "peak_before": peak_before, "peak": peak_rss_bytes(), "reset": int(reset)}


def rss_deltas(quick: bool, log: Callable[[str], None]) -> dict[str, dict[str, int]]:
    """Peak RSS minus post-setup RSS of one epoch of each configuration, each in a fresh subprocess (2 at a time)."""

    def _run(name: str) -> tuple[str, dict[str, int]]:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name] + (["--quick"] if quick else [])
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        return name, json.loads(out.stdout.strip().splitlines()[-1])

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(pool.map(_run, CONFIGS))
    log("RSS subprocesses done")
    return results


# ----------------------------------------------------------------------------------------------------------------
# per-part decomposition (mirrors MetaAuxiliaryTrainer._task_step / _meta_step / _first_order_gradients)
Part = Callable[[str], contextlib.AbstractContextManager]


def _losses(trainer: MetaAuxiliaryTrainer, out: dict, d: torch.Tensor, q: torch.Tensor, y_w: torch.Tensor) -> Any:
    return trainer._task_losses(out, d, q, y_w)["loss"]


def parts_stage_one(
    trainer: MetaAuxiliaryTrainer, x: torch.Tensor, d: torch.Tensor, q: torch.Tensor, part: Part, step: bool = True
) -> None:
    """Stage I: meta-learner forward (no graph), task forward + losses, backward, SGD step on θ."""
    net, meta = trainer.network, trainer.meta_learner
    net.train()
    meta.train()
    with part("meta-learner forward (no_grad) -> y_w"), torch.no_grad():
        y_w = meta(x, d, q)
    with part("task forward at θ + losses"):
        trainer.optimizer.zero_grad()
        loss = _losses(trainer, net(x), d, q, y_w)
    with part("task backward"):
        loss.backward()
    if step:
        with part("SGD step θ"):
            trainer.optimizer.step()


def _meta_prologue(
    trainer: MetaAuxiliaryTrainer,
    x: torch.Tensor,
    d: torch.Tensor,
    q: torch.Tensor,
    part: Part,
    record: contextlib.AbstractContextManager | None = None,
) -> tuple[Any, ...]:
    net, meta = trainer.network, trainer.meta_learner
    net.train()
    meta.train()
    with part("meta-learner forward -> y_w (graph)"):
        trainer.meta_optimizer.zero_grad()
        y_w = meta(x, d, q)
        entropy = trainer.entropy_regularizer(y_w)
    with part("task forward at θ + losses"), record or contextlib.nullcontext():
        logits = net(x)
        ell = _losses(trainer, logits, d, q, y_w)
    names, thetas = zip(*[(n, p) for n, p in net.named_parameters() if p.requires_grad])
    phis = [p for p in meta.parameters() if p.requires_grad]
    return net, meta, y_w, entropy, logits, ell, names, thetas, phis, trainer._hyper_params()


def _meta_epilogue(
    trainer: MetaAuxiliaryTrainer, phis: Sequence[torch.Tensor], grads: Sequence[Any], part: Part, step: bool
) -> None:
    if step:
        with part("SGD step φ"):
            for p, g in zip(phis, grads):
                if g is not None:
                    p.grad = g.detach()
            trainer.meta_optimizer.step()


def parts_second_order(
    trainer: MetaAuxiliaryTrainer, x: torch.Tensor, d: torch.Tensor, q: torch.Tensor, part: Part, step: bool = True
) -> None:
    """Stage II, second order: the five passes of the hyper-gradient."""
    net, meta, y_w, entropy, logits, ell, names, thetas, phis, hyper = _meta_prologue(trainer, x, d, q, part)
    with part("create_graph backward -> g, θ̃"):
        grads = torch.autograd.grad(ell, thetas, create_graph=True, allow_unused=True)
        fast = {}
        for name, p, g in zip(names, thetas, grads):
            lr, wd = hyper.get(id(p), (0.0, 0.0))
            fast[name] = p - lr * (wd * p if g is None else g + wd * p)
    with part("functional forward at θ̃ + L_φ"):
        out = trainer._functional_forward(net, fast, x)
        loss_meta = (
            trainer.loss_function(out["diagnosis"], d)
            + trainer.loss_function(out["quality"], q)
            + trainer.entropy_weight * entropy
        )
    with part("second-order backward -> ∇φ"):
        phi_grads = torch.autograd.grad(loss_meta, phis, allow_unused=True)
    _meta_epilogue(trainer, phis, phi_grads, part, step)


def parts_first_order(
    trainer: MetaAuxiliaryTrainer, x: torch.Tensor, d: torch.Tensor, q: torch.Tensor, part: Part, step: bool = True
) -> None:
    """Stage II, first order (DARTS finite differences): the four first-order passes."""
    net, meta, y_w, entropy, logits, ell, names, thetas, phis, hyper = _meta_prologue(trainer, x, d, q, part)
    lrs = [hyper.get(id(p), (0.0, 0.0))[0] for p in thetas]
    with part("backward at θ (g, no graph) -> θ'"):
        grads = torch.autograd.grad(_losses(trainer, logits, d, q, y_w.detach()), thetas, allow_unused=True)
        virtual = {}
        with torch.no_grad():
            for name, p, g, lr in zip(names, thetas, grads, lrs):
                wd = hyper.get(id(p), (0.0, 0.0))[1]
                virtual[name] = (p - lr * (wd * p if g is None else g + wd * p)).detach().requires_grad_(True)
    with part("forward at θ' + L_D + L_Q"):
        out_v = trainer._functional_forward(net, virtual, x)
        primary = trainer.loss_function(out_v["diagnosis"], d) + trainer.loss_function(out_v["quality"], q)
    with part("backward at θ' -> d"):
        d_theta = torch.autograd.grad(primary, [virtual[n] for n in names], allow_unused=True)
    with part("forwards at θ+ and θ- (no_grad)"):
        with torch.no_grad():
            v = [torch.zeros_like(p) if g is None else lr * g for p, g, lr in zip(thetas, d_theta, lrs)]
            norm = torch.sqrt(sum((t.float() ** 2).sum() for t in v))
            eps = trainer.fd_epsilon / (1.0 if norm.device.type == "meta" else float(norm))
            plus = {n: p + eps * t for n, p, t in zip(names, thetas, v)}
            minus = {n: p - eps * t for n, p, t in zip(names, thetas, v)}
            aux_plus = trainer._functional_forward(net, plus, x)["auxiliary"]
            aux_minus = trainer._functional_forward(net, minus, x)["auxiliary"]
    with part("backward through the meta learner -> ∇φ"):
        k = trainer.aux_per_class
        l_plus = trainer.loss_function(aux_plus, y_w) / k
        l_minus = trainer.loss_function(aux_minus, y_w) / k
        surrogate = trainer.entropy_weight * entropy - (l_plus - l_minus) / (2.0 * eps)
        phi_grads = torch.autograd.grad(surrogate, phis, allow_unused=True)
    _meta_epilogue(trainer, phis, phi_grads, part, step)


def parts_forward_mode(
    trainer: MetaAuxiliaryTrainer, x: torch.Tensor, d: torch.Tensor, q: torch.Tensor, part: Part, step: bool = True
) -> None:
    """
    Stage II, forward mode (exact): g without a graph, θ̃ forward/backward, one forward-mode pass at θ (which reads
    the encoder activations of the forward at θ when the trainer has a ``tangent_replay``).
    """
    replay = trainer.tangent_replay
    record = replay.record() if replay is not None else None
    net, meta, y_w, entropy, logits, ell, names, thetas, phis, hyper = _meta_prologue(trainer, x, d, q, part, record)
    lrs = [hyper.get(id(p), (0.0, 0.0))[0] for p in thetas]
    with part("backward at θ (g, no graph) -> θ̃"):
        grads = torch.autograd.grad(_losses(trainer, logits, d, q, y_w.detach()), thetas, allow_unused=True)
        fast = {}
        with torch.no_grad():
            for name, p, g, lr in zip(names, thetas, grads, lrs):
                wd = hyper.get(id(p), (0.0, 0.0))[1]
                fast[name] = (p - lr * (wd * p if g is None else g + wd * p)).detach().requires_grad_(True)
    with part("forward at θ̃ + L_φ"):
        out = trainer._functional_forward(net, fast, x)
        primary = trainer._primary_loss(out, d, q)
    with part("backward at θ̃ -> v"):
        v = torch.autograd.grad(primary, [fast[n] for n in names], allow_unused=True)
    with part("forward-mode pass at θ -> J_z(α v)"):
        point = {n: p.detach() for n, p in zip(names, thetas)}
        buffers = {n: b.clone() for n, b in net.named_buffers()}
        with torch.no_grad(), fwAD.dual_level(), replay.replay() if replay else contextlib.nullcontext():
            duals = {n: fwAD.make_dual(point[n], lr * g) for n, g, lr in zip(names, v, lrs) if g is not None}
            z, z_dot = fwAD.unpack_dual(functional_call(net, {**point, **duals, **buffers}, (x,))["auxiliary"])
        if replay is not None:
            replay.clear()
    with part("backward through the meta learner -> ∇φ"):
        z = z.detach().requires_grad_(True).clone()
        (grad_z,) = torch.autograd.grad(trainer._aux_loss(z, y_w), z, create_graph=True)
        surrogate = trainer.entropy_weight * entropy - (grad_z * z_dot).sum()
        phi_grads = torch.autograd.grad(surrogate, phis, allow_unused=True)
    _meta_epilogue(trainer, phis, phi_grads, part, step)


def parts_baseline(
    trainer: Any, x: torch.Tensor, d: torch.Tensor, q: torch.Tensor, part: Part, step: bool = True
) -> None:
    """Vanilla / multi-task step: forward + losses, backward, SGD step."""
    net = trainer.network
    net.train()
    with part("forward + losses"):
        trainer.optimizer.zero_grad()
        out = net(x)
        loss = trainer._losses(out, d, q if trainer.uses_quality else None)["loss"]
    with part("backward"):
        loss.backward()
    if step:
        with part("SGD step"):
            trainer.optimizer.step()


#: stage name → (trainer configuration, parts function)
STAGES: dict[str, tuple[str, Callable[..., None]]] = {
    "vanilla step": ("vanilla", parts_baseline),
    "multi-task step": ("multitask", parts_baseline),
    "stage I": ("epoch/second_order", parts_stage_one),
    "stage II, second order": ("epoch/second_order", parts_second_order),
    "stage II, forward mode": ("epoch/forward_mode", parts_forward_mode),
    "stage II, forward mode, recompute": ("epoch/forward_mode" + RECOMPUTE, parts_forward_mode),
    "stage II, first order": ("epoch/first_order", parts_first_order),
}
#: parts of stage II that the fused iteration (``reuse_task_gradient``) takes from stage I instead
REUSED_PARTS = ("task forward at θ + losses", "backward at θ (g, no graph) -> θ̃")


class OneHotTargets(nn.Module):
    """
    Wraps a loss to call it with one-hot float targets instead of class indices: the same value and FLOPs, without
    the loss's ``int(target.max())`` range check, which the ``meta`` device cannot evaluate.
    """

    def __init__(self, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``loss(logits, one_hot(target))`` for index targets, ``loss(logits, target)`` otherwise."""
        if not target.is_floating_point():
            target = F.one_hot(target.long(), logits.shape[1]).to(logits.dtype)
        return self.loss(logits, target)


class PartTimer:
    """``part(name)`` context manager accumulating wall times per part name."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.times.setdefault(name, []).append(time.perf_counter() - start)


class PartFlops:
    """``part(name)`` context manager counting FLOPs per part name with ``FlopCounterMode``."""

    def __init__(self) -> None:
        self.flops: dict[str, float] = {}
        self.ops: dict[str, dict[str, float]] = {}  #: per part: FLOPs per aten operator

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        counter = FlopCounterMode(display=False)
        with counter:
            yield
        self.flops[name] = self.flops.get(name, 0.0) + counter.get_total_flops()
        ops = self.ops.setdefault(name, {})
        for op, value in counter.get_flop_counts()["Global"].items():
            ops[str(op)] = ops.get(str(op), 0.0) + float(value)


def _batch(cfg: Config, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(cfg.batch, 3, cfg.image_size, cfg.image_size, generator=g)
    d = torch.arange(cfg.batch) % NUM_T
    q = (torch.arange(cfg.batch) // NUM_T) % NUM_IQ
    return x.to(device), d.to(device), q.to(device)


def count_parts(
    cfg: Config, device: str = "meta", ops: dict[str, dict[str, dict[str, float]]] | None = None
) -> dict[str, dict[str, float]]:
    """
    FLOPs of every part of every stage on one batch (``meta`` device: shapes only, no compute).

    Args:
        cfg: sizes.
        device: device of the count.
        ops: optional dict filled with ``{stage: {part: {aten operator: FLOPs}}}``.
    """
    x, d, q = _batch(cfg, device)
    result: dict[str, dict[str, float]] = {}
    # label range checks call int() on the labels, which the meta device cannot do
    no_check = mock.patch("monai_iqad.networks.nets.meta_learner._check_labels", lambda *a, **k: None)
    with no_check:
        for stage, (name, fn) in STAGES.items():
            with torch.device(device):
                trainer = build_trainer(name, cfg, [None])
            trainer.loss_function = OneHotTargets(trainer.loss_function)
            counter = PartFlops()
            fn(trainer, x, d, q, counter, step=False)
            result[stage] = counter.flops
            if ops is not None:
                ops[stage] = counter.ops
    return result


def time_parts(cfg: Config, reps: int) -> dict[str, dict[str, list[float]]]:
    """Per-part wall times of every stage on one batch: one warm-up run, then ``reps`` interleaved runs."""
    x, d, q = _batch(cfg, "cpu")
    trainers = {stage: build_trainer(name, cfg, [None]) for stage, (name, _) in STAGES.items()}
    timers = {stage: PartTimer() for stage in STAGES}
    for r in range(reps + 1):
        for stage, (_, fn) in STAGES.items():
            timer = timers[stage] if r > 0 else PartTimer()
            fn(trainers[stage], x, d, q, timer)
    return {stage: t.times for stage, t in timers.items()}


def engine_flops(cfg: Config) -> dict[str, float]:
    """``FlopCounterMode`` around real engine runs on one batch: FLOPs per iteration kind of every configuration."""
    data = make_data(Config(**{**cfg.__dict__, "n_images": cfg.batch}))
    result: dict[str, float] = {}
    for name in FP32_CONFIGS:
        trainer = build_trainer(name, cfg, DataLoader(data, batch_size=cfg.batch))
        counter = FlopCounterMode(display=False)
        with counter:
            trainer.run()
        result[name] = float(counter.get_total_flops())  # epoch schedule: stage I + stage II of the batch
    return result


def forward_flops_analytic(cfg: Config) -> dict[str, float]:
    """Per-image forward FLOPs by layer formulas: the VGG16-BN encoder, the MKCNet / vanilla / meta-learner heads."""
    net = MKCNet(NUM_T, NUM_IQ, K, width=cfg.width)
    h = w = cfg.image_size
    enc = 0.0
    for module in net.encoder.features.modules():
        if isinstance(module, nn.Conv2d):
            enc += 2.0 * module.in_channels * module.out_channels * 9 * h * w
        elif isinstance(module, nn.MaxPool2d):
            h, w = h // 2, w // 2

    def linears(module: nn.Module) -> float:
        return sum(2.0 * m.in_features * m.out_features for m in module.modules() if isinstance(m, nn.Linear))

    heads = linears(net) - linears(net.encoder)
    vanilla = VanillaNet(NUM_T, width=cfg.width)
    meta = MetaLearner(NUM_T, NUM_IQ, K, width=cfg.width)
    return {
        "encoder": enc,
        "mkcnet": enc + heads,
        "vanilla": enc + linears(vanilla.diagnosis_head),
        "meta_learner": enc + linears(meta.head),
    }


# ----------------------------------------------------------------------------------------------------------------
def double_backward_note(ops: dict[str, dict[str, dict[str, float]]], forward: float) -> str:
    """Operator split of the second-order backward (paper configuration), in MKCNet forwards."""
    part = ops.get("stage II, second order", {}).get("second-order backward -> ∇φ", {})
    conv, conv_bwd = part.get("aten.convolution", 0.0), part.get("aten.convolution_backward", 0.0)
    return (
        f"The second-order backward (paper configuration) is {fmt(conv_bwd / forward)} MKCNet forwards of "
        f"`convolution_backward` (the backward through the θ̃ forward and through the meta learner, 2 each) plus "
        f"{fmt(conv / forward)} of `convolution`: the double backward of the create_graph convolutions. Only its "
        "grad_output terms (conv(ggI, W) + conv(I, ggW), about 2 forwards) reach φ; PyTorch's "
        "`_convolution_double_backward` also computes the terms for the saved input and weight (about 2 more) "
        "although no gradient is requested for them."
    )


def report(
    cfg: Config,
    info: dict[str, Any],
    records: dict[str, EpochRecord],
    tensor_peaks: dict[str, int],
    rss: dict[str, dict[str, int]] | None,
    part_times: dict[str, dict[str, list[float]]],
    part_flops: dict[str, dict[str, dict[str, float]]],
    engine: dict[str, float],
    analytic: dict[str, dict[str, float]],
    paper_ops: dict[str, dict[str, dict[str, float]]],
    command: str,
    quick: bool,
    elapsed: float,
) -> str:
    """The markdown section (``command``: the command line shown, ``quick``: flag the sizes as a smoke test)."""
    mib = 2.0**20
    n_batches = cfg.n_images // cfg.batch + (cfg.n_images % cfg.batch > 0)
    bench_f, paper_f = part_flops["bench"], part_flops["paper"]
    stage_total = {cfg_name: {s: sum(v.values()) for s, v in fl.items()} for cfg_name, fl in part_flops.items()}

    def iteration_flops(name: str, which: str) -> float:
        t = stage_total[which]
        if base_name(name) == "vanilla":
            return t["vanilla step"]
        if name == "multitask":
            return t["multi-task step"]
        gradient = base_name(name).split("/")[1].replace("_", " ")
        recompute = gradient == "forward mode" and (name.endswith(RECOMPUTE) or name.endswith(BF16))
        stage = f"stage II, {gradient}" + (", recompute" if recompute else "")
        stage2 = t[stage]
        stage1 = t["stage I"]
        if name.startswith("iteration/"):  # one shared meta-learner forward (the fix): stage I's no-grad one is gone
            stage1 -= part_flops[which]["stage I"]["meta-learner forward (no_grad) -> y_w"]
        if name.startswith("iteration/forward_mode"):  # reuse_task_gradient: θ̃ is stage I's SGD step
            stage2 -= sum(part_flops[which][stage][p] for p in REUSED_PARTS)
        return stage1 + stage2

    def robust(name: str) -> float:
        rec = records[name]
        return sum(median(rec.iterations[k]) * rec.counts[k] for k in rec.counts)

    rows = []
    for name in CONFIGS:
        rec = records[name]
        kinds = ", ".join(f"{k} {fmt(1e3 * median(v))}" for k, v in rec.iterations.items())
        flops_epoch = n_batches * iteration_flops(name, "bench")
        paper_it = iteration_flops(name, "paper")
        row = [
            f"`{name}`",
            sum(rec.counts.values()),
            fmt(median(rec.epochs)),
            f"{median(rec.ratios):.2f}",
            f"{robust(name) / robust('vanilla'):.2f}",
            f"{median(rec.cpu_ratios):.2f}",
            kinds,
            fmt(flops_epoch / 1e9),
            f"{flops_epoch / (n_batches * iteration_flops('vanilla', 'bench')):.2f}",
            fmt(flops_epoch / 1e9 / median(rec.epochs)),
            fmt(tensor_peaks[name] / mib),
            f"{tensor_peaks[name] / tensor_peaks['vanilla']:.2f}",
        ]
        if rss is not None:
            delta = rss[name]["peak"] - rss[name]["baseline"]
            van_delta = rss["vanilla"]["peak"] - rss["vanilla"]["baseline"]
            row += [fmt(delta / mib), f"{delta / van_delta:.2f}"]
        row += [
            fmt(paper_it / 1e9),
            f"{paper_it / iteration_flops('vanilla', 'paper'):.2f}",
            f"{paper_it / (analytic['paper']['mkcnet'] * PAPER.batch):.2f}",
        ]
        rows.append(row)
    headers = [
        "configuration",
        "iterations",
        "epoch s",
        "x vanilla",
        "x vanilla (robust)",
        "x vanilla (CPU time)",
        "ms per iteration (median, by stage)",
        "GFLOP/epoch",
        "FLOPs x vanilla",
        "GFLOP/s",
        "tensor peak MiB",
        "x vanilla",
    ]
    if rss is not None:
        headers += ["peak RSS delta MiB", "x vanilla"]
    headers += ["paper config GFLOP/batch", "x vanilla", "MKCNet forwards/batch"]

    part_rows = []
    for stage, flops in bench_f.items():
        times = part_times[stage]
        stage_ms = sum(1e3 * median(times[p]) for p in times)
        for p in times:
            t = median(times[p])
            fl, pf = flops.get(p, 0.0), paper_f[stage].get(p, 0.0)
            fwd = analytic["paper"]["mkcnet"] * PAPER.batch
            part_rows.append(
                [
                    stage,
                    p,
                    fmt(1e3 * t),
                    f"{100 * 1e3 * t / stage_ms:.0f}",
                    fmt(fl / 1e9),
                    fmt(fl / t / 1e9) if fl else "",
                    fmt(pf / 1e9),
                    f"{pf / fwd:.2f}" if pf else "",
                ]
            )
        part_rows.append(
            [
                f"**{stage}**",
                "**total**",
                f"**{fmt(stage_ms)}**",
                "100",
                f"**{fmt(sum(flops.values()) / 1e9)}**",
                "",
                f"**{fmt(sum(paper_f[stage].values()) / 1e9)}**",
                f"**{sum(paper_f[stage].values()) / (analytic['paper']['mkcnet'] * PAPER.batch):.2f}**",
            ]
        )

    check_rows = []
    for name in FP32_CONFIGS:
        parts_sum = iteration_flops(name, "bench")
        check_rows.append(
            [
                f"`{name}`",
                fmt(engine[name] / 1e9, 6),
                fmt(parts_sum / 1e9, 6),
                f"{(parts_sum - engine[name]) / engine[name]:.1e}",
            ]
        )

    a_b, a_p = analytic["bench"], analytic["paper"]
    lines = [
        "## MKCNet training cost (CPU)",
        "",
        f"`{command}`"
        + (" (**quick smoke-test sizes, not representative**)" if quick else "")
        + f"; the whole script took {elapsed:.0f} s.",
        "",
        *machine_lines(info),
        f"- Benchmark configuration: DeepDR heads (NUM_T={NUM_T}, NUM_IQ={NUM_IQ}, k={K}, λ_R={ENTROPY_WEIGHT}), "
        f"width {cfg.width:g}, {cfg.image_size}x{cfg.image_size} images, batch {cfg.batch}, {cfg.n_images} synthetic "
        f"in-memory images ({n_batches} batches); SGD lr {LR} / meta lr {META_LR}, weight decay {WEIGHT_DECAY}; "
        f"real engines with `decollate=False`; {cfg.rounds} timed round(s) after a warm-up; in each round every "
        "configuration's epoch runs between two vanilla epochs (vanilla, c1, vanilla, c2, ..., vanilla).",
        "- 'x vanilla' = median over rounds of (epoch wall time / mean of the two vanilla epochs around it); "
        "'(robust)' = the same ratio from the median wall time of each kind of iteration x its count (insensitive "
        "to load spikes); '(CPU time)' = the first ratio with the CPU time of the (single) thread instead of the wall "
        "time (insensitive to time spent waiting for a core on the shared machine, not to cache or memory-bandwidth "
        "contention). "
        "Tensor peak = `torch.profiler` (profile_memory) peak of live tensor bytes above the epoch's start level; "
        + (
            "peak RSS delta = peak RSS (`VmHWM`) minus the RSS after setup and a small warm-up, one epoch in a fresh "
            "1-thread subprocess. "
            if rss is not None
            else "peak RSS: not measured (--quick or --no-rss). "
        )
        + "See the script docstring.",
        f"- Forward FLOPs per image (analytic, 2 x MACs of conv/linear layers): at the benchmark configuration "
        f"encoder {fmt(a_b['encoder'] / 1e9)} GFLOP, MKCNet {fmt(a_b['mkcnet'] / 1e9)}, VanillaNet "
        f"{fmt(a_b['vanilla'] / 1e9)}, MetaLearner {fmt(a_b['meta_learner'] / 1e9)}; at the **paper configuration** "
        f"(width 1, 256x256) encoder {fmt(a_p['encoder'] / 1e9)} GFLOP, MKCNet {fmt(a_p['mkcnet'] / 1e9)}, "
        f"VanillaNet {fmt(a_p['vanilla'] / 1e9)}, MetaLearner {fmt(a_p['meta_learner'] / 1e9)} "
        f"(x batch {PAPER.batch}: MKCNet forward {fmt(a_p['mkcnet'] * PAPER.batch / 1e9)} GFLOP per batch).",
        "",
        "### One epoch per configuration",
        "",
        markdown_table(headers, rows),
        "",
        "The 'epoch' schedule runs 2 x batches iterations (stage I pass, then stage II pass); 'iteration' runs one "
        "iteration per batch doing both stages, so both schedules do the same work per epoch except the meta-learner "
        "forward that the 'iteration' schedule shares between its stages. Paper-config GFLOP per batch are one "
        "stage I + one stage II (counted on the `meta` device); 'MKCNet forwards/batch' divides them by one MKCNet "
        "forward of the batch (official code: 21). `forward_mode` is the exact meta-gradient from one forward-mode "
        "pass (no double backward); `iteration/forward_mode` also reuses stage I's gradient (`reuse_task_gradient`, "
        "plain SGD: stage I's step is θ̃). '+bf16' rows run with `amp_dtype='bfloat16'` (CPU autocast: stage I, and "
        "for `forward_mode` the stage-II forwards except the forward-mode pass); their FLOPs are the fp32 ones.",
        "",
        "### Where the time goes (one batch, per stage)",
        "",
        markdown_table(
            ["stage", "part", "ms", "% of stage", "GFLOP", "GFLOP/s", "paper config GFLOP", "paper: x MKCNet fwd"],
            part_rows,
        ),
        "",
        f"'x MKCNet fwd' = the part's FLOPs over one MKCNet forward of the batch at the paper configuration "
        f"({fmt(a_p['mkcnet'] * PAPER.batch / 1e9)} GFLOP). Times: median of {cfg.part_reps} interleaved runs of the "
        "decomposed stage (same calls as the engine, see `parts_*` in the script).",
        "",
        double_backward_note(paper_ops, analytic["paper"]["mkcnet"] * PAPER.batch),
        "",
        "FLOP cross-check: `FlopCounterMode` around a real engine run on one batch vs the sum of the parts "
        "(epoch schedule = stage I + stage II):",
        "",
        markdown_table(["configuration", "engine GFLOP", "parts GFLOP", "relative difference"], check_rows),
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (or one ``--child`` RSS measurement), print the section and write it."""
    parser = argparse.ArgumentParser(description="MKCNet training cost relative to a vanilla epoch.")
    parser.add_argument("--quick", action="store_true", help="tiny width and shapes, one round (smoke test)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"results file (default {DEFAULT_OUTPUT})")
    parser.add_argument("--rounds", type=int, default=None, help="timed epoch rounds (default 3, quick 1)")
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, help="a subset of the configurations (with vanilla)")
    parser.add_argument("--image-size", type=int, default=None, help="image side (default 128, quick 32)")
    parser.add_argument("--part-reps", type=int, default=None, help="timed runs of the per-part split (default 5)")
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-RSS subprocesses")
    parser.add_argument("--child", choices=CONFIGS, help=argparse.SUPPRESS)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's default, all cores)"
    )
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    if args.child:
        print(json.dumps(child_rss(args.child, args.quick)))
        return 0
    cfg = QUICK if args.quick else FULL
    if args.rounds is not None:
        cfg = Config(**{**cfg.__dict__, "rounds": max(1, args.rounds)})
    if args.image_size is not None:
        cfg = Config(**{**cfg.__dict__, "image_size": args.image_size})
    if args.part_reps is not None:
        cfg = Config(**{**cfg.__dict__, "part_reps": max(1, args.part_reps)})
    if args.no_rss:
        cfg = Config(**{**cfg.__dict__, "rss": False})
    if args.configs:
        selected = tuple(n for n in CONFIGS if n == "vanilla" or n in args.configs)
        globals().update(CONFIGS=selected, FP32_CONFIGS=tuple(n for n in selected if not n.endswith(BF16)))

    def log(msg: str) -> None:
        print(f"[mkcnet_cost] {msg}", file=sys.stderr, flush=True)

    start = time.perf_counter()
    info = machine_info()
    data = make_data(cfg)
    for name in CONFIGS:  # warm-up: one batch per configuration (oneDNN primitives, allocator)
        time_epoch(name, cfg, data[: cfg.batch], None)
    log("warm-up done")
    records = time_rounds(cfg, data, log)
    part_times = time_parts(cfg, cfg.part_reps)
    log("part timings done")
    paper_ops: dict[str, dict[str, dict[str, float]]] = {}
    part_flops = {"bench": count_parts(cfg), "paper": count_parts(PAPER, ops=paper_ops)}
    engine = engine_flops(cfg)
    analytic = {"bench": forward_flops_analytic(cfg), "paper": forward_flops_analytic(PAPER)}
    log("FLOP counts done")
    tensor_peaks = {name: tensor_peak_bytes(name, cfg, data) for name in CONFIGS}
    log("tensor peaks done")
    rss = rss_deltas(args.quick, log) if cfg.rss else None
    body = report(
        cfg,
        info,
        records,
        tensor_peaks,
        rss,
        part_times,
        part_flops,
        engine,
        analytic,
        paper_ops,
        command_line("mkcnet_cost", args),
        args.quick,
        time.perf_counter() - start,
    )
    print(body)
    path = write_section(args.output, SECTION, body)
    log(f"wrote section '{SECTION}' to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
