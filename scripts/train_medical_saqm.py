"""Train the shipped ``bundles/medical_saqm_iqa/models/model.pt`` (a two-expert ``SAQMRouter``) with one command.

The four documented steps of the bundle README ("How the shipped weights were made"), in order, each in its own
process, seeded; the corpora and trainings with one torch thread (``--threads``), the scoring of step 4 with two
(``--score-threads``):

1. corpus preset ``v1`` (``--strict``: a missing source is an error, not a smaller corpus);
2. expert 0: ``train.json`` + ``pretrain.json`` for ``--epochs0`` epochs; the best validation SROCC is kept;
3. corpus preset ``mr`` and expert 1: the MR arm (``pretrain_modality``, ``_distill``, ``_preset`` with preset ``mr``)
   warm-started from expert 0, one checkpoint per epoch for ``--epochs1`` epochs;
4. the checkpoint selection on the validation sources (``benchmarks/iqa_ladder.py --select``, expert 0 the
   reference) among the epochs ``--select-epochs``, then the router (``--router``, radiographs -> expert 1).

Everything is written under ``--out`` (default ``bundles/medical_saqm_iqa/runs/recipe``, with ``--expert0``
``runs/regen``); ``models/model.pt`` is only read (its sha256 from ``large_files.yml`` is compared at the end), never
written. Rerunning the command continues an interrupted run: finished steps are skipped and a stopped training
resumes from its ``checkpoint.pt`` (bit-identical to an uninterrupted run). Each step's wall time goes to
``OUT/recipe.json``.

Bit for bit: the steps are seeded and the trainings single-threaded, and a rerun on the same kind of CPU gives the same
files. The selection only scores (fp32) and copies the chosen checkpoint: on the CPU without AMX it printed the same
validation scores for all 17 checkpoints of stop 33's run with one thread (638 s) and with two (312 s), and chose the
same epoch; stop 30's regeneration of 0.2.0 on the AMX CPU ran it with one (``--score-threads 1`` repeats that). But
bf16 training takes oneDNN kernels chosen by the CPU, and different kernels give different weights. The shipped
expert 0 was trained on a CPU without AMX-BF16 (AVX512-BF16) and expert 1 on one with AMX-BF16, so no single CPU
regenerates both: the command warns (:func:`kernel_warnings`) and ``OUT/recipe.json`` records the CPU's bf16 flags.
``--isa0`` / ``--isa1`` cap the instruction set of a step (``ONEDNN_MAX_CPU_ISA``). See the bundle README.

Usage::

    python scripts/train_medical_saqm.py                         # AMX CPU: no eligible expert 1 (stop 29: 96 min)
    python scripts/train_medical_saqm.py --epochs0 34             # no AMX: a router (not 0.2.0), 86 min quiet (stop 34)
        # expert 0 is the 0.1.0 file bit for bit (18 min); its expert 1 loses radiograph denoising (stop 33)
    python scripts/train_medical_saqm.py --out /tmp/r --verify    # exit 1 unless the result equals the shipped file
    python scripts/train_medical_saqm.py --expert0 bundles/medical_saqm_iqa/models/model.pt --verify
        # steps 3-4 only, from the shipped router's expert 0 (the 0.1.0 weights): regenerates 0.2.0 on AMX CPUs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from pathlib import Path

import torch

from monai_iqad.utils.cpu import cpu_bf16_kind, cpu_flags
from monai_iqad.utils.io import atomic_write_json, file_sha256

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "medical_saqm_iqa"
LADDER = REPO / "benchmarks" / "iqa_ladder.py"

#: Epochs the shipped expert-1 selection compared (bundle README); the default list is those ``<= --epochs1``.
SHIPPED_SELECT_EPOCHS = (1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 33, 36, 39, 40)
EXPERT0_CONFIGS = ("configs/train.json", "configs/pretrain.json")
EXPERT1_CONFIGS = (
    *EXPERT0_CONFIGS,
    "configs/pretrain_modality.json",
    "configs/pretrain_distill.json",
    "configs/pretrain_preset.json",
)


def shipped_sha256(bundle: Path = BUNDLE) -> str | None:
    """``hash_val`` of ``models/model.pt`` in the bundle's ``large_files.yml`` (None without an entry)."""
    import yaml

    listing = bundle / "large_files.yml"
    if not listing.is_file():
        return None
    for entry in yaml.safe_load(listing.read_text(encoding="utf-8")).get("large_files", []):
        if entry.get("path") == "models/model.pt":
            return entry.get("hash_val")
    return None


