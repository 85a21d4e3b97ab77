"""Issue 15, checkpoints: damaged files named with a safe hint, stale temporaries removed, missing ones explained."""

from __future__ import annotations

import os
import zipfile

import pytest
import torch
from ignite.engine import Engine, Events
from reliability_testing import run_bundle_cli, tiny_saqm_run_args

from monai_iqad.handlers import BestModelSaver, ResumeCheckpointLoader, TrainedModelLoader, TrainingCheckpointSaver
from monai_iqad.handlers.checkpoint_loader import check_checkpoint_file
from monai_iqad.utils.errors import CheckpointError, CheckpointNotFoundError


class Custom:
    """An object that a weights-only load refuses."""


def _engine(max_epochs: int = 1) -> Engine:
    engine = Engine(lambda e, b: None)
    engine.state.max_epochs = max_epochs
    return engine


def _resume(path, net) -> Engine:
    engine = _engine()
    ResumeCheckpointLoader(load_path=str(path), load_dict={"network": net}).attach(engine)
    return engine


def _damaged(tmp_path, kind: str):
    net = torch.nn.Linear(3, 2)
    path = tmp_path / "checkpoint.pt"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\n")
    elif kind == "truncated":
        torch.save({"network": net.state_dict(), "trainer": {"epoch": 1}}, path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "corrupt_member":
        torch.save({"network": net.state_dict(), "trainer": _engine().state_dict()}, path)
        with zipfile.ZipFile(path) as z:
            info = next(i for i in z.infolist() if "/data/" in i.filename)
        data = bytearray(path.read_bytes())
        local = info.header_offset
        name_len, extra_len = (int.from_bytes(data[local + k : local + k + 2], "little") for k in (26, 28))
        data[local + 30 + name_len + extra_len] ^= 0xFF  # first byte of the tensor data
        path.write_bytes(bytes(data))
    elif kind == "unsafe":
        torch.save({"network": Custom()}, path)
    return path, net


@pytest.mark.parametrize(
    "kind, problem",
    [
        ("empty", "the checkpoint is empty (0 bytes)"),
        ("text", "not a PyTorch checkpoint (58 bytes, truncated or a text file)"),
        ("truncated", "not a PyTorch checkpoint"),
        ("corrupt_member", "the checkpoint is damaged (member"),
        ("unsafe", "holds objects that a safe (weights_only=True) load refuses"),
    ],
)
def test_damaged_resume_checkpoint_is_named_with_a_safe_hint(tmp_path, kind, problem):
    path, net = _damaged(tmp_path, kind)
    before = [p.clone() for p in net.parameters()]
    with pytest.raises(CheckpointError) as e:
        _resume(path, net).run([0], max_epochs=1)
    message = str(e.value)
    assert message.startswith(f"{path}: ") and problem in message
    assert "--resume false" in e.value.hint and e.value.file == str(path)
    assert "weights_only=False" not in message + e.value.hint
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))  # nothing half-loaded


def test_damaged_model_hint_does_not_talk_about_resume(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"")
    engine = _engine()
    TrainedModelLoader(load_path=str(path), load_dict={"model": torch.nn.Linear(3, 2)}).attach(engine)
    with pytest.raises(CheckpointError, match="model.pt: the checkpoint is empty") as e:
        engine.run([0], max_epochs=1)
    assert "resume" not in e.value.hint and "model.pt" in e.value.hint


