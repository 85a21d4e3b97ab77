"""MKCNet vs the vanilla baseline on the demo data, trained and evaluated with the bundles' own configs.

For each bundle, method and seed the script copies the bundle's ``configs/`` into a fresh folder and runs, as a user
would::

    python -m monai.bundle run --config_file "['configs/train.json',<method overlay>,'configs/demo.json']" --seed S
    python -m monai.bundle run --config_file "[..., 'configs/evaluate.json']" --seed S

(``mkcnet``: no method overlay, ``vanilla``: ``configs/vanilla.json``, ``multitask``: ``configs/multitask.json``). All
runs of a bundle share one demo data set (built by the first run, ``demo_data_seed`` 0), so the methods are compared
on the same images; the seed changes the initialisation and the batch order. Metrics are read from the evaluation's
``eval/metrics.csv`` (all test images) and recomputed from ``eval/predictions.csv`` on the low-quality test images
(quality grades below the best one) with :func:`monai_iqad.metrics.diagnosis_metrics`.

The table (mean ± sample std over the seeds) of each bundle is printed and written between the
``mkcnet_demo_results/<bundle>`` markers of ``docs/results.md``; the rest of that page (the discussion) is not touched.
Each run uses one torch thread by default (``--threads``): on a 2-core machine shared with other jobs, two OpenMP
threads are many times slower than one.

Usage::

    python benchmarks/mkcnet_demo_results.py              # EyeQ: mkcnet, multitask, vanilla; seeds 0 1 2 (~15 min)
    python benchmarks/mkcnet_demo_results.py --bundles all --seeds 0 --methods mkcnet vanilla   # every MKCNet bundle
    python benchmarks/mkcnet_demo_results.py --quick      # smoke test: 1 seed, 1 epoch, tiny data (~1 min)
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from bench_utils import machine_info, machine_lines, markdown_table, write_section

ROOT = Path(__file__).resolve().parent.parent
BUNDLES_DIR = ROOT / "bundles"
MKCNET_BUNDLES = (
    "fundus_eyeq_mkcnet_iqad",
    "fundus_deepdr_mkcnet_iqad",
    "octa_mkcnet_iqad",
    "ct_mkcnet_iqad",
    "chest_xray_mkcnet_iqad",
)
METHODS = {"mkcnet": None, "vanilla": "vanilla.json", "multitask": "multitask.json"}
DEFAULT_OUTPUT = ROOT / "docs" / "results.md"
DEFAULT_BUNDLES = ["fundus_eyeq_mkcnet_iqad"]
DEFAULT_METHODS = ["mkcnet", "multitask", "vanilla"]
DEFAULT_SEEDS = [0, 1, 2]
SECTION = "mkcnet_demo_results"
INTRO = """# MKCNet vs the vanilla baseline on the demo data

