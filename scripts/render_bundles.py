"""Render the five MKCNet bundles from one template and a per-data-set table.

- Template: ``scripts/bundle_template/mkcnet/`` (the files of one bundle, with ``{{name}}`` placeholders).
- Table: ``scripts/bundle_template/mkcnet.yml`` (one entry per bundle: its data-set key, the official training recipe,
  the texts of ``metadata.json`` and ``docs/README.md``).
- Data-set facts (class names, channels, ``k``, F1 averaging, training-set size) are read from the package,
  :data:`monai_iqad.data.IQAD_DATASETS`, so each is written once.

Each rendered bundle is self-contained (every file it needs is in its folder, as the model zoo requires); ``LICENSE``
is the repository's. Placeholders in JSON files: a string that is exactly ``"{{name}}"`` becomes the value (any JSON
type); an object key ``"{{name}}"`` splices the entries of a mapping in its place; a list item ``"{{...name}}"``
splices a list; ``{{name}}`` inside a longer string (and in other files) is replaced by the value as text.

Usage::

    python scripts/render_bundles.py            # (re)write bundles/<name>/ for every bundle of the table
    python scripts/render_bundles.py --check    # exit 1, listing the differences, if a rendered file is stale
"""

from __future__ import annotations

import argparse
import difflib
import importlib.util
import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "scripts" / "bundle_template" / "mkcnet"
TABLE = ROOT / "scripts" / "bundle_template" / "mkcnet.yml"
#: FLOPs per training image and epoch at 256x256 (docs/benchmarks.md: stage I + second-order stage II; vanilla)
FLOP_MKCNET, FLOP_VANILLA, GPU_FLOPS = 680e9, 120e9, 15e12
_PLACEHOLDER = re.compile(r"\{\{(\.\.\.)?([A-Za-z_][A-Za-z0-9_]*)\}\}")

_AUC_TEXT = {
    "macro": "AUC is the macro one-vs-one AUC of the softmax probabilities.",
    "binary": "For this binary task the official code computes the AUC **from the hard predictions** (it then equals "
    "the balanced accuracy, hence AUC ≈ ACC in the table); the bundle reports that number as `auc_official` and the "
    "probability AUC as `auc`, and selects on the probability AUC (`official.json` selects on the official one).",
}
_METRIC_NOTE = {
    "macro": "AUC = macro one-vs-one AUC of the softmax probabilities; F1 = macro F1.",
    "binary": "AUC = AUC of the hard predictions (official code; equals the balanced accuracy); F1 = binary F1 "
    "(positive class 1).",
}
_FOV_TEXT = " and `train#preprocessing#fov_crop` false (the official code does not crop the fundus field of view)"
_F1_TEXT = {"macro": "macro F1", "binary": "binary F1 (positive class 1)"}
_VALIDATION_TEXT = {
    "validation": "on the validation split",
    "test": "on the **test split** (`validate#split: test`), exactly as the official code, which has no DRAC "
    "validation set and selects the checkpoint on its test loader (the paper's DRAC protocol is train-test). The "
    "selected model's test score is therefore optimistic; set `--validate#split validation` with a datalist that "
    "has a separate validation section for an unbiased estimate",
}