#: The CPU kind (:func:`monai_iqad.utils.cpu_bf16_kind`) on which each shipped expert is regenerated bit for bit, and
#: how to get it elsewhere: expert 0 (0.1.0) on the AMD EPYC with AVX512-BF16 and no AMX (stop 32; an AMX CPU capped
#: at AVX512_CORE_BF16 and an Intel Xeon without native bf16 both reached validation SROCC 0.6919 instead of 0.6832,
#: stops 29 and 38), expert 1 on a CPU with AMX-BF16 (stop 30).
SHIPPED_KERNELS: dict[str, tuple[str, str]] = {
    "expert 0": ("avx512_bf16", "take it with --expert0, or train it on such a CPU"),
    "expert 1": ("amx", "run this command with --expert0 on such a CPU"),
}
#: The CPU kinds of :func:`monai_iqad.utils.cpu_bf16_kind` in words.
BF16_KINDS: dict[str, str] = {
    "amx": "with AMX-BF16",
    "avx512_bf16": "with AVX512-BF16 and without AMX-BF16",
    "emulated": "without native bf16 (no AVX512-BF16 or AMX-BF16; bf16 is emulated, about 4x slower)",
}


def kernel_warnings(flags: AbstractSet[str], isa0: str, isa1: str, train_expert0: bool) -> list[str]:
    """Why this CPU cannot regenerate a shipped expert bit for bit (:data:`SHIPPED_KERNELS`): one warning per step
    trained here whose CPU kind (:func:`~monai_iqad.utils.cpu_bf16_kind`: AMX-BF16, AVX512-BF16 without AMX, or
    emulated bf16) differs from the shipped run's, or whose ISA is capped. Empty when the CPU's flags are unknown.

    Args:
        flags: the CPU's feature flags (:func:`~monai_iqad.utils.cpu_flags`).
        isa0: ``--isa0`` (an ``ONEDNN_MAX_CPU_ISA`` cap only removes kernels, so it cannot make a CPU act like one with
            more, and a cap on an AMX CPU was measured not to give the AVX512-BF16 CPU's kernels).
        isa1: ``--isa1``.
        train_expert0: whether expert 0 is trained here (not taken with ``--expert0``).
    """
    kind = cpu_bf16_kind(flags)
    if kind is None:
        return []
    steps = {"expert 0": isa0, "expert 1": isa1} if train_expert0 else {"expert 1": isa1}
    out = []
    for step, isa in steps.items():
        shipped, hint = SHIPPED_KERNELS[step]
        if kind != shipped or isa:
            here = f"this CPU is one {BF16_KINDS[kind]}" + (f", capped at {isa}" if isa else "")
            out.append(
                f"the shipped {step} was trained on a CPU {BF16_KINDS[shipped]} and no ISA cap; {here}, so {step} "
                f"will differ ({hint})"
            )
    return out


def trained_epochs(ckpt_dir: Path) -> int:
    """Epochs finished by the training that writes ``ckpt_dir/checkpoint.pt`` (0 when there is none)."""
    path = ckpt_dir / "checkpoint.pt"
    if not path.is_file():
        return 0
    trainer = torch.load(path, map_location="cpu", weights_only=True)["trainer"]  # Ignite's Engine.state_dict()
    return int(trainer["iteration"]) // int(trainer["epoch_length"])