MKCNet and its diagnosis-only vanilla baseline trained and evaluated with the MKCNet bundles' own configs
(`configs/demo.json` overlay, the same budget for both) on the synthetic demo data of `docs/demo_data.md`. The
measured sections are written by `python benchmarks/mkcnet_demo_results.py` (one per bundle; re-running the script
replaces only the sections of the bundles it ran). The paper's numbers on the real data sets are in each bundle's
`configs/metadata.json` (`eval_metrics`) and `docs/README.md`.
"""
#: ``--quick``: one seed, one epoch on the smallest demo data set, tiny network (a smoke test, not a result)
QUICK_OVERRIDES = {"max_epochs": 1, "width": 0.0625, "image_size": [32, 32], "demo_image_size": 32}
METRICS = ("auc", "acc", "f1")


def _overlays(method: str) -> list[str]:
    overlay = METHODS[method]
    return ["configs/train.json"] + ([f"configs/{overlay}"] if overlay else []) + ["configs/demo.json"]


def _config_arg(files: Sequence[str]) -> str:
    return "[" + ",".join(f"'{f}'" for f in files) + "]"


def _run_bundle(workdir: Path, files: Sequence[str], overrides: dict[str, Any], log: Path, threads: int) -> float:
    """Run ``python -m monai.bundle run`` in ``workdir``; return the wall time in seconds.

    Raises:
        RuntimeError: when the run fails (the message ends with the tail of its log).
    """
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", _config_arg(files)]
    cmd += ["--logging_file", "configs/logging.conf"]
    for key, value in overrides.items():
        # python-fire (the bundle CLI) parses Python literals: JSON's false/null would arrive as strings
        cmd += [f"--{key}", value if isinstance(value, str) else repr(value)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, cwd=workdir, stdout=fh, stderr=subprocess.STDOUT, env=env, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        tail = log.read_text()[-4000:]
        raise RuntimeError(f"{' '.join(cmd)} failed in {workdir} (exit {proc.returncode}):\n{tail}")
    return elapsed


def _read_metrics(path: Path) -> dict[str, float]:
    with open(path, newline="") as fh:
        return {row[0]: float(row[1]) for row in csv.reader(fh) if len(row) >= 2}


def _low_quality_metrics(predictions: Path, num_diagnosis: int, num_quality: int, f1_average: str) -> dict:
    """AUC/ACC/F1 of the test images whose true quality grade is below the best one."""
    from monai_iqad.metrics import diagnosis_metrics

    with open(predictions, newline="") as fh:
        rows = list(csv.DictReader(fh))
    prob_cols = [c for c in rows[0] if c.startswith("diagnosis_")][:num_diagnosis]
    probs = np.array([[float(r[c]) for c in prob_cols] for r in rows])
    labels = np.array([round(float(r["true_diagnosis"])) for r in rows])
    quality = np.array([round(float(r["true_quality"])) for r in rows])
    low = quality < num_quality - 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = diagnosis_metrics(probs[low], labels[low], num_classes=num_diagnosis, f1_average=f1_average)
    return {k: out[k] for k in (*METRICS, "n")}


def run_one(
    bundle: str, method: str, seed: int, work: Path, data_dir: Path, overrides: dict[str, Any], threads: int = 1
) -> dict:
    """Train and evaluate one (bundle, method, seed); return its metrics and timings."""
    run_dir = work / bundle / f"{method}_seed{seed}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    shutil.copytree(BUNDLES_DIR / bundle / "configs", run_dir / "configs")
    common = {"seed": seed, "dataset_dir": str(data_dir), **overrides}
    files = _overlays(method)
    train_s = _run_bundle(run_dir, files, common, run_dir / "train.log", threads)
    eval_s = _run_bundle(run_dir, [*files, "configs/evaluate.json"], common, run_dir / "evaluate.log", threads)
    parsed = _parsed(run_dir, files, common)
    overall = _read_metrics(run_dir / "eval" / "metrics.csv")
    low = _low_quality_metrics(
        run_dir / "eval" / "predictions.csv", parsed["num_diagnosis"], parsed["num_quality"], parsed["f1_average"]
    )
    best = json.loads((run_dir / "models" / "model.pt.json").read_text())
    result = {
        "bundle": bundle,
        "method": method,
        "seed": seed,
        "train_s": train_s,
        "eval_s": eval_s,
        "best_epoch": best.get("epoch"),
        "val_auc": best.get("value"),
        **{m: overall[m] for m in METRICS},
        "n": overall.get("n"),
        **{f"{m}_lq": low[m] for m in METRICS},
        "n_lq": low["n"],
        **{k: parsed[k] for k in ("max_epochs", "width", "image_size", "batch_size", "learning_rate")},
    }
    return result


def _parsed(run_dir: Path, files: Sequence[str], overrides: dict[str, Any]) -> dict[str, Any]:
    """The values of a few config ids after the overlays and overrides (as the run saw them)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(run_dir / f) for f in files])
    parser.update(overrides)
    keys = ("max_epochs", "width", "image_size", "batch_size")
    out = {k: parser.get_parsed_content(k) for k in keys}
    out["num_diagnosis"] = len(parser.get_parsed_content("diagnosis_names"))
    out["num_quality"] = len(parser.get_parsed_content("quality_names"))
    out["f1_average"] = parser.get_parsed_content("validate#additional_metrics#diagnosis#f1_average")
    out["learning_rate"] = parser.get_parsed_content("learning_rate")
    return out


def _mean_std(values: Sequence[float], digits: int = 3) -> str:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return "n/a"
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{statistics.mean(vals):.{digits}f} ± {statistics.stdev(vals):.{digits}f}"


def _command(args: argparse.Namespace, bundle: str) -> str:
    """The command that reproduces one bundle's section (output and work folders left out)."""
    parts = ["python benchmarks/mkcnet_demo_results.py"]
    if args.quick:
        parts.append("--quick")
    if [bundle] != DEFAULT_BUNDLES:
        parts.append(f"--bundles {bundle}")
    if args.methods != DEFAULT_METHODS:
        parts.append("--methods " + " ".join(args.methods))
    if args.seeds is not None and args.seeds != DEFAULT_SEEDS:
        parts.append("--seeds " + " ".join(str(s) for s in args.seeds))
    if args.threads != 1:
        parts.append(f"--threads {args.threads}")
    parts += [f"--override {o}" for o in args.override]
    return " ".join(parts)