def iqad_datasets() -> dict[str, Any]:
    """:data:`monai_iqad.data.IQAD_DATASETS`, read from its module file (a plain dataclass table) without importing
    the package (torch, MONAI), so that ``--check`` takes a fraction of a second."""
    spec = importlib.util.spec_from_file_location("_iqad_datasets", ROOT / "monai_iqad" / "data" / "datasets.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module.IQAD_DATASETS


def context(bundle: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    """Every placeholder value of one bundle: its table entry plus what follows from ``IQAD_DATASETS``."""
    info = iqad_datasets()[entry["dataset"]]
    d, q = list(info.diagnosis_names), list(info.quality_names)
    nd, nq, fundus = len(d), len(q), info.modality == "fundus"
    recipe, readme, paper = entry["recipe"], entry["readme"], entry["paper"]
    flop = recipe["max_epochs"] * info.train_size
    outputs = [f"diagnosis: {n}" for n in d] + [f"quality: {n}" for n in q]
    return {
        **{k: v for k, v in entry.items() if k not in ("recipe", "readme", "paper")},
        **recipe,
        **readme,
        "bundle": bundle,
        "diagnosis_names": d,
        "quality_names": q,
        "num_diagnosis": nd,
        "num_quality": nq,
        "num_outputs": nd + nq,
        "num_auxiliary": info.num_auxiliary,
        "aux_per_class": info.k,
        "in_channels": info.channels,
        "f1_average": info.f1_average,
        "preprocessing_options": {"fov_crop": True} if fundus else {},
        "official_overrides": {"train#preprocessing#fov_crop": False} if fundus else {},
        "pred_classes": f"{nd + nq} probabilities: channels 0-{nd - 1} the diagnosis classes ({', '.join(d)}), "
        f"channels {nd}-{nd + nq - 1} the quality grades ({', '.join(q)}); each block sums to 1",
        "paper_auc": paper["auc"],
        "paper_acc": paper["acc"],
        "paper_f1": paper["f1"],
        "metric_note": _METRIC_NOTE[info.f1_average],
        "references": entry["extra_references"],
        "input_channel_def": {"0": "R", "1": "G", "2": "B"} if info.channels == 3 else {"0": "gray"},
        "output_channel_def": {str(i): n for i, n in enumerate(outputs)},
        # docs/README.md
        "task_lower": entry["task"][0].lower() + entry["task"][1:],
        "split_name": info.official_name.replace("_", "-"),
        "root_name": info.official_name,
        "channel_rows": "\n".join(f"| {i} | {n} |" for i, n in enumerate(outputs)),
        "input_channels": "RGB" if info.channels == 3 else f"{info.channels} channel",
        "value_range_lo": entry["value_range"][0],
        "value_range_hi": entry["value_range"][1],
        "validation_text": _VALIDATION_TEXT[entry["val_split"]],
        "f1_text": _F1_TEXT[info.f1_average],
        "official_fov_text": _FOV_TEXT if fundus else "",
        **{f"paper_{k}_pct": f"{paper[k] * 100:.2f}" for k in ("auc", "acc", "f1")},
        "paper_auc_text": _AUC_TEXT[info.f1_average],
        "eflop": f"{FLOP_MKCNET * flop / 1e18:.2g}",
        "train_size": f"{info.train_size:,}",
        "gpu_hours": f"{FLOP_MKCNET * flop / GPU_FLOPS / 3600:.0f}",
        "gpu_hours_vanilla": f"{FLOP_VANILLA * flop / GPU_FLOPS / 3600:.1f}",
        "reference_lines": "\n".join(f"- {r}" for r in entry["extra_references"]),
    }


def _value(ctx: Mapping[str, Any], name: str, where: str) -> Any:
    if name not in ctx:
        raise KeyError(f"{where}: unknown placeholder {{{{{name}}}}} (known: {sorted(ctx)})")
    return ctx[name]


def _text(s: str, ctx: Mapping[str, Any], where: str) -> str:
    return _PLACEHOLDER.sub(lambda m: str(_value(ctx, m.group(2), where)), s)


def _fill(node: Any, ctx: Mapping[str, Any], where: str) -> Any:
    """Substitute the placeholders of a parsed JSON template (see the module docstring)."""
    if isinstance(node, str):
        whole = _PLACEHOLDER.fullmatch(node)
        return _value(ctx, whole.group(2), where) if whole and not whole.group(1) else _text(node, ctx, where)
    if isinstance(node, list):
        out: list[Any] = []
        for item in node:
            splice = _PLACEHOLDER.fullmatch(item) if isinstance(item, str) else None
            if splice and splice.group(1):
                out.extend(_value(ctx, splice.group(2), where))
            else:
                out.append(_fill(item, ctx, where))
        return out
    if isinstance(node, dict):
        filled: dict[str, Any] = {}
        for key, value in node.items():
            splice = _PLACEHOLDER.fullmatch(key)
            if splice:
                filled.update(_fill(_value(ctx, splice.group(2), where), ctx, where))
            else:
                filled[_text(key, ctx, where)] = _fill(value, ctx, where)
        return filled
    return node


def render(bundle: str, entry: Mapping[str, Any]) -> dict[str, str]:
    """Relative path → text of every file of ``bundle``."""
    ctx = context(bundle, entry)
    files = {"LICENSE": (ROOT / "LICENSE").read_text(encoding="utf-8")}
    for path in sorted(p for p in TEMPLATE.rglob("*") if p.is_file()):
        rel = path.relative_to(TEMPLATE).as_posix()
        text = path.read_text(encoding="utf-8")
        where = f"{bundle}: {rel}"
        if path.suffix == ".json":
            files[rel] = json.dumps(_fill(json.loads(text), ctx, where), indent=4, ensure_ascii=False) + "\n"
        else:
            files[rel] = _text(text, ctx, where)
    return files


def load_table(path: Path = TABLE) -> dict[str, dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a rendered file differs")
    parser.add_argument("--bundles-dir", type=Path, default=ROOT / "bundles", help="where the bundles live")
    args = parser.parse_args(argv)
    stale = []
    for bundle, entry in load_table().items():
        for rel, text in render(bundle, entry).items():
            path = args.bundles_dir / bundle / rel
            old = path.read_text(encoding="utf-8") if path.is_file() else None
            if old == text:
                continue
            if not args.check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
                print(f"wrote {path}")
                continue
            diff = list(difflib.unified_diff((old or "").splitlines(), text.splitlines(), "on disk", "rendered", n=0))
            changed = sum(1 for line in diff[2:] if line[:1] in "+-")
            stale.append(f"{bundle}/{rel}: " + ("missing" if old is None else f"{changed} lines differ"))
            stale += [f"    {line}" for line in diff[2:8]]
    if stale:
        print("Rendered MKCNet bundles are out of date (edit scripts/bundle_template/, then run "
              "`python scripts/render_bundles.py`):\n" + "\n".join(stale))  # fmt: skip
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