class Recipe:
    """The steps of one run, sharing its output folder, environment and timing log."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.out = Path(args.out).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.log_path = self.out / "recipe.json"
        self.log: dict = json.loads(self.log_path.read_text(encoding="utf-8")) if self.log_path.is_file() else {}
        self.env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(REPO)}

    def _run(self, step: str, cmd: list[str], cwd: Path = REPO, env: dict | None = None, hint: str = "") -> None:
        prefix = "".join(f"{k}={v} " for k, v in (env or {}).items())
        print(f"[{step}] {prefix}{' '.join(cmd)}", flush=True)
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=cwd, env={**self.env, **(env or {})}, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"[{step}] failed with exit status {proc.returncode}: {' '.join(cmd)}{hint}")
        self.log.setdefault("steps", {}).setdefault(step, []).append(round(time.perf_counter() - start, 1))
        self.save_log()

    def save_log(self) -> None:
        """Write ``OUT/recipe.json`` (atomically)."""
        atomic_write_json(self.log_path, self.log)

    def corpus(self, preset: str) -> Path:
        """The corpus of ``preset`` under ``OUT/corpus_<preset>`` (built once)."""
        folder = self.out / f"corpus_{preset}"
        if not (folder / "manifest.json").is_file():
            cmd = [sys.executable, "-m", "monai_iqad.data", "pretrain-corpus", str(folder), "--preset", preset]
            self._run(f"corpus_{preset}", [*cmd, "--seed", str(self.args.seed), "--strict"])
        return folder

    def take_expert0(self, source: Path) -> Path:
        """``OUT/expert0/model.pt`` from ``source`` instead of training it: a SAQM checkpoint, or a ``SAQMRouter``
        whose expert 0 is extracted (e.g. the shipped router, whose expert 0 is the 0.1.0 model). A different file
        already there is an error, not overwritten."""
        from monai_iqad.networks import SAQMRouter
        from monai_iqad.utils.io import atomic_torch_save

        try:
            state = torch.load(source, map_location="cpu", weights_only=True)
        except Exception as e:  # missing, corrupt or not a torch file: name it
            raise SystemExit(f"--expert0 {source}: cannot be read as a checkpoint ({type(e).__name__}: {e})") from e
        if isinstance(state, dict) and SAQMRouter.is_state_dict(state):
            state = SAQMRouter.expert_state_dict(state, 0)
        if not isinstance(state, dict) or "attention.query.0.weight" not in state:
            raise SystemExit(f"--expert0 {source}: neither a SAQM checkpoint nor a SAQMRouter (no SAQM weights)")
        target = self.out / "expert0" / "model.pt"
        if target.is_file():
            have = torch.load(target, map_location="cpu", weights_only=True)
            if have.keys() != state.keys() or not all(torch.equal(have[k], state[k]) for k in state):
                raise SystemExit(f"--expert0 {source}: {target} holds other weights; use another --out")
            return target.parent
        if (target.parent / "checkpoint.pt").is_file():
            raise SystemExit(f"--expert0 {source}: {target.parent} holds a trained expert 0; use another --out")
        target.parent.mkdir(parents=True, exist_ok=True)
        self.log["expert0_from"] = {"path": str(source), "sha256": file_sha256(source)}
        self.save_log()  # before the file: a folder with this expert 0 is never taken for a from-scratch run
        atomic_torch_save(state, target)
        print(f"[expert0] expert 0 of {source} -> {target} (not trained)", flush=True)
        return target.parent

    def train(self, step: str, configs: Sequence[str], epochs: int, overrides: dict[str, str], isa: str = "") -> Path:
        """One ``monai.bundle run`` writing to ``OUT/<step>``; skipped when done, resumed when stopped; ``isa``
        caps oneDNN's instruction set (``ONEDNN_MAX_CPU_ISA``; "" = no cap)."""
        ckpt_dir = self.out / step
        done = trained_epochs(ckpt_dir)
        if done >= epochs:
            print(f"[{step}] {done} epochs already trained in {ckpt_dir}; skipped", flush=True)
            return ckpt_dir
        cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(list(configs))]
        cmd += ["--meta_file", "configs/metadata.json", "--logging_file", "configs/logging.conf"]
        settings = {
            "ckpt_dir": str(ckpt_dir),
            "output_dir": str(ckpt_dir),
            "max_epochs": str(epochs),
            "num_threads": str(self.args.threads),
            "seed": str(self.args.seed),
            "time_limit_s": "0",
            "resume": str(done > 0),
            **overrides,
            **dict(kv.split("=", 1) for kv in self.args.override),
        }
        for key, value in settings.items():
            cmd += [f"--{key}", value]
        self._run(step, cmd, cwd=BUNDLE, env={"ONEDNN_MAX_CPU_ISA": isa} if isa else {})
        return ckpt_dir

    def ladder(self, step: str, target: Path, extra: list[str], hint: str = "") -> Path:
        """One ``benchmarks/iqa_ladder.py`` call that writes ``target`` (skipped when it exists)."""
        if not target.is_file():
            threads = str(self.args.score_threads)
            cmd = [sys.executable, str(LADDER), "--threads", threads, "--width", str(self.args.width)]
            self._run(step, [*cmd, *extra], env={"OMP_NUM_THREADS": threads}, hint=hint)
        return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--out", default=None, help="output folder, never models/ (default runs/recipe, with --expert0 runs/regen)"
    )
    parser.add_argument("--epochs0", type=int, default=70, help="epochs of expert 0 (best validation SROCC is kept)")
    parser.add_argument("--epochs1", type=int, default=40, help="epochs of expert 1 (one checkpoint per epoch)")
    parser.add_argument(
        "--select-epochs",
        default=None,
        help="comma-separated expert-1 epochs the selection compares (default: the shipped list, up to --epochs1)",
    )
    parser.add_argument(
        "--expert0",
        default=None,
        help="take expert 0 from this SAQM checkpoint or router (its expert 0) instead of training it (no corpus v1)",
    )
    parser.add_argument("--isa0", default="", help="ONEDNN_MAX_CPU_ISA of expert 0's training ('' = no cap)")
    parser.add_argument("--isa1", default="", help="ONEDNN_MAX_CPU_ISA of expert 1's training ('' = no cap)")
    parser.add_argument("--preset0", default="v1", help="corpus preset of expert 0")
    parser.add_argument("--preset1", default="mr", help="corpus preset of expert 1")
    parser.add_argument("--route", action="append", default=None, help="MODALITY=K of the router (default CR=1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the corpus and training steps")
    parser.add_argument(
        "--score-threads",
        type=int,
        default=2,
        help="torch threads of the selection and router steps (fp32 scoring; 1 and 2 choose the same epoch: stop 34)",
    )
    parser.add_argument("--width", type=float, default=0.125, help="SAQM width (the shipped model's is 0.125)")
    parser.add_argument("--select-max-drop", type=float, default=0.05, help="selection rule (iqa_ladder.py)")
    parser.add_argument("--select-floor", type=float, default=0.80, help="selection rule (iqa_ladder.py)")
    parser.add_argument(
        "--override", action="append", default=[], help="KEY=VALUE for both bundle runs (e.g. batch_size=4)"
    )
    parser.add_argument("--verify", action="store_true", help="exit 1 unless the router equals the shipped file")
    args = parser.parse_args(argv)
    args.out = args.out or str(BUNDLE / "runs" / ("regen" if args.expert0 else "recipe"))
    out = Path(args.out).resolve()
    if out == (BUNDLE / "models").resolve():
        parser.error("--out must not be the bundle's models/ folder: the shipped file is only compared, never replaced")
    if args.threads < 1 or args.score_threads < 1:
        parser.error("--threads and --score-threads must be at least 1")
    if any("=" not in kv for kv in args.override):
        parser.error("--override takes KEY=VALUE")
    select_epochs = (
        [int(e) for e in args.select_epochs.split(",")]
        if args.select_epochs
        else [e for e in SHIPPED_SELECT_EPOCHS if e <= args.epochs1]
    )
    if not select_epochs or max(select_epochs) > args.epochs1:
        parser.error(f"--select-epochs {select_epochs} must be non-empty and at most --epochs1 {args.epochs1}")

    flags = cpu_flags()
    for warning in kernel_warnings(flags, args.isa0, args.isa1, train_expert0=not args.expert0):
        print(f"warning: {warning}", flush=True)
    recipe = Recipe(args)
    recipe.log.update(
        isa0=args.isa0,
        isa1=args.isa1,
        threads=args.threads,
        score_threads=args.score_threads,
        cpu_bf16_flags=sorted(f for f in flags if "bf16" in f),
    )
    start = time.perf_counter()
    width = {"width": str(args.width)}

    if "expert0_from" in recipe.log and not args.expert0:
        raise SystemExit(f"{recipe.out} holds a run whose expert 0 was not trained (--expert0); use another --out")
    if args.expert0:
        expert0 = recipe.take_expert0(Path(args.expert0).resolve())
    else:
        corpus0 = recipe.corpus(args.preset0)
        expert0 = recipe.train(
            "expert0", EXPERT0_CONFIGS, args.epochs0, {**width, "dataset_dir": str(corpus0)}, isa=args.isa0
        )
    corpus1 = recipe.corpus(args.preset1)
    expert1 = recipe.train(
        "expert1",
        EXPERT1_CONFIGS,
        args.epochs1,
        {
            **width,
            "dataset_dir": str(corpus1),
            "corpus_preset": args.preset1,
            "init_path": str(expert0 / "model.pt"),
            "init_expert": "$None",  # a plain "None" is dropped by monai.bundle run (unset argument)
        },
        isa=args.isa1,
    )
    candidates = expert1 / "select"
    candidates.mkdir(exist_ok=True)
    for e in select_epochs:
        link = candidates / f"model_epoch={e}.pt"
        if not link.exists():
            link.symlink_to(Path("..") / "epochs" / f"model_epoch={e}.pt")
    selected = recipe.ladder(
        "selection",
        expert1 / "selected.pt",
        [
            "--corpus", str(corpus1), "--split", "validation", "--no-speed",
            "--select", str(candidates / "model_epoch=*.pt"), "--select-out", str(expert1 / "selected.pt"),
            "--select-reference", str(expert0 / "model.pt"),
            "--select-max-drop", str(args.select_max_drop), "--select-floor", str(args.select_floor),
        ],
        hint="\n(exit status 1: no expert-1 checkpoint passes the rule against expert 0 on the validation sources, so "
        "there is no router; every checkpoint's scores are printed above)",
    )  # fmt: skip
    routes = ["--route", *(args.route or ["CR=1"])]
    model = recipe.ladder(
        "router",
        recipe.out / "model.pt",
        ["--router", str(expert0 / "model.pt"), str(selected), *routes, "--router-out", str(recipe.out / "model.pt")],
    )

    digest, shipped = file_sha256(model), shipped_sha256()
    same = digest == shipped
    recipe.log.update(sha256=digest, equals_shipped=same, last_run_s=round(time.perf_counter() - start, 1))
    recipe.save_log()
    print(f"{model}: sha256 {digest}")
    print(
        "identical to the shipped models/model.pt"
        if same
        else f"differs from the shipped models/model.pt (sha256 {shipped})"
    )
    print(f"steps (s): {json.dumps(recipe.log.get('steps', {}))}")
    return 1 if args.verify and not same else 0


if __name__ == "__main__":
    sys.exit(main())