def test_trained_model_loader_loads_one_expert_of_a_router(tmp_path):
    """``expert=k`` loads expert k of a SAQMRouter file into a plain SAQM (what ``--finetune_expert`` does); a whole
    router file into a SAQM, a plain file with ``expert``, and a missing expert each fail naming the file."""
    from monai_iqad.networks import SAQM, SAQMRouter

    torch.manual_seed(0)
    router = SAQMRouter(expert_channels=(3, 9), routes={"CR": 1}, width=1 / 16)
    path = tmp_path / "model.pt"
    torch.save(router.state_dict(), path)
    for k, channels in ((0, 3), (1, 9)):
        net = SAQM(in_channels=channels, width=1 / 16)
        engine = _engine()
        TrainedModelLoader(load_path=str(path), load_dict={"model": net}, expert=k).attach(engine)
        engine.run([0], max_epochs=1)
        assert all(
            torch.equal(a, b) for a, b in zip(net.state_dict().values(), router.experts[k].state_dict().values())
        )
    net = SAQM(width=1 / 16)
    engine = _engine()
    TrainedModelLoader(load_path=str(path), load_dict={"model": net}).attach(engine)
    with pytest.raises(CheckpointError, match="model.pt: does not match the network") as e:
        engine.run([0], max_epochs=1)
    assert "SAQMRouter" in e.value.hint and "--finetune_expert" in e.value.hint
    engine = _engine()
    TrainedModelLoader(load_path=str(path), load_dict={"model": net}, expert=2).attach(engine)
    with pytest.raises(CheckpointError, match="model.pt: the router state dict has no expert 2"):
        engine.run([0], max_epochs=1)
    engine = _engine()
    TrainedModelLoader(load_path=str(path), load_dict={"model": net}, expert=1).attach(engine)
    with pytest.raises(CheckpointError, match="model.pt: expert 1 does not match the network"):
        engine.run([0], max_epochs=1)  # a 9-channel expert into a 3-channel SAQM
    plain = tmp_path / "plain.pt"
    torch.save(net.state_dict(), plain)
    engine = _engine()
    TrainedModelLoader(load_path=str(plain), load_dict={"model": net}, expert=0).attach(engine)
    with pytest.raises(CheckpointError, match="plain.pt: not a SAQMRouter state dict") as e:
        engine.run([0], max_epochs=1)
    assert "expert None" in e.value.hint
    with pytest.raises(ValueError, match="loads one network"):
        TrainedModelLoader(load_path=str(path), load_dict={"a": net, "b": net}, expert=0)
    engine = _engine()  # one SAQM's file into a router (the shipped inference.json): the overlay to use is named
    TrainedModelLoader(load_path=str(plain), load_dict={"model": router}).attach(engine)
    with pytest.raises(CheckpointError, match="plain.pt: does not match the network") as e:
        engine.run([0], max_epochs=1)
    assert "single_saqm.json" in e.value.hint


def test_mismatched_checkpoint_names_the_file(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"network": torch.nn.Linear(4, 2).state_dict()}, path)
    with pytest.raises(CheckpointError, match=r"checkpoint.pt: does not match the network of this config"):
        _resume(path, torch.nn.Linear(3, 2)).run([0], max_epochs=1)


def test_good_and_missing_checkpoints(tmp_path):
    net = torch.nn.Linear(3, 2)
    path = tmp_path / "checkpoint.pt"
    with pytest.raises(CheckpointNotFoundError, match="Cannot resume: no training checkpoint") as e:
        _resume(path, net).run([0], max_epochs=1)
    assert isinstance(e.value, FileNotFoundError)
    saved = torch.nn.Linear(3, 2)
    torch.save({"network": saved.state_dict(), "trainer": _engine().state_dict()}, path)
    assert check_checkpoint_file(path) == str(path)
    _resume(path, net).run([0], max_epochs=1)
    assert torch.equal(net.weight, saved.weight)


def test_savers_remove_stale_temporaries_when_a_run_starts(tmp_path):
    stale = [tmp_path / ".checkpoint.pt.k1ll3d.tmp", tmp_path / ".model.pt.x.tmp", tmp_path / ".model.pt.json.y.tmp"]
    stale.append(tmp_path / ".model.orig.pt.z.tmp")  # a killed copy of an unrecorded model.pt to its backup
    for p in stale:
        p.write_bytes(b"\0" * 4096)
    net = torch.nn.Linear(3, 2)
    trainer = _engine()
    TrainingCheckpointSaver(tmp_path, {"network": net}).attach(trainer)
    evaluator = Engine(lambda e, b: None)
    evaluator.state.metrics = {}

    @evaluator.on(Events.EPOCH_COMPLETED)
    def _metric(engine):
        engine.state.metrics["srocc"] = 0.5

    BestModelSaver(tmp_path, net, "srocc").attach(evaluator)
    assert all(p.exists() for p in stale)  # nothing happens when handlers are built (config parsing)
    trainer.run([0], max_epochs=1)
    evaluator.run([0], max_epochs=1)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.pt", "model.pt", "model.pt.json"]


def test_bundle_resume_from_a_text_checkpoint(tmp_path):
    """`python -m monai.bundle run ... --resume true` with a text `checkpoint.pt`: one message, no traceback (neither
    from the excepthook nor from the logs of Ignite and MONAI's StatsHandler), exit status 1."""
    args = tiny_saqm_run_args(tmp_path, target_train_mos=3.0)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "checkpoint.pt").write_text("oops\n")
    proc = run_bundle_cli("ultrasound_saqm_iqa", [*args, "--resume", "true"])
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-3000:]
    path = tmp_path / "models" / "checkpoint.pt"
    lines = proc.stderr.splitlines()
    start = lines.index(
        f"monai_iqad error (CheckpointError): {path}: not a PyTorch checkpoint (5 bytes, truncated or a text file)"
    )
    assert lines[start + 1].startswith(
        "hint: delete or move the damaged checkpoint and train again with --resume false"
    )
    assert f"Engine run is terminating due to exception: CheckpointError: {path}" in proc.stdout
