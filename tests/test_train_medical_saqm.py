"""``scripts/train_medical_saqm.py``: the one-command recipe of the shipped medical router, run end to end on the
"tiny" corpus preset (1 + 2 epochs at width 0.0625), then rerun (every step skipped) and resumed after a lost step."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from bundle_testing import REPO, subprocess_env

from monai_iqad.utils.io import file_sha256

SCRIPT = REPO / "scripts" / "train_medical_saqm.py"
TINY = [
    "--preset0", "tiny", "--preset1", "tiny", "--epochs0", "1", "--epochs1", "2", "--select-epochs", "1,2",
    "--width", "0.0625", "--override", "batch_size=4", "--select-max-drop", "1", "--select-floor", "-1",
]  # fmt: skip


def _module():
    spec = importlib.util.spec_from_file_location("train_medical_saqm", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _recipe(out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(SCRIPT), "--out", str(out), *TINY, *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=subprocess_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("recipe")
    return out, _recipe(out)


def test_recipe_builds_a_router_of_its_two_experts(tiny_run):
    from monai_iqad.networks import SAQMRouter

    out, proc = tiny_run
    router = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    assert SAQMRouter.is_state_dict(router)
    # route per modality plane (CR, CT, MR, US, fundus, natural), then unknown: radiographs -> expert 1
    assert router["route"].tolist() == [1, 0, 0, 0, 0, 0, 0]
    expert0 = torch.load(out / "expert0" / "model.pt", map_location="cpu", weights_only=True)
    selected = torch.load(out / "expert1" / "selected.pt", map_location="cpu", weights_only=True)
    for k, state in ((0, expert0), (1, selected)):
        got = SAQMRouter.expert_state_dict(router, k)
        assert set(got) == set(state) and all(torch.equal(got[n], state[n]) for n in state)
    # expert 1 was warm-started from expert 0 ('$None': the whole file, not an expert of a router), with 6 planes more
    first = next(n for n in selected if n.endswith("weight") and selected[n].ndim == 4)
    assert selected[first].shape[1] == expert0[first].shape[1] + 6
    # the selection compared exactly the requested epochs, expert 0 the reference
    assert re.findall(r"model_epoch=(\d+)\.pt: mean within-ladder", proc.stdout) == ["1", "2"]
    # the trainings run single-threaded (bit for bit), the scoring steps with --score-threads (default 2)
    assert re.search(r"^\[expert1\] .*--num_threads 1\b", proc.stdout, re.M)
    assert re.search(r"^\[selection\] OMP_NUM_THREADS=2 .*iqa_ladder\.py --threads 2 ", proc.stdout, re.M)
    log = json.loads((out / "recipe.json").read_text())
    assert set(log["steps"]) == {"corpus_tiny", "expert0", "expert1", "selection", "router"}
    assert log["sha256"] == file_sha256(out / "model.pt") and log["equals_shipped"] is False
    assert (log["threads"], log["score_threads"]) == (1, 2)
    assert "differs from the shipped models/model.pt" in proc.stdout


def test_recipe_rerun_skips_done_steps_and_resumes_a_lost_one(tiny_run):
    out, _ = tiny_run
    before = json.loads((out / "recipe.json").read_text())["sha256"]
    (out / "model.pt").unlink()  # a run stopped before its last step
    proc = _recipe(out)
    assert "[expert0] 1 epochs already trained" in proc.stdout and "[expert1] 2 epochs already trained" in proc.stdout
    assert "[selection]" not in proc.stdout and "[router]" in proc.stdout
    log = json.loads((out / "recipe.json").read_text())
    assert log["sha256"] == before and len(log["steps"]["router"]) == 2 and len(log["steps"]["expert0"]) == 1
    # --verify: exit 1 when the result is not the shipped file
    cmd = [sys.executable, str(SCRIPT), "--out", str(out), *TINY, "--verify"]
    assert subprocess.run(cmd, capture_output=True, env=subprocess_env(), timeout=120).returncode == 1


def test_recipe_from_a_router_expert0_regenerates_the_router(tiny_run, tmp_path):
    # --expert0 ROUTER: expert 0 is taken from the router (not trained) and steps 3-4 rerun; same seed, same CPU,
    # so the result is the first run's router bit for bit (how 0.2.0 is regenerated from its own expert 0)
    out, _ = tiny_run
    again = tmp_path / "again"
    proc = _recipe(again, "--expert0", str(out / "model.pt"))
    assert "(not trained)" in proc.stdout and "[corpus_tiny]" in proc.stdout
    log = json.loads((again / "recipe.json").read_text())
    assert "expert0" not in log["steps"] and set(log["steps"]) == {"corpus_tiny", "expert1", "selection", "router"}
    assert log["expert0_from"]["sha256"] == log["sha256"] == json.loads((out / "recipe.json").read_text())["sha256"]
    # a rerun with the same source is fine (nothing redone); another expert 0 in that folder is refused, and so is
    # a from-scratch run (it would train an expert 0 under an expert 1 that was not trained from it)
    module = _module()
    assert module.main(["--out", str(again), *TINY, "--expert0", str(out / "model.pt")]) == 0
    with pytest.raises(SystemExit, match="was not trained"):
        module.main(["--out", str(again), *TINY])
    partial = tmp_path / "partial" / "expert0"  # a from-scratch run stopped before its first validation
    partial.mkdir(parents=True)
    torch.save({"trainer": {"iteration": 5, "epoch_length": 5}}, partial / "checkpoint.pt")
    with pytest.raises(SystemExit, match="holds a trained expert 0"):
        module.main(["--out", str(partial.parent), *TINY, "--expert0", str(again / "model.pt")])
    other = tmp_path / "other.pt"
    state = torch.load(out / "expert0" / "model.pt", map_location="cpu", weights_only=True)
    torch.save({k: v + 1 for k, v in state.items()}, other)
    for source, message in ((other, "holds other weights"), (out / "recipe.json", "cannot be read as a checkpoint")):
        with pytest.raises(SystemExit) as e:
            module.main(["--out", str(again), *TINY, "--expert0", str(source)])
        assert message in str(e.value)
    torch.save({"weight": torch.zeros(1)}, other)
    with pytest.raises(SystemExit, match="neither a SAQM checkpoint nor a SAQMRouter"):
        module.main(["--out", str(tmp_path / "third"), *TINY, "--expert0", str(other)])


def test_trained_epochs_reads_ignite_state(tmp_path):
    module = _module()
    assert module.trained_epochs(tmp_path) == 0
    torch.save({"trainer": {"iteration": 75, "epoch_length": 25, "max_epochs": 34}}, tmp_path / "checkpoint.pt")
    assert module.trained_epochs(tmp_path) == 3


def test_recipe_refuses_models_folder_and_bad_arguments():
    module = _module()
    for args in (
        ["--out", str(module.BUNDLE / "models")],
        ["--epochs1", "10", "--select-epochs", "12"],
        ["--override", "batch_size"],
        ["--score-threads", "0"],
    ):
        with pytest.raises(SystemExit) as e:
            module.main(args)
        assert e.value.code == 2
    listed = re.search(r"hash_val: \"(\w+)\"", (module.BUNDLE / "large_files.yml").read_text())[1]
    assert module.shipped_sha256() == listed == file_sha256(module.BUNDLE / "models" / "model.pt")


def test_kernel_warnings_name_the_step_this_cpu_cannot_regenerate():
    """Expert 0 was shipped from a CPU with AVX512-BF16 and without AMX-BF16, expert 1 from one with AMX-BF16: each
    CPU kind warns about the other's step, a CPU that emulates bf16 about both, a cap (``--isa0``/``--isa1``) counts as
    other kernels, and unknown flags give no warning."""
    warnings = _module().kernel_warnings
    no_amx, amx = {"avx512f", "avx512_bf16"}, {"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}
    (only,) = warnings(no_amx, "", "", train_expert0=True)
    assert "expert 1" in only
    (only,) = warnings(amx, "", "", train_expert0=True)
    assert "expert 0" in only
    assert warnings(amx, "", "", train_expert0=False) == []  # --expert0 on an AMX CPU: the documented regeneration
    assert len(warnings(amx, "AVX512_CORE_BF16", "", train_expert0=True)) == 1
    assert len(warnings(amx, "", "AVX512_CORE_BF16", train_expert0=False)) == 1
    assert len(warnings(no_amx, "AVX512_CORE_BF16", "", train_expert0=True)) == 2
    assert warnings(set(), "", "", train_expert0=True) == []
    # a CPU that emulates bf16 (stop 38: its expert 0 reached validation 0.6919, not 0.6832) regenerates neither
    emulated = warnings({"avx2", "avx512f", "avx512_vnni"}, "", "", train_expert0=True)
    assert [w.split(" was trained")[0] for w in emulated] == ["the shipped expert 0", "the shipped expert 1"]
    assert all("without native bf16" in w for w in emulated)
