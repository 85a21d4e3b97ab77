"""Resume and fine-tune at the bundle level (real subprocesses, CPU, fixed seed).

- A run is SIGKILLed right after epoch 1 (a test-only overlay adds a handler at ``EPOCH_COMPLETED`` of epoch 1,
  registered after the bundle's checkpoint saver, that kills its own process), then continued with
  ``--resume true``: its final checkpoint (network, domain classifier or meta learner, optimizers, schedulers,
  trainer state) must equal, with ``torch.equal``, the one of an uninterrupted run of the same config.
- ``--finetune true`` loads the weights of ``models/model.pt`` only: fresh optimizer, trainer from epoch 0.
- ``models/model.pt`` is only replaced by a better model: a later run that does not beat the recorded score leaves
  the file (and its ``model.pt.json`` record) untouched.

Bundles: the SAQM bundle(s) in semi-supervised DA mode (source and target loaders), and the EyeQ MKCNet bundle.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch
from bundle_testing import (
    bundle_dir,
    bundle_kind,
    bundle_names,
    copy_bundle,
    reference_run,
    run_bundle,
    tiny_overrides,
    torch_state_equal,
    train_configs,
)

BUNDLES = [
    n
    for n in bundle_names()
    if (bundle_dir(n) / "configs" / "train.json").is_file()
    and (bundle_kind(n) == "saqm" or n == "fundus_eyeq_mkcnet_iqad")
]
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not BUNDLES, reason="no SAQM or EyeQ bundle with a train.json")]

# (no "import" in these expressions: MONAI would try to parse them as import statements)
_EVENTS = "monai.engines.workflow.Events"
#: kills the process at the end of epoch 1, after every handler the trainer was built with (checkpoint saver included)
KILL_OVERLAY = {
    "run": [
        f"$@train#trainer.add_event_handler({_EVENTS}.EPOCH_COMPLETED(once=1), "
        f"lambda engine: os.kill(os.getpid(), {int(signal.SIGKILL)}))",
        "$@train#trainer.run()",
    ]
}
#: records the network weights and the optimizer state once training has started (after the bundle's loaders ran)
START_OVERLAY = {
    "run": [
        f"$@train#trainer.add_event_handler({_EVENTS}.STARTED, lambda engine: torch.save("
        "{'network': getattr(@network, 'module', @network).state_dict(), "
        "'optimizer_state': len(@train#trainer.optimizer.state)}, "
        "os.path.join(@ckpt_dir, 'start_state.pt')))",
        "$@train#trainer.run()",
    ]
}


def _overlay(tmp_path: Path, name: str, content: dict) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(content), encoding="utf-8")
    return path


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.parametrize("name", BUNDLES)
def test_resume_after_sigkill_equals_uninterrupted_run(name, tmp_path):
    reference = reference_run(name)  # 2 epochs, uninterrupted
    bundle = copy_bundle(name, tmp_path / name)
    configs = train_configs(name, bundle)
    overrides = tiny_overrides(name)

    killed = run_bundle(bundle, [*configs, _overlay(tmp_path, "kill.json", KILL_OVERLAY)], overrides, check=False)
    assert killed.returncode == -signal.SIGKILL, f"exit {killed.returncode}, not a SIGKILL:\n{killed.stderr[-3000:]}"
    interrupted = _load(bundle / "models" / "checkpoint.pt")
    trainer = interrupted["trainer"]
    assert trainer["iteration"] == trainer["epoch_length"], "the checkpoint of epoch 1 was written before the kill"

    run_bundle(bundle, configs, {**overrides, "resume": "true"})  # as typed on the command line: --resume true
    final = _load(bundle / "models" / "checkpoint.pt")
    expected = _load(reference / "models" / "checkpoint.pt")
    assert final["trainer"] == expected["trainer"]
    assert final["trainer"]["iteration"] == 2 * final["trainer"]["epoch_length"], "resumed to the same final epoch"
    kinds = {"saqm": {"network", "domain_classifier", "optimizer"}, "mkcnet": {"network", "meta_learner"}}
    assert kinds.get(bundle_kind(name), set()) <= set(final), f"checkpoint holds {sorted(final)}"
    assert any("optim" in k for k in final), f"no optimizer state in the checkpoint ({sorted(final)})"
    diffs = torch_state_equal(final, expected)
    assert not diffs, f"resumed run differs from the uninterrupted run at {diffs[:10]}"
    leftovers = [p.name for p in (bundle / "models").iterdir() if p.name.endswith(".tmp")]
    assert not leftovers, f"temporary files left by the atomic writes: {leftovers}"


@pytest.mark.parametrize("name", BUNDLES)
def test_finetune_loads_weights_only_and_keeps_the_better_model(name, tmp_path):
    reference = reference_run(name)
    bundle = copy_bundle(name, tmp_path / name)
    for f in ("model.pt", "model.pt.json", "checkpoint.pt"):
        shutil.copy2(reference / "models" / f, bundle / "models" / f)
    model = bundle / "models" / "model.pt"
    record = bundle / "models" / "model.pt.json"
    # the saved model scored the best possible value: nothing this run does can beat it
    best = json.loads(record.read_text(encoding="utf-8"))
    best["value"] = 1.0
    record.write_text(json.dumps(best), encoding="utf-8")
    before = (os.stat(model).st_ino, model.read_bytes(), record.read_text(encoding="utf-8"))

    configs = [*train_configs(name, bundle), _overlay(tmp_path, "start.json", START_OVERLAY)]
    run_bundle(bundle, configs, {**tiny_overrides(name, max_epochs=1), "finetune": "true"})

    start = _load(bundle / "models" / "start_state.pt")
    assert not torch_state_equal(start["network"], _load(model)), "training started from models/model.pt"
    assert start["optimizer_state"] == 0, "fine-tuning starts with a fresh optimizer (weights only)"
    trainer = _load(bundle / "models" / "checkpoint.pt")["trainer"]
    assert trainer["iteration"] == trainer["epoch_length"] and trainer["max_epochs"] == 1, (
        "fine-tuning starts at epoch 0 (not at the epoch of the earlier checkpoint)"
    )
    after = (os.stat(model).st_ino, model.read_bytes(), record.read_text(encoding="utf-8"))
    assert after == before, "models/model.pt was replaced by a model that does not beat the recorded one"
