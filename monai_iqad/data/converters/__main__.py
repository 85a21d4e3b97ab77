"""Command line: ``python -m monai_iqad.data.converters <dataset> --root ROOT --out DATALIST.json [options]``.

Examples::

    python -m monai_iqad.data.converters tid2013 --root /data/tid2013 --out datalists/tid2013.json
    python -m monai_iqad.data.converters md72 --root /data/md72/mos.csv --out datalists/md72.json \
        --labelled-fraction 0.2
    python -m monai_iqad.data.converters iqad_ct --root /data/mkcnet --out datalists/iqad_ct.json
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from monai_iqad.data.converters import (
    ConversionError,
    convert_deepdr,
    convert_drac,
    convert_eyeq,
    convert_iqad_ct,
    convert_iqad_cxr,
    convert_md72,
    convert_tid2013,
)


def _md72(args: argparse.Namespace) -> Path:
    root = Path(args.root)
    csv_path = Path(args.csv) if args.csv else root
    if csv_path.is_dir():
        found = sorted(csv_path.glob("*.csv"))
        if len(found) != 1:
            raise ConversionError(f"{csv_path}: pass --csv (found {len(found)} CSV files in the folder)")
        csv_path = found[0]
    image_root = args.image_root or (str(root) if args.csv and root.is_dir() else None)
    return convert_md72(
        csv_path,
        args.out,
        image_root=image_root,
        labelled_fraction=args.labelled_fraction,
        val_fraction=args.val_fraction if args.val_fraction is not None else 0.0,
        test_fraction=args.test_fraction if args.test_fraction is not None else 0.3,
        seed=args.seed,
        check_files=not args.no_check,
    )


def _tid2013(args: argparse.Namespace) -> Path:
    return convert_tid2013(
        args.root,
        args.out,
        distortions=args.distortions or None,
        levels=args.levels or None,
        val_fraction=args.val_fraction if args.val_fraction is not None else 0.2,
        test_fraction=args.test_fraction if args.test_fraction is not None else 0.0,
        seed=args.seed,
        check_files=not args.no_check,
    )


def _mkcnet(fn, default_val: float, holdout: bool = False):
    def run(args: argparse.Namespace) -> Path:
        kwargs = dict(
            split_dir=args.split_dir,
            image_root=args.image_root,
            seed=args.seed,
            check_files=not args.no_check,
            val_fraction=args.val_fraction if args.val_fraction is not None else default_val,
        )
        if fn is convert_drac:
            kwargs["test_file"] = args.test_file
        if holdout and args.test_fraction is not None:
            kwargs["holdout_fraction"] = args.test_fraction
        return fn(args.root, args.out, **kwargs)

    return run


COMMANDS = {
    "tid2013": (_tid2013, "TID2013 source domain (mos_with_names.txt + distorted_images/)"),
    "md72": (_md72, "target domain from a path,mos CSV (--root CSV or folder with one CSV)"),
    "eyeq": (_mkcnet(convert_eyeq, 0.1), "EyeQ: MKCNet split files or official Label_EyeQ_*.csv"),
    "deepdr": (_mkcnet(convert_deepdr, 0.1, holdout=True), "DeepDRiD: MKCNet split files or regular-fundus CSVs"),
    "drac": (_mkcnet(convert_drac, 0.0, holdout=True), "DRAC 2022 OCTA: MKCNet train.txt + test file/held-out"),
    "iqad_ct": (_mkcnet(convert_iqad_ct, 0.1), "IQAD-CT: MKCNet split files (IQAD_CT/ or IQAD-CT/)"),
    "iqad_cxr": (_mkcnet(convert_iqad_cxr, 0.1), "IQAD-CXR: MKCNet split files (IQAD_CXR/ or IQAD-CXR/)"),
}


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the converter CLI."""
    parser = argparse.ArgumentParser(
        prog="python -m monai_iqad.data.converters", description="Convert a public dataset layout to a MONAI datalist."
    )
    commands = "; ".join(f"{k}: {v[1]}" for k, v in COMMANDS.items())
    parser.add_argument("dataset", choices=sorted(COMMANDS), help=commands)
    parser.add_argument("--root", required=True, help="dataset root folder (md72: the CSV or its folder)")
    parser.add_argument("--out", required=True, help="output datalist JSON")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-fraction", type=float, default=None, help="validation share when no split is given")
    parser.add_argument("--test-fraction", type=float, default=None, help="held-out test share when no split is given")
    parser.add_argument("--image-root", default=None, help="folder the image paths are relative to")
    parser.add_argument("--split-dir", default=None, help="MKCNet: folder of train.txt/val.txt/test.txt")
    parser.add_argument("--test-file", default=None, help="DRAC: a labelled test split file")
    parser.add_argument("--csv", default=None, help="md72: the path,mos CSV (then --root is the image folder)")
    parser.add_argument("--labelled-fraction", type=float, default=None, help="md72: share of labelled targets")
    parser.add_argument("--distortions", type=int, nargs="*", default=[9], help="tid2013: distortion types")
    parser.add_argument("--levels", type=int, nargs="*", default=[1, 2, 3, 4, 5], help="tid2013: levels")
    parser.add_argument("--no-check", action="store_true", help="do not check that the images exist")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the converter CLI; returns the exit status (0 ok, 2 conversion error)."""
    args = build_parser().parse_args(argv)
    try:
        out = COMMANDS[args.dataset][0](args)
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
