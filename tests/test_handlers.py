"""Handlers: atomic checkpoints, best-model bookkeeping, NaN guard, seeding, CSV and TensorBoard figures."""

from __future__ import annotations

import csv
import json
import os

import pytest
import torch
from ignite.engine import Engine, Events
from monai.data import MetaTensor
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from monai_iqad.handlers import (
    BestModelSaver,
    ClassificationFiguresHandler,
    EpochSeedHandler,
    IQAScatterHandler,
    LearningRateLogger,
    NaNLossGuard,
    PredictionCSVWriter,
    TrainingCheckpointSaver,
    find_checkpoint,
    output_scalars,
)
from monai_iqad.utils.io import atomic_torch_save, atomic_write


def _engine_with_metrics(values):
    """An evaluator-like engine whose epoch ``e`` reports ``values[e-1]`` as ``srocc``."""

    def step(engine, batch):
        return None

    engine = Engine(step)

    @engine.on(Events.EPOCH_COMPLETED)
    def _set(e):
        e.state.metrics["srocc"] = values[e.state.epoch - 1]

    return engine


def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path):
    path = tmp_path / "ckpt.pt"
    atomic_torch_save({"a": torch.ones(2)}, path)

    def boom(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, boom)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pt"], "temporary file left behind"


def test_best_model_saver_only_replaces_with_better_model_across_runs(tmp_path):
    net = torch.nn.Linear(2, 1)
    # run 1: 0.5 then 0.7 (saved), then NaN (ignored)
    saver = BestModelSaver(tmp_path, net, "srocc")
    engine = _engine_with_metrics([0.5, 0.7, float("nan")])
    saver.attach(engine)
    weights = []

    @engine.on(Events.EPOCH_COMPLETED)
    def _perturb(e):
        weights.append(net.weight.detach().clone())
        with torch.no_grad():
            net.weight.add_(1.0)

    engine.run([0], max_epochs=3)
    record = json.loads((tmp_path / "model.pt.json").read_text())
    assert record["metric"] == "srocc" and record["value"] == pytest.approx(0.7) and record["epoch"] == 2
    saved = torch.load(tmp_path / "model.pt", weights_only=True)
    assert set(saved) == {"weight", "bias"}  # a plain state dict
    assert torch.equal(saved["weight"], weights[1])

    # run 2 is worse (0.6): model.pt must not change
    net2 = torch.nn.Linear(2, 1)
    saver2 = BestModelSaver(tmp_path, net2, "srocc")
    assert saver2.best == pytest.approx(0.7)
    engine2 = _engine_with_metrics([0.6])
    saver2.attach(engine2)
    engine2.run([0], max_epochs=1)
    assert torch.equal(torch.load(tmp_path / "model.pt", weights_only=True)["weight"], weights[1])

    # overwrite=True starts a fresh best
    saver3 = BestModelSaver(tmp_path, net2, "srocc", overwrite=True)
    engine3 = _engine_with_metrics([0.1])
    saver3.attach(engine3)
    engine3.run([0], max_epochs=1)
    assert torch.equal(torch.load(tmp_path / "model.pt", weights_only=True)["weight"], net2.weight)


def test_best_model_saver_missing_metric_is_clear(tmp_path):
    engine = Engine(lambda e, b: None)
    BestModelSaver(tmp_path, torch.nn.Linear(1, 1), "auc").attach(engine)
    with pytest.raises(KeyError, match="'auc' is not computed"):
        engine.run([0], max_epochs=1)


def test_training_checkpoint_saver_and_find(tmp_path):
    net = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    engine = Engine(lambda e, b: None)
    TrainingCheckpointSaver(tmp_path, {"network": net, "optimizer": opt}).attach(engine)
    engine.run([0, 1], max_epochs=2)
    ckpt = torch.load(find_checkpoint(tmp_path), weights_only=True)
    assert set(ckpt) == {"network", "optimizer", "trainer"}
    assert ckpt["trainer"]["iteration"] == 4 and ckpt["trainer"]["epoch_length"] == 2
    with pytest.raises(FileNotFoundError, match="Cannot resume"):
        find_checkpoint(tmp_path / "nothing")


def test_nan_guard_names_epoch_and_iteration():
    def step(engine, batch):
        return [{"loss": torch.tensor(float("nan") if engine.state.iteration == 3 else 1.0)}]

    engine = Engine(step)
    NaNLossGuard().attach(engine)
    with pytest.raises(FloatingPointError, match="epoch 2, iteration 3"):
        engine.run([0, 1], max_epochs=2)


def test_epoch_seed_handler_makes_epochs_reproducible():
    draws = {}

    def run(start_epoch):
        engine = Engine(lambda e, b: draws.setdefault((start_epoch, e.state.epoch), torch.rand(3)))
        EpochSeedHandler(seed=7).attach(engine)
        engine.state.epoch = start_epoch
        engine.state.iteration = start_epoch
        engine.state.epoch_length = 1
        engine.run([0], max_epochs=3)

    run(0)
    run(2)  # "resumed" at epoch 2: epoch 3 must see the same random numbers
    assert torch.equal(draws[(0, 3)], draws[(2, 3)])
    assert not torch.equal(draws[(0, 2)], draws[(0, 3)])


def test_output_scalars_picks_scalars_and_skips_missing():
    out = [{"loss": torch.tensor(2.0), "grl_lambda": 0.5, "pred": torch.ones(3)}]
    assert output_scalars(["loss", "grl_lambda", "loss_dom", "pred"], "train/")(out) == {
        "train/loss": 2.0,
        "train/grl_lambda": 0.5,
    }


