"""
SAQM throughput on the CPU: patches/s and achieved GFLOP/s of inference and of a DomainAdaptationTrainer step, in
float32 and under bfloat16 autocast, next to a dense 3x3 convolution and a large matmul measured in the same process.

Usage (from the repository root)::

    python benchmarks/saqm_throughput.py            # paper width (22.6M parameters), ~2-4 minutes on 2 cores
    python benchmarks/saqm_throughput.py --quick    # width 1/16, tiny shapes: a smoke test of a few seconds

FLOP convention (the one of ``torch.utils.flop_counter.FlopCounterMode``): FLOPs = 2 x multiply-accumulates of the
convolutions, matrix products and linear layers; bias additions, activations, pooling, softmax, batch norm and the
optimizer update are not counted. Per layer, for ``P`` patches:

- 2D convolution: ``2 * P * C_in * C_out * k_h * k_w * H_out * W_out``;
- attention: ``S = Q^T K`` costs ``2 * P * N * C_q * N`` and ``V A^T`` costs ``2 * P * C * N * N`` (``N = H' W'``);
- linear layer: ``2 * P * in * out``;
- backward: ``grad_weight`` costs one forward of the layer and ``grad_input`` another one, except where the layer's
  input needs no gradient (the first convolution of each stack, whose input is the image): training =
  forward + backward = ``3 x forward - (forward of the three first convolutions)``.

The analytic counts are cross-checked against ``FlopCounterMode`` run on the ``meta`` device (no compute).
Timings: every round runs every workload once, interleaved, after one warm-up round; the table gives medians and the
ratio columns are medians of the per-round ratios (robust to the load of a shared machine).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from bench_utils import (
    DEFAULT_OUTPUT,
    command_line,
    fmt,
    machine_info,
    machine_lines,
    markdown_table,
    median,
    time_call,
    write_section,
)
from torch.utils.flop_counter import FlopCounterMode

from monai_iqad.engines import DomainAdaptationTrainer
from monai_iqad.networks import SAQM, DomainClassifier
from monai_iqad.utils import native_cpu_bf16

SECTION = "saqm_throughput"
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class Config:
    """Sizes of one benchmark run."""

    width: float
    image_size: int  #: side of the square image scored by ``model(x)`` (all its patches in one network call)
    train_patches: int  #: patches per training step, half source and half target (as the DA trainer's cat)
    conv_channels: int  #: channels of the reference 3x3 convolution (in = out)
    matmul_n: int  #: size of the reference square matmul
    rounds: int  #: timed rounds (after one warm-up round)


FULL = Config(width=1.0, image_size=256, train_patches=16, conv_channels=256, matmul_n=2048, rounds=3)
QUICK = Config(width=1 / 16, image_size=64, train_patches=8, conv_channels=16, matmul_n=256, rounds=1)


# ----------------------------------------------------------------------------------------------------------------
# analytic FLOPs
@dataclass(frozen=True)
class Layer:
    """One FLOP-carrying layer of a patch forward."""

    name: str
    group: str  #: "query", "key", "value", "attention", "regressor" or "domain head"
    flops: float  #: forward FLOPs per patch
    input_grad: bool  #: whether the backward computes a gradient for the layer input (else grad_weight only)


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def saqm_layers(model: SAQM, head: nn.Module | None = None) -> list[Layer]:
    """
    Per-layer forward FLOPs of one ``patch_size`` patch through ``model`` (and ``head``), by shape propagation.

    Args:
        model: the SAQM network.
        head: optional domain classifier (its ``nn.Linear`` layers are counted, in order).

    Returns:
        The layers in forward order, with their per-patch forward FLOPs (2 x MACs, bias excluded).
    """
    layers: list[Layer] = []
    spatial = (model.patch_size, model.patch_size)
    for group in ("query", "key", "value"):
        h, w = spatial
        first = True
        for module in getattr(model.attention, group):
            if isinstance(module, nn.Conv2d):
                (kh, kw), (sh, sw), (ph, pw) = _pair(module.kernel_size), _pair(module.stride), _pair(module.padding)
                h, w = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
                macs = module.in_channels * module.out_channels * kh * kw * h * w // module.groups
                name = f"conv {kh}x{kw} {module.in_channels}->{module.out_channels} @{h}x{w}"
                layers.append(Layer(name, group, 2.0 * macs, input_grad=not first))
                first = False
            elif isinstance(module, nn.MaxPool2d):
                (kh, kw), (sh, sw) = _pair(module.kernel_size), _pair(module.stride or module.kernel_size)
                h, w = (h - kh) // sh + 1, (w - kw) // sw + 1
        spatial_out = (h, w)
    n = spatial_out[0] * spatial_out[1]
    cq, c = model.qk_channels, model.out_channels
    layers.append(Layer(f"S = Q^T K ({n}x{cq} @ {cq}x{n})", "attention", 2.0 * n * cq * n, True))
    layers.append(Layer(f"V A^T ({c}x{n} @ {n}x{n})", "attention", 2.0 * c * n * n, True))
    for module in model.regressor.modules():
        if isinstance(module, nn.Linear):
            layers.append(
                Layer(
                    f"linear {module.in_features}->{module.out_features}",
                    "regressor",
                    2.0 * module.in_features * module.out_features,
                    True,
                )
            )
    if head is not None:
        for module in head.modules():
            if isinstance(module, nn.Linear):
                layers.append(
                    Layer(
                        f"linear {module.in_features}->{module.out_features}",
                        "domain head",
                        2.0 * module.in_features * module.out_features,
                        True,
                    )
                )
    return layers


def forward_flops(layers: Sequence[Layer], patches: int, groups: Sequence[str] | None = None) -> float:
    """Forward FLOPs of ``patches`` patches (optionally only the layers of ``groups``)."""
    return patches * sum(layer.flops for layer in layers if groups is None or layer.group in groups)


def training_flops(layers: Sequence[Layer], patches: int) -> float:
    """Forward + backward FLOPs: backward = grad_weight (1 forward) + grad_input (1 forward, where needed)."""
    return patches * sum(layer.flops * (3.0 if layer.input_grad else 2.0) for layer in layers)


def counted_flops(width: float, image_size: int, train_patches: int) -> tuple[float, float]:
    """
    ``FlopCounterMode`` totals of an inference call and of a training forward+backward, on the ``meta`` device.

    Returns:
        ``(inference FLOPs, training FLOPs)``; training mirrors ``DomainAdaptationTrainer._compute_pred_loss``
        (one forward of cat(source, target), BCE regression on the source patches, BCE domain loss on all).
    """
    with torch.device("meta"):
        model = SAQM(width=width)
        head = DomainClassifier(model.out_channels)
        image = torch.zeros(1, 3, image_size, image_size)
        patches = torch.zeros(train_patches, 3, model.patch_size, model.patch_size)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(image)
    inference = counter.get_total_flops()
    counter = FlopCounterMode(display=False)
    n_source = train_patches // 2
    with counter:
        logits, feats = model.train()(patches, patch_level=True, return_features=True)
        loss_reg = F.binary_cross_entropy_with_logits(
            logits[:n_source].reshape(-1), torch.zeros_like(logits[:n_source]).reshape(-1)
        )
        domain_logits = head(feats.reshape(-1, feats.shape[-1])).reshape(-1)
        loss_dom = F.binary_cross_entropy_with_logits(domain_logits, torch.zeros_like(domain_logits))
        (loss_reg + loss_dom).backward()
    return float(inference), float(counter.get_total_flops())


# ----------------------------------------------------------------------------------------------------------------
# workloads
def _autocast(precision: str) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass
class Workload:
    """A timed callable with its FLOPs and patch count per call."""

    key: str
    label: str
    precision: str
    shape: str
    flops: float
    patches: int
    fn: Callable[[], Any]


def build_workloads(cfg: Config) -> tuple[list[Workload], SAQM, DomainClassifier]:
    """The reference matmul and convolutions, SAQM inference and the DA trainer step, fp32 and bf16."""
    torch.manual_seed(0)
    workloads: list[Workload] = []
    n = cfg.matmul_n
    for precision in PRECISIONS:
        dtype = torch.float32 if precision == "fp32" else torch.bfloat16
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        workloads.append(
            Workload(
                f"matmul/{precision}",
                "matmul",
                precision,
                f"{n}x{n} @ {n}x{n}",
                2.0 * n**3,
                0,
                lambda a=a, b=b: torch.mm(a, b),
            )
        )

    c, batch = cfg.conv_channels, cfg.train_patches
    conv_macs = batch * c * c * 9 * 32 * 32
    x = torch.randn(batch, c, 32, 32)
    weight, bias = torch.randn(c, c, 3, 3) * (2.0 / (9 * c)) ** 0.5, torch.zeros(c)
    xg, wg, bg = x.clone().requires_grad_(), weight.clone().requires_grad_(), bias.clone().requires_grad_()
    grad_out = torch.randn(batch, c, 32, 32)

    def conv_fwd(precision: str) -> None:
        with torch.no_grad(), _autocast(precision):
            F.conv2d(x, weight, bias, padding=1)

    def conv_fwd_bwd(precision: str) -> None:
        with _autocast(precision):
            y = F.conv2d(xg, wg, bg, padding=1)
        y.backward(grad_out.to(y.dtype))
        xg.grad = wg.grad = bg.grad = None

    model = SAQM(width=cfg.width)
    head = DomainClassifier(model.out_channels)
    image = torch.rand(1, 3, cfg.image_size, cfg.image_size)
    n_patches = model.num_patches(cfg.image_size, cfg.image_size)
    layers = saqm_layers(model, head)
    infer_flops = forward_flops(layers, n_patches, ("query", "key", "value", "attention", "regressor"))

    def infer(precision: str) -> None:
        model.eval()
        with torch.no_grad(), _autocast(precision):
            model(image)

    trainers = {p: make_trainer(model, head, cfg.train_patches, p) for p in PRECISIONS}
    train_flops = training_flops(layers, cfg.train_patches)

    def train(precision: str) -> None:
        trainer, batch_s = trainers[precision]
        trainer.state.iteration = trainer.state.epoch_length * trainer.state.max_epochs // 2  # λ mid-schedule
        trainer._iteration(trainer, batch_s)  # bf16: the trainer's own amp_dtype="bfloat16" (CPU autocast)

    for precision in PRECISIONS:
        workloads += [
            Workload(
                f"conv_fwd/{precision}",
                "dense conv 3x3, forward",
                precision,
                f"{batch}x{c}x32x32, {c}->{c}",
                2.0 * conv_macs,
                0,
                lambda p=precision: conv_fwd(p),
            ),
            Workload(
                f"saqm_infer/{precision}",
                "SAQM inference `model(x)`",
                precision,
                f"1x3x{cfg.image_size}x{cfg.image_size} ({n_patches} patches)",
                infer_flops,
                n_patches,
                lambda p=precision: infer(p),
            ),
            Workload(
                f"conv_train/{precision}",
                "dense conv 3x3, fwd+bwd",
                precision,
                f"{batch}x{c}x32x32, {c}->{c}",
                3 * 2.0 * conv_macs,
                0,
                lambda p=precision: conv_fwd_bwd(p),
            ),
            Workload(
                f"saqm_train/{precision}",
                "SAQM DA trainer step (fwd+bwd+Adam)",
                precision,
                f"{cfg.train_patches // 2}+{cfg.train_patches // 2} patches 3x32x32",
                train_flops,
                cfg.train_patches,
                lambda p=precision: train(p),
            ),
        ]
    return workloads, model, head


def make_trainer(
    model: SAQM, head: DomainClassifier, patches: int, precision: str = "fp32"
) -> tuple[DomainAdaptationTrainer, dict]:
    """A real ``DomainAdaptationTrainer`` (unsupervised DA, Adam 5e-4 over network + head, ``amp_dtype="bfloat16"``
    for ``precision="bf16"``) and its source batch."""
    g = torch.Generator().manual_seed(1)
    half = patches // 2
    p = model.patch_size
    source = {"image": torch.rand(half, 3, p, p, generator=g), "mos": torch.rand(half, generator=g)}
    target = {"image": torch.rand(patches - half, 3, p, p, generator=g)}
    optimizer = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=5e-4)
    trainer = DomainAdaptationTrainer(
        device="cpu",
        max_epochs=100,
        train_data_loader=[source],
        network=model,
        optimizer=optimizer,
        domain_classifier=head,
        target_data_loader=[target],
        mode="unsupervised",
        decollate=False,
        amp_dtype="bfloat16" if precision == "bf16" else None,
    )
    trainer.state.epoch = 1
    return trainer, source


def run_rounds(workloads: Sequence[Workload], rounds: int, log: Callable[[str], None]) -> dict[str, list[float]]:
    """One warm-up round, then ``rounds`` rounds of every workload in turn; returns the per-round times."""
    times: dict[str, list[float]] = {w.key: [] for w in workloads}
    for r in range(rounds + 1):
        for w in workloads:
            t = time_call(w.fn)
            if r > 0:
                times[w.key].append(t)
        log(f"round {r}/{rounds} done" + (" (warm-up)" if r == 0 else ""))
    return times


# ----------------------------------------------------------------------------------------------------------------
def per_layer_table(layers: Sequence[Layer]) -> str:
    """Per-patch forward MFLOP of every layer, the three stacks side by side."""
    stacks = {g: [layer for layer in layers if layer.group == g] for g in ("query", "key", "value")}
    total = sum(layer.flops for layer in layers)
    rows = []
    for q, k, v in zip(stacks["query"], stacks["key"], stacks["value"]):
        name = q.name if q.name == v.name else f"{q.name} (V: {v.name})"
        s = q.flops + k.flops + v.flops
        rows.append(
            [name, fmt(q.flops / 1e6), fmt(k.flops / 1e6), fmt(v.flops / 1e6), fmt(s / 1e6), f"{100 * s / total:.1f}"]
        )
    for layer in layers:
        if layer.group not in stacks:
            rows.append(
                [f"{layer.group}: {layer.name}", "", "", "", fmt(layer.flops / 1e6), f"{100 * layer.flops / total:.2f}"]
            )
    return markdown_table(["layer (per 32x32 patch)", "Q MFLOP", "K MFLOP", "V MFLOP", "total MFLOP", "%"], rows)


def report(
    command: str,
    cfg: Config,
    workloads: Sequence[Workload],
    times: dict[str, list[float]],
    layers: Sequence[Layer],
    counted: tuple[float, float],
    params: tuple[int, int],
    info: dict[str, Any],
    quick: bool,
) -> str:
    """The markdown section: machine, results table, FLOP cross-check and per-layer breakdown."""
    by_key = {w.key: w for w in workloads}
    reference = {"saqm_infer": "conv_fwd", "saqm_train": "conv_train"}
    rows, summary = [], []
    for w in workloads:
        t = median(times[w.key])
        ratio = ""
        kind = w.key.split("/")[0]
        if kind in reference:
            ref = by_key[f"{reference[kind]}/{w.precision}"]
            per_round = [(w.flops / tw) / (ref.flops / tr) for tw, tr in zip(times[w.key], times[ref.key])]
            ratio = f"{median(per_round):.2f}"
            summary.append((w, median(per_round)))
        rows.append(
            [
                w.label,
                w.precision,
                w.shape,
                fmt(w.flops / 1e9),
                fmt(t),
                fmt(w.patches / t) if w.patches else "",
                fmt(w.flops / t / 1e9),
                ratio,
            ]
        )
    bf16_speedup = []
    for kind in ("matmul", "conv_fwd", "saqm_infer", "conv_train", "saqm_train"):
        a, b = times[f"{kind}/fp32"], times[f"{kind}/bf16"]
        bf16_speedup.append(f"{kind} {median([x / y for x, y in zip(a, b)]):.2f}x")
    analytic_infer = forward_flops(
        layers, by_key["saqm_infer/fp32"].patches, ("query", "key", "value", "attention", "regressor")
    )
    analytic_train = training_flops(layers, cfg.train_patches)
    check = markdown_table(
        ["workload", "analytic GFLOP", "FlopCounterMode GFLOP", "relative difference"],
        [
            [
                "inference (one image)",
                fmt(analytic_infer / 1e9, 6),
                fmt(counted[0] / 1e9, 6),
                f"{(analytic_infer - counted[0]) / counted[0]:.1e}",
            ],
            [
                "training fwd+bwd (one step)",
                fmt(analytic_train / 1e9, 6),
                fmt(counted[1] / 1e9, 6),
                f"{(analytic_train - counted[1]) / counted[1]:.1e}",
            ],
        ],
    )
    per_patch_fwd = forward_flops(layers, 1, ("query", "key", "value", "attention", "regressor"))
    bf16_kind = {True: ", native bf16", False: ", bf16 emulated (no AVX512-BF16 or AMX-BF16)", None: ""}
    lines = [
        f"## SAQM throughput (CPU{bf16_kind[native_cpu_bf16()]})",
        "",
        f"`{command}`" + (" (**quick smoke-test sizes, not representative**)" if quick else ""),
        "",
        *machine_lines(info),
        f"- Model: `SAQM(width={cfg.width:g})`, {params[0]:,} parameters, plus the domain head "
        f"`DomainClassifier(C, (1024, 1024))`, {params[1]:,} parameters; one 32x32 patch costs "
        f"{fmt(per_patch_fwd / 1e9)} GFLOP forward, {fmt(training_flops(layers, 1) / 1e9)} GFLOP forward+backward "
        "(with the domain head).",
        f"- {cfg.rounds} timed round(s) after one warm-up round; each round runs every row once, interleaved. "
        "Times are medians; 'vs dense conv' is the median over rounds of (SAQM GFLOP/s) / (dense conv GFLOP/s) of "
        "the same round and precision (inference vs conv forward, training vs conv forward+backward).",
        "- Training rows run the real `DomainAdaptationTrainer._iteration` (mode `unsupervised`: one forward of "
        "cat(source, target), BCE regression + BCE domain loss through the GRL, backward, Adam step). bf16 rows use "
        "the trainer's `amp_dtype='bfloat16'` (CPU autocast).",
        "- FLOPs = 2 x MACs of convolutions, matrix products and linear layers (bias, activations, pooling, softmax "
        "and the optimizer not counted), the convention of `FlopCounterMode`; formulas in the script docstring.",
        "",
        markdown_table(
            ["workload", "precision", "shape", "GFLOP/call", "s/call", "patches/s", "GFLOP/s", "vs dense conv"], rows
        ),
        "",
        "**SAQM achieved / dense conv achieved:** "
        + "; ".join(f"{w.key.replace('/', ' ')} {r:.2f}" for w, r in summary)
        + ". **bf16-autocast speed-up (fp32 time / bf16 time):** "
        + ", ".join(bf16_speedup)
        + ".",
        "",
        "FLOP cross-check (`FlopCounterMode` on the `meta` device, forward + backward without the optimizer):",
        "",
        check,
        "",
        "Forward FLOPs per layer (per 32x32 patch; training adds 2x per layer, 1x for the first convolutions):",
        "",
        per_layer_table(layers),
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the section and write it to the results file."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[1], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny width and shapes, one round (smoke test)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"results file (default {DEFAULT_OUTPUT})")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 3, quick 1)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's default, all cores)"
    )
    parser.add_argument(
        "--section",
        default=SECTION,
        help=f"marked section of the results file to write (default {SECTION}); another name keeps the figures of "
        "another CPU kind, e.g. saqm_throughput_no_native_bf16",
    )
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    cfg = QUICK if args.quick else FULL
    if args.rounds is not None:
        cfg = Config(**{**cfg.__dict__, "rounds": max(1, args.rounds)})

    def log(msg: str) -> None:
        print(f"[saqm_throughput] {msg}", file=sys.stderr, flush=True)

    info = machine_info()
    workloads, model, head = build_workloads(cfg)
    layers = saqm_layers(model, head)
    counted = counted_flops(cfg.width, cfg.image_size, cfg.train_patches)
    log(f"width {cfg.width:g}: {len(workloads)} workloads, {cfg.rounds} rounds")
    times = run_rounds(workloads, cfg.rounds, log)
    params = (sum(p.numel() for p in model.parameters()), sum(p.numel() for p in head.parameters()))
    command = command_line("saqm_throughput", args)
    body = report(command, cfg, workloads, times, layers, counted, params, info, args.quick)
    print(body)
    path = write_section(args.output, args.section, body)
    log(f"wrote section '{args.section}' to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
