"""Build the embedded demo data sets (SAQM natural → ultrasound, and the five MKCNet IQAD demos) from the shell.

``python -m monai_iqad.demo --out DIR [--dataset saqm|eyeq|deepdr|drac|iqad_ct|iqad_cxr|all]`` (``python -m
monai_iqad.data`` runs the same command line).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from .iqad import IQAD_DEMO_DATASETS, make_iqad_demo_data
from .saqm import make_demo_data

__all__ = ["main"]


def main(argv: Sequence[str] | None = None, prog: str = "python -m monai_iqad.demo") -> int:
    """Command line: ``python -m monai_iqad.demo --out DIR [--dataset NAME|all] [--seed N] [--image-size N]``.

    Args:
        argv: arguments (default: ``sys.argv[1:]``).
        prog: program name shown in the usage line.

    Returns:
        The exit status (0).
    """
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="output folder (for --dataset all: one sub-folder per data set)")
    parser.add_argument("--dataset", default="saqm", choices=("saqm", *IQAD_DEMO_DATASETS, "all"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=None, help="default: 96 (saqm), 64 (IQAD demos)")
    parser.add_argument("--num-images", type=int, default=None, help="IQAD demos only: total, split 60/20/20")
    for split in ("train", "val", "test"):
        parser.add_argument(f"--num-{split}", type=int, default=None, help=f"IQAD demos only: {split} images")
    parser.add_argument("--label-all", action="store_true", help="saqm: give every target training image its MOS")
    args = parser.parse_args(argv)
    names = ("saqm", *IQAD_DEMO_DATASETS) if args.dataset == "all" else (args.dataset,)
    for name in names:
        out = Path(args.out) / name if args.dataset == "all" else Path(args.out)
        start = time.perf_counter()
        if name == "saqm":
            path = make_demo_data(out, seed=args.seed, image_size=args.image_size or 96, label_all=args.label_all)
        else:
            try:
                path = make_iqad_demo_data(
                    out,
                    name,
                    seed=args.seed,
                    num_images=args.num_images,
                    image_size=args.image_size or 64,
                    num_train=args.num_train,
                    num_val=args.num_val,
                    num_test=args.num_test,
                )
            except RuntimeError as err:
                if args.dataset != "all":
                    raise
                print(f"skipped {name}: {err}")
                continue
        print(f"{name}: {path} ({time.perf_counter() - start:.1f} s)")
    return 0
