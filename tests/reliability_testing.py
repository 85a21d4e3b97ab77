"""Helpers of the reliability tests (issue 15): run a bundle like a user does, on a tiny SAQM datalist."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from monai_iqad.utils.errors import DEBUG_ENV

REPO = Path(__file__).resolve().parents[1]


def run_bundle_cli(bundle: str, args: Sequence[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run ARGS`` in ``bundles/<bundle>`` (one thread, no debug flag), output captured."""
    env = {k: v for k, v in os.environ.items() if k != DEBUG_ENV}
    env.update(OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "monai.bundle", "run", *args]
    return subprocess.run(cmd, cwd=REPO / "bundles" / bundle, env=env, capture_output=True, text=True, timeout=timeout)


def tiny_saqm_run_args(folder: Path, target_train_mos: float | None) -> list[str]:
    """Write a two-image SAQM datalist (a source item, a target item with ``target_train_mos``, two validation
    items) into ``folder``; return the overrides of a tiny 2-epoch training on it (outputs inside ``folder``)."""
    rng = np.random.default_rng(0)
    for name in ("s.png", "t.png"):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / name)
    target = {"image": "t.png", "mos": target_train_mos, "domain": "target"}
    datalist = {
        "mos_range": {"source": [0, 9], "target": [1, 5]},
        "training": [{"image": "s.png", "mos": 4.0, "domain": "source"}, target],
        "validation": [{"image": "t.png", "mos": 3.0, "domain": "target"}] * 2,
    }
    (folder / "datalist.json").write_text(json.dumps(datalist))
    return [
        "--config_file",
        "configs/train.json",
        "--dataset_dir",
        str(folder),
        "--output_dir",
        str(folder / "eval"),
        "--ckpt_dir",
        str(folder / "models"),
        "--width",
        "0.0625",
        "--num_workers",
        "0",
        "--max_epochs",
        "2",
    ]