def summarise(bundle: str, rows: Sequence[dict], args: argparse.Namespace, info: dict[str, Any], total_s: float) -> str:
    """The markdown section of one bundle: set-up, the mean ± std table and the per-run table."""
    first = rows[0]
    seeds = sorted({r["seed"] for r in rows})
    lines = [
        f"## `{bundle}`: MKCNet vs vanilla on the demo data (CPU)",
        "",
        f"`{_command(args, bundle)}`; this bundle's runs took {total_s:.0f} s.",
        "",
        *machine_lines(info),
        f"- Each run: `python -m monai.bundle run` with `train.json` + method overlay + `demo.json` (width "
        f"{first['width']}, {first['image_size'][0]}x{first['image_size'][1]} images, batch {first['batch_size']}, "
        f"{first['max_epochs']} epochs, task LR {first['learning_rate']}; the best validated epoch is kept), then "
        f"`evaluate.json` on the test split ({int(first['n'])} images, {int(first['n_lq'])} of them below the best "
        f"quality grade = 'low q.'), {args.threads} torch thread(s) per run. Seeds {seeds}: mean ± sample std.",
        "",
    ]
    table = []
    for method in dict.fromkeys(r["method"] for r in rows):
        mr = [r for r in rows if r["method"] == method]
        table.append(
            [
                f"`{method}`",
                *(_mean_std([r[m] for r in mr]) for m in METRICS),
                *(_mean_std([r[f"{m}_lq"] for r in mr]) for m in METRICS),
                _mean_std([r["train_s"] for r in mr], 0),
            ]
        )
    headers = ["method", "AUC", "ACC", "F1", "AUC (low q.)", "ACC (low q.)", "F1 (low q.)", "train s"]
    lines += [markdown_table(headers, table), "", "Per run:", ""]
    per_run = [
        [
            f"`{r['method']}`",
            r["seed"],
            *(f"{r[m]:.3f}" for m in METRICS),
            *(f"{r[f'{m}_lq']:.3f}" for m in METRICS),
            f"{r['val_auc']:.3f}" if r["val_auc"] is not None else "n/a",
            r["best_epoch"],
            f"{r['train_s']:.0f}",
            f"{r['eval_s']:.0f}",
        ]
        for r in rows
    ]
    headers = [
        "method", "seed", "AUC", "ACC", "F1", "AUC lq", "ACC lq", "F1 lq",
        "best val AUC", "best epoch", "train s", "eval s",
    ]  # fmt: skip
    lines += [
        markdown_table(headers, per_run),
        "",
        "Times are wall-clock seconds of the `python -m monai.bundle run` processes (including about 5 s of "
        "imports and config parsing), on a machine shared with other jobs.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; returns the exit status."""
    parser = argparse.ArgumentParser(description="MKCNet vs vanilla on the demo data, with the bundles' configs.")
    parser.add_argument("--bundles", nargs="+", default=DEFAULT_BUNDLES, help="bundle names or 'all'")
    parser.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, choices=sorted(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="training seeds (default 0 1 2, quick 0)")
    parser.add_argument("--quick", action="store_true", help="1 seed, 1 epoch, tiny network and data (smoke test)")
    parser.add_argument("--output", type=Path, default=None, help="results page (default docs/results.md; quick: none)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1: robust when shared)")
    parser.add_argument(
        "--override", action="append", default=[], metavar="ID=JSON", help="extra config override, e.g. max_epochs=10"
    )
    args = parser.parse_args(argv)
    bundles = list(MKCNET_BUNDLES) if args.bundles == ["all"] else args.bundles
    for b in bundles:
        if b not in MKCNET_BUNDLES:
            parser.error(f"unknown bundle {b!r}; choose from {MKCNET_BUNDLES} or 'all'")
    seeds = args.seeds if args.seeds is not None else ([0] if args.quick else DEFAULT_SEEDS)
    overrides: dict[str, Any] = dict(QUICK_OVERRIDES) if args.quick else {}
    for item in args.override:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    output = args.output if args.output is not None else (None if args.quick else DEFAULT_OUTPUT)

    with tempfile.TemporaryDirectory(prefix="mkcnet_demo_") as tmp:
        work = args.workdir if args.workdir is not None else Path(tmp)
        for bundle in bundles:
            info = machine_info()
            start = time.perf_counter()
            data_dir = work / bundle / "demo_data"
            bundle_overrides = dict(overrides)
            if args.quick:
                bundle_overrides["demo_num_images"] = 5 * _pairs(bundle)
            rows = []
            for method in args.methods:
                for seed in seeds:
                    r = run_one(bundle, method, seed, work, data_dir, bundle_overrides, args.threads)
                    rows.append(r)
                    print(
                        f"{bundle} {method} seed {seed}: AUC {r['auc']:.3f} ACC {r['acc']:.3f} F1 {r['f1']:.3f} | "
                        f"low quality AUC {r['auc_lq']:.3f} ACC {r['acc_lq']:.3f} F1 {r['f1_lq']:.3f} | "
                        f"train {r['train_s']:.0f} s",
                        flush=True,
                    )
            section = summarise(bundle, rows, args, info, time.perf_counter() - start)
            print()
            print(section)
            if output is not None:
                write_section(output, f"{SECTION}/{bundle}", section, intro=INTRO)
                print(f"written to {output}")
    return 0


def _pairs(bundle: str) -> int:
    """Number of (diagnosis, quality) pairs of a bundle's dataset (the demo needs at least 3 images per pair)."""
    cfg = json.loads((BUNDLES_DIR / bundle / "configs" / "train.json").read_text())
    return len(cfg["diagnosis_names"]) * len(cfg["quality_names"])


if __name__ == "__main__":
    raise SystemExit(main())
