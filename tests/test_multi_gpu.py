"""Multi-process (``torchrun``) training and evaluation overlays, run for real with 2 CPU processes and gloo.

A test-only overlay (written to the test's temporary folder, never into the bundle) makes every rank save its
trained weights (and, for SAQM, the indices its samplers drew) in ``finalize``. Checked: both ranks finish, only
rank 0 logs and saves (one TensorBoard event file, one metrics line per epoch, ``models/checkpoint.pt``), both
loaders are sharded per rank, and the parameters of both ranks are identical after training (DDP keeps them in step).
"""

from __future__ import annotations

import csv
import json
import math
import re
import sys
import warnings
from pathlib import Path

import pytest
import torch
from bundle_testing import (
    bundle_command,
    bundle_dir,
    bundle_kind,
    bundle_names,
    copy_bundle,
    demo_dataset_dir,
    read_json,
    subprocess_env,
    tiny_overrides,
    torch_state_equal,
    train_configs,
)

torch_dist = pytest.importorskip("torch.distributed")
pytestmark = pytest.mark.skipif(
    not torch_dist.is_available() or not torch_dist.is_gloo_available(), reason="torch.distributed with gloo needed"
)

EYEQ = "fundus_eyeq_mkcnet_iqad"
SAQM = [n for n in bundle_names() if bundle_kind(n) == "saqm"]
RUN_BUNDLES = SAQM + ([EYEQ] if EYEQ in bundle_names() else [])
OVERLAYS = [n for n in bundle_names() if (bundle_dir(n) / "configs" / "multi_gpu_train.json").is_file()]

_RANK = "torch.distributed.get_rank()"
#: objects trained with DDP, per bundle kind (config ids)
TRAINED = {"saqm": ("network", "domain_head"), "mkcnet": ("network", "meta_learner")}


def _rank_overlay(kind: str | None) -> dict:
    """``finalize``: each rank saves its weights (and SAQM sampler shards) to ``ckpt_dir/rank{r}.pt``, then closes."""
    state = ", ".join(
        f"'{k}': getattr(@{k}, 'module', @{k}).state_dict(), "
        f"'{k}/parameters': [n for n, _ in getattr(@{k}, 'module', @{k}).named_parameters()]"
        for k in TRAINED.get(kind, ("network",))
    )
    if kind == "saqm":
        state += ", 'source_shard': list(iter(@train#sampler)), 'target_shard': list(iter(@train#target_sampler))"
    return {
        "finalize": [
            f"$torch.save({{{state}}}, os.path.join(@ckpt_dir, 'rank' + str({_RANK}) + '.pt'))",
            "$@summary_writer.close() if @summary_writer is not None else None",
            "$torch.distributed.destroy_process_group() if torch.distributed.is_initialized() else None",
        ]
    }


def _torchrun(bundle: Path, configs: list, overrides: dict, timeout: float = 900):
    import subprocess

    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
        *bundle_command(configs, overrides),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=bundle, env=subprocess_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f"torchrun failed (exit {proc.returncode}):\n--- stdout\n{proc.stdout[-4000:]}\n"
        f"--- stderr\n{proc.stderr[-8000:]}"
    )
    return proc


@pytest.mark.parametrize("name", OVERLAYS)
def test_multi_gpu_overlays_merge(name):
    """The overlays parse over ``train.json`` and follow the conventions: DDP network, per-rank handler filtering,
    a process group opened in ``initialize`` and destroyed in ``finalize``."""
    from monai.bundle import ConfigParser

    configs = bundle_dir(name) / "configs"
    pairs = (("multi_gpu_train.json", ["train.json"]), ("multi_gpu_evaluate.json", ["train.json", "evaluate.json"]))
    for overlay, base in pairs:
        assert (configs / overlay).is_file(), f"{name} lacks configs/{overlay}"
        parser = ConfigParser()
        parser.read_config([str(configs / f) for f in (*base, overlay)])
        text = json.dumps(read_json(configs / overlay))
        assert "init_process_group" in text and "destroy_process_group" in text
        assert "LOCAL_RANK" in text, "device from LOCAL_RANK"
        assert "for_this_rank" in text, "only rank 0 logs"
        if overlay == "multi_gpu_train.json":
            assert "DistributedDataParallel" in json.dumps(parser["network"])
            assert "for_this_rank(@train#handlers)" in str(parser["train"]["trainer"]["train_handlers"])
            if bundle_kind(name) == "saqm":
                assert "DistributedDataParallel" in json.dumps(parser["domain_head"]), "DDP on the domain head too"


