"""Diagnosis metrics against scikit-learn, per quality grade, and the Ignite metrics in a MONAI evaluator."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.data import DataLoader
from monai.engines import SupervisedEvaluator
from monai.handlers import from_engine
from monai.transforms import CopyItemsd
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    roc_auc_score,
)
from torch import nn

from monai_iqad.metrics import (
    DiagnosisAUC,
    DiagnosisMetrics,
    UndefinedMetricWarning,
    accuracy,
    auc_official,
    confusion,
    diagnosis_metric_keys,
    diagnosis_metrics,
    f1,
    roc_auc,
)


def _data(n: int, c: int, seed: int = 0, num_quality: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Probabilities mildly informative of the labels, labels in [0, c), quality grades in [0, num_quality)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c)) + 1.2 * np.eye(c)[y]
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return p, y, rng.integers(0, num_quality, n)


def test_multiclass_auc_is_macro_ovo():
    p, y, _ = _data(80, 3)
    expected = roc_auc_score(y, p, multi_class="ovo", average="macro")
    assert roc_auc(p, y) == pytest.approx(expected, abs=1e-12)
    assert roc_auc(p, y, multi_class="ovr") == pytest.approx(roc_auc_score(y, p, multi_class="ovr"), abs=1e-12)
    assert auc_official(p, y) == pytest.approx(expected, abs=1e-12)
    assert roc_auc(torch.tensor(p, dtype=torch.float32), torch.tensor(y)) == pytest.approx(expected, abs=1e-6)
    assert roc_auc(p, np.eye(3)[y]) == pytest.approx(expected)  # one-hot labels


def test_binary_auc_probability_and_official_hard_label():
    p, y, _ = _data(60, 2, seed=1)
    assert roc_auc(p, y) == pytest.approx(roc_auc_score(y, p[:, 1]), abs=1e-12)
    assert roc_auc(p[:, 1], y) == pytest.approx(roc_auc_score(y, p[:, 1]), abs=1e-12)  # (N,) positive probs
    hard = p.argmax(axis=1)
    assert auc_official(p, y) == pytest.approx(roc_auc_score(y, hard), abs=1e-12)
    assert auc_official(p, y) == pytest.approx(balanced_accuracy_score(y, hard), abs=1e-12)
    assert auc_official(p, y) != pytest.approx(roc_auc(p, y))


def test_accuracy_f1_confusion():
    p, y, _ = _data(70, 3, seed=2)
    pred = p.argmax(axis=1)
    assert accuracy(p, y) == pytest.approx(accuracy_score(y, pred))
    assert accuracy(pred, y) == pytest.approx(accuracy_score(y, pred))
    assert f1(p, y) == pytest.approx(f1_score(y, pred, average="macro"))
    assert f1(p, y, average="weighted") == pytest.approx(f1_score(y, pred, average="weighted"))
    np.testing.assert_array_equal(confusion(p, y, 3), confusion_matrix(y, pred, labels=[0, 1, 2]))
    assert confusion(np.zeros(4, dtype=int), np.zeros(4, dtype=int), 3).shape == (3, 3)
    pb, yb, _ = _data(50, 2, seed=3)
    predb = pb.argmax(axis=1)
    assert f1(pb, yb, average="binary") == pytest.approx(f1_score(yb, predb, average="binary", pos_label=1))
    assert f1(pb, yb, average="binary") != pytest.approx(f1(pb, yb, average="macro"))


@pytest.mark.parametrize("c", [2, 3])
def test_diagnosis_metrics_overall_and_per_grade_match_sklearn(c):
    p, y, q = _data(120, c, seed=4, num_quality=3)
    out = diagnosis_metrics(p, y, q)
    assert list(out) == diagnosis_metric_keys(3)
    average = "binary" if c == 2 else "macro"  # MKCNet: binary F1 for IQAD-CT/CXR, macro for DeepDR/DRAC/EyeQ

    def auc(pp, yy):
        return roc_auc_score(yy, pp[:, 1]) if c == 2 else roc_auc_score(yy, pp, multi_class="ovo")

    for suffix, m in [("", np.ones_like(y, dtype=bool))] + [(f"_q{g}", q == g) for g in range(3)]:
        pred = p[m].argmax(axis=1)
        assert out["auc" + suffix] == pytest.approx(auc(p[m], y[m]), abs=1e-12)
        official = roc_auc_score(y[m], pred) if c == 2 else auc(p[m], y[m])
        assert out["auc_official" + suffix] == pytest.approx(official, abs=1e-12)
        assert out["acc" + suffix] == pytest.approx(accuracy_score(y[m], pred))
        assert out["f1" + suffix] == pytest.approx(f1_score(y[m], pred, average=average, zero_division=0))
        assert out["n" + suffix] == int(m.sum())
        assert isinstance(out["n" + suffix], int)


def test_missing_class_grade_is_nan_with_one_warning():
    p, y, _ = _data(40, 2, seed=5)
    q = np.zeros_like(y)
    q[:6] = 1
    y[:6] = 1  # grade 1 holds a single diagnosis class
    q[6:9] = 2  # grade 2 also tiny; grade 3 empty
    y[6:9] = 0
    with pytest.warns(UndefinedMetricWarning) as record:
        out = diagnosis_metrics(p, y, q, num_quality=4, quality_names=["lq", "mq", "hq", "xq"])
    assert len(record) == 1 and "mq" in str(record[0].message) and "xq: no samples" in str(record[0].message)
    assert math.isnan(out["auc_mq"]) and math.isnan(out["auc_official_mq"]) and math.isnan(out["auc_hq"])
    assert out["acc_mq"] == pytest.approx(accuracy_score(y[:6], p[:6].argmax(axis=1)))
    assert out["n_xq"] == 0 and math.isnan(out["acc_xq"])
    assert not math.isnan(out["auc"]) and not math.isnan(out["auc_lq"])


def test_multiclass_grade_with_two_of_three_classes_uses_present_pairs():
    p, y, _ = _data(60, 3, seed=6)
    m = y < 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = roc_auc(p[m], y[m])
    assert value == pytest.approx(roc_auc_score(y[m], p[m], multi_class="ovo", labels=[0, 1, 2]))
    with pytest.warns(UndefinedMetricWarning, match="one-vs-rest"):
        assert math.isnan(roc_auc(p[m], y[m], multi_class="ovr"))
    with pytest.warns(UndefinedMetricWarning, match="only class"):
        assert math.isnan(roc_auc(p[y == 0], y[y == 0]))


def test_errors():
    p, y, q = _data(20, 3, seed=7)
    with pytest.raises(ValueError, match="rows sum to 1"):
        roc_auc(np.log(p) + 3.0, y)  # logits by mistake
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\]"):
        roc_auc(p, y + 1)
    with pytest.raises(ValueError, match="labels has 19 entries but probs has 20"):
        roc_auc(p, y[:-1])
    with pytest.raises(ValueError, match="non-finite"):
        roc_auc(np.full_like(p, np.nan), y)
    with pytest.raises(ValueError, match="binary"):
        f1(p, y, average="binary")
    with pytest.raises(ValueError, match="quality grades must lie"):
        diagnosis_metrics(p, y, q, num_quality=1)
    with pytest.raises(ValueError, match="quality_names"):
        diagnosis_metrics(p, y, q, quality_names=["low q", "high"])
    with pytest.raises(ValueError, match="multi_class"):
        roc_auc(p, y, multi_class="raise")
    with pytest.raises(ValueError, match="num_classes must be an int >= 2"):
        DiagnosisMetrics(num_classes=1)


def test_ignite_metric_contract_default_from_engine_keys():
    """Default transform ``from_engine(["pred", "label", "quality"])`` over decollated per-sample dicts of logits."""
    rng = np.random.default_rng(8)
    logits = rng.normal(size=(30, 3))
    y = rng.integers(0, 3, 30)
    q = rng.integers(0, 2, 30)
    batches = [list(range(i, min(i + 7, 30))) for i in range(0, 30, 7)]

    def step(engine, idx):  # what MONAI leaves in engine.state.output after decollation
        return [{"pred": torch.tensor(logits[i]), "label": int(y[i]), "quality": torch.tensor([q[i]])} for i in idx]

    engine = Engine(step)
    DiagnosisMetrics(num_classes=3, num_quality=2, prefix="val_").attach(engine, "diag")
    DiagnosisAUC(num_classes=3).attach(engine, "auc")
    engine.run(batches)
    probs = torch.softmax(torch.tensor(logits), dim=1).numpy()
    expected = diagnosis_metrics(probs, y, q, num_quality=2)
    for k, v in expected.items():
        assert engine.state.metrics["val_" + k] == pytest.approx(v, abs=1e-12)
    assert engine.state.metrics["auc"] == pytest.approx(expected["auc"], abs=1e-12)
    assert "diag" not in engine.state.metrics

    bad = DiagnosisMetrics(num_classes=3, num_quality=2)
    with pytest.raises(ValueError, match="ground-truth grade"):
        bad.update((torch.tensor(logits[:4]), torch.tensor(y[:4]), torch.zeros(4, 2)))


class _NoisyLogits(nn.Module):
    """Image = [signal logits (C), noise (C)] → logits ``(B, C)`` = signal + alpha * noise."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.c = c
        self.register_buffer("alpha", torch.tensor(0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, : self.c] + self.alpha * x[:, self.c :]


@pytest.mark.parametrize("c", [2, 3])
def test_ignite_metrics_in_supervised_evaluator(c):
    rng = np.random.default_rng(9)
    n = 36
    y = rng.integers(0, c, n)
    q = rng.integers(0, 2, n)
    signal = rng.normal(size=(n, c)) + 1.5 * np.eye(c)[y]
    noise = rng.normal(size=(n, c)) * 2.0
    data = [
        {"image": torch.tensor(np.r_[s, z], dtype=torch.float32), "label": int(t), "quality": int(g)}
        for s, z, t, g in zip(signal, noise, y, q)
    ]
    net = _NoisyLogits(c)
    evaluator = SupervisedEvaluator(
        device="cpu",
        val_data_loader=DataLoader(data, batch_size=8),
        network=net,
        # the stock evaluator's output has no quality: copy the batch's ground-truth grade into it
        postprocessing=CopyItemsd(keys="quality", names="quality_gt"),
        key_val_metric={"val_auc": DiagnosisAUC(num_classes=c)},
        additional_metrics={
            "official": DiagnosisAUC(num_classes=c, official=True),
            "diag": DiagnosisMetrics(
                num_classes=c, num_quality=2, output_transform=from_engine(["pred", "label", "quality_gt"])
            ),
        },
    )
    images = torch.stack([d["image"] for d in data])
    aucs = {}
    for epoch, alpha in enumerate([1.0, 3.0, 0.0], start=1):
        net.alpha.fill_(alpha)
        evaluator.run(global_epoch=epoch)
        probs = torch.softmax(net(images).double(), dim=1).numpy()
        expected = diagnosis_metrics(probs, y, q, num_quality=2)
        m = evaluator.state.metrics
        for k, v in expected.items():
            assert m[k] == pytest.approx(v, abs=1e-9), k
        assert m["val_auc"] == pytest.approx(expected["auc"], abs=1e-9)
        assert m["official"] == pytest.approx(expected["auc_official"], abs=1e-9)
        aucs[epoch] = m["val_auc"]
    assert aucs[3] > aucs[1] > aucs[2]
    assert evaluator.state.best_metric_epoch == 3
    assert evaluator.state.best_metric == pytest.approx(aucs[3])


def _two_process_check(local_rank: int) -> None:
    import ignite.distributed as idist

    from monai_iqad.metrics import PLCC, SROCC, IQACorrelations, iqa_summary

    rank = idist.get_rank()
    rng = np.random.default_rng(0)
    logits, y, q = rng.normal(size=(40, 3)), rng.integers(0, 3, 40), rng.integers(0, 2, 40)
    score = rng.normal(size=40)
    mos = score + rng.normal(0, 0.5, 40)
    part = slice(rank * 20, rank * 20 + 20)
    diag = DiagnosisMetrics(3, num_quality=2, output_transform=lambda x: x)
    auc = DiagnosisAUC(3, output_transform=lambda x: x)
    diag.update((torch.tensor(logits[part]), torch.tensor(y[part]), torch.tensor(q[part])))
    auc.update((torch.tensor(logits[part]), torch.tensor(y[part])))
    iqa, srocc_m, plcc_m = IQACorrelations(), SROCC(), PLCC(fit="logistic4")
    for m in (iqa, srocc_m, plcc_m):
        m.update((torch.tensor(score[part]), torch.tensor(mos[part])))
    expected = diagnosis_metrics(torch.softmax(torch.tensor(logits), 1).numpy(), y, q, num_quality=2)
    expected_iqa = iqa_summary(score, mos)
    assert diag.compute() == pytest.approx(expected, abs=1e-12, nan_ok=True)
    assert auc.compute() == pytest.approx(expected["auc"], abs=1e-12)  # float64 broadcast: exact, not float32
    assert iqa.compute() == pytest.approx(expected_iqa, abs=1e-12)
    assert srocc_m.compute() == pytest.approx(expected_iqa["srocc"], abs=1e-12)
    assert plcc_m.compute() == pytest.approx(expected_iqa["plcc_logistic"], abs=1e-12)
    assert isinstance(diag.compute()["n_q0"], int)


@pytest.mark.slow
def test_metrics_gather_across_two_gloo_processes():
    import ignite.distributed as idist

    with idist.Parallel(backend="gloo", nproc_per_node=2) as parallel:
        parallel.run(_two_process_check)