def _evaluator(outputs):
    """An engine that replays per-iteration decollated outputs."""

    def step(engine, batch):
        return outputs[engine.state.iteration - 1]

    return Engine(step)


def test_prediction_csv_writer(tmp_path):
    def img(name):
        return MetaTensor(torch.zeros(1, 4, 4), meta={"filename_or_obj": name})

    def item(name, probs, label, quality_class):
        return {"image": img(name), "diagnosis_pred": torch.tensor(probs), "diagnosis": torch.tensor(label),
                "quality_class": torch.tensor([float(quality_class)])}  # fmt: skip

    outputs = [[item("b.png", [0.7, 0.3], 1, 1), item("a.png", [0.25, 0.75], 0, 0)]]
    engine = _evaluator(outputs)
    path = tmp_path / "out" / "pred.csv"
    PredictionCSVWriter(
        path,
        fields=["diagnosis_pred", "diagnosis", "quality_class", "quality_pred"],
        column_names={"diagnosis_pred": ["p0", "p1"], "quality_class": "quality"},
        class_names={"quality_class": ["bad", "good"]},
        optional_fields=["quality_pred"],
    ).attach(engine)
    engine.run([0], max_epochs=1)
    rows = list(csv.reader(path.open()))
    assert rows == [["filename", "p0", "p1", "diagnosis", "quality"], ["a.png", "0.25", "0.75", "0", "bad"],
                    ["b.png", "0.7", "0.3", "1", "good"]]  # fmt: skip
    bad = PredictionCSVWriter(tmp_path / "bad.csv", fields=["quality_class"], class_names={"quality_class": ["a"]})
    with pytest.raises(ValueError, match="class index in 0..0"):
        bad.select({"quality_class": torch.tensor([1.0])}, {})


def test_figure_handlers_write_tensorboard_tags(tmp_path):
    torch.manual_seed(0)
    n = 12
    pred = torch.rand(n)
    outputs = [
        [
            {
                "pred": torch.tensor([pred[i]]),
                "label": torch.tensor([0.8 * float(pred[i]) + 0.1]),
            }
            for i in range(n)
        ]
    ]
    engine = _evaluator(outputs)
    IQAScatterHandler(log_dir=str(tmp_path)).attach(engine)
    logits = torch.randn(n, 3)
    cls_outputs = [
        [{"pred": logits[i], "label": torch.tensor(i % 3), "quality": torch.tensor(i % 2)} for i in range(n)]
    ]
    engine2 = _evaluator(cls_outputs)
    ClassificationFiguresHandler(3, class_names=["a", "b", "c"], log_dir=str(tmp_path)).attach(engine2)
    net = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.25)
    engine3 = Engine(lambda e, b: None)
    LearningRateLogger({"task": opt}, log_dir=str(tmp_path)).attach(engine3)
    engine.run([0], max_epochs=1)
    engine2.run([0], max_epochs=1)
    engine3.run([0], max_epochs=1)
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    images = set(acc.Tags()["images"])
    assert {"val/pred_vs_mos", "val/roc/all", "val/roc/q0", "val/roc/q1", "val/confusion/all"} <= images
    assert acc.Scalars("lr/task")[0].value == pytest.approx(0.25)


def test_best_model_saver_keeps_an_unrecorded_model_before_replacing_it(tmp_path):
    """A ``model.pt`` that no run recorded (shipped weights) is copied to ``model.orig.pt`` before the first save;
    a recorded one is not, and a second unrecorded file never replaces the first backup."""
    shipped = {"weight": torch.full((1, 2), 7.0), "bias": torch.zeros(1)}
    torch.save(shipped, tmp_path / "model.pt")
    net = torch.nn.Linear(2, 1)
    saver = BestModelSaver(tmp_path, net, "srocc")
    assert saver.best is None  # nothing to beat
    engine = _engine_with_metrics([0.1, 0.2])
    saver.attach(engine)
    engine.run([0], max_epochs=2)
    kept = torch.load(tmp_path / "model.orig.pt", weights_only=True)
    assert torch.equal(kept["weight"], shipped["weight"])
    assert torch.equal(torch.load(tmp_path / "model.pt", weights_only=True)["weight"], net.weight)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.orig.pt", "model.pt", "model.pt.json"]

    # a recorded model.pt (a run wrote it) is replaced by a better one without a backup
    saver2 = BestModelSaver(tmp_path, torch.nn.Linear(2, 1), "srocc")
    engine2 = _engine_with_metrics([0.9])
    saver2.attach(engine2)
    engine2.run([0], max_epochs=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.orig.pt", "model.pt", "model.pt.json"]

    # another unrecorded file: the first backup stays, the new one is model.orig-1.pt
    (tmp_path / "model.pt.json").unlink()
    torch.save({"weight": torch.full((1, 2), 3.0), "bias": torch.zeros(1)}, tmp_path / "model.pt")
    saver3 = BestModelSaver(tmp_path, torch.nn.Linear(2, 1), "srocc")
    engine3 = _engine_with_metrics([0.5])
    saver3.attach(engine3)
    engine3.run([0], max_epochs=1)
    assert torch.equal(torch.load(tmp_path / "model.orig.pt", weights_only=True)["weight"], shipped["weight"])
    assert torch.load(tmp_path / "model.orig-1.pt", weights_only=True)["weight"][0, 0] == 3.0