@pytest.mark.slow
@pytest.mark.parametrize("name", RUN_BUNDLES)
def test_torchrun_two_processes(name, tmp_path):
    if not (bundle_dir(name) / "configs" / "multi_gpu_train.json").is_file():
        pytest.skip(f"{name}: configs/multi_gpu_train.json is not there yet (missing overlay file)")
    kind = bundle_kind(name)
    bundle = copy_bundle(name, tmp_path / name)
    overlay = tmp_path / "rank_state.json"
    overlay.write_text(json.dumps(_rank_overlay(kind)), encoding="utf-8")
    overrides = tiny_overrides(name)
    configs = [*train_configs(name, bundle), "configs/multi_gpu_train.json", overlay]
    proc = _torchrun(bundle, configs, overrides)

    models = bundle / "models"
    ranks = [models / "rank0.pt", models / "rank1.pt"]
    assert all(r.is_file() for r in ranks), "both ranks must finish (finalize ran on each)"
    r0, r1 = (torch.load(r, weights_only=True) for r in ranks)
    for key in TRAINED.get(kind, ("network",)):
        params = r0[f"{key}/parameters"]
        diffs = torch_state_equal({k: r0[key][k] for k in params}, {k: r1[key][k] for k in params})
        assert not diffs, f"{key}: parameters differ between ranks at {diffs[:5]}"
        buffers = torch_state_equal(r0[key], r1[key])
        if key == "network":  # DDP broadcasts rank 0's buffers (e.g. BatchNorm statistics) at every forward
            assert not buffers, f"network buffers differ between ranks at {buffers[:5]}"
        elif buffers:  # modules synchronised by hand (all-reduced gradients) keep per-rank running statistics
            warnings.warn(f"{name}: {key} buffers differ between ranks ({len(buffers)}: {buffers[0]}...)", stacklevel=1)
    ckpt = torch.load(models / "checkpoint.pt", weights_only=True)
    assert not torch_state_equal(ckpt["network"], r0["network"]), "rank 0 saved the final weights"
    assert len(list((bundle / "eval").glob("events.out.tfevents.*"))) == 1, "only rank 0 writes TensorBoard events"
    output = proc.stdout + proc.stderr
    epochs = overrides["max_epochs"]
    assert len(re.findall(r"Epoch\[1\] Metrics", output)) == 1, "validation metrics logged once (rank 0)"
    assert len(re.findall(r"Epoch\[\d+\] Complete", output)) >= epochs

    if kind == "saqm":
        datalist = read_json(demo_dataset_dir(name) / "datalist.json")["training"]
        n_source = sum(d["domain"] == "source" for d in datalist)
        n_target = sum(d["domain"] == "target" for d in datalist)
        for key, n in (("source_shard", n_source), ("target_shard", n_target)):
            s0, s1 = r0[key], r1[key]
            assert len(s0) == len(s1) == math.ceil(n / 2), f"{key}: {len(s0)}/{len(s1)} of {n}"
            assert set(s0) | set(s1) == set(range(n)), f"{key}: the two shards cover the data"
        assert ckpt["trainer"]["epoch_length"] == math.ceil(math.ceil(n_source / 2) / overrides["batch_size"])

        # multi-process evaluation of the model trained above: every test image scored once, metrics saved once
        configs = [*train_configs(name, bundle), "configs/evaluate.json", "configs/multi_gpu_evaluate.json"]
        proc = _torchrun(bundle, configs, overrides)
        with open(bundle / "eval" / "predictions.csv", newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        test_items = read_json(demo_dataset_dir(name) / "datalist.json")["test"]
        assert sorted(r["filename"] for r in rows) == sorted({r["filename"] for r in rows})
        assert len(rows) == len(test_items), "both ranks' shards are gathered, no image twice"
        assert (bundle / "eval" / "metrics.csv").is_file()
