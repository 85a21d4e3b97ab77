"""IQA correlations against scipy, the 4-parameter logistic fit, and the Ignite metrics in a MONAI evaluator."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from monai.data import DataLoader
from monai.engines import SupervisedEvaluator
from monai.handlers import from_engine
from scipy import stats
from torch import nn

from monai_iqad.metrics import (
    IQA_SUMMARY_KEYS,
    KRCC,
    PLCC,
    SROCC,
    IQACorrelations,
    Logistic4FitWarning,
    UndefinedMetricWarning,
    fit_logistic4,
    iqa_summary,
    krcc,
    logistic4,
    plcc,
    rmse,
    srocc,
)


@pytest.fixture
def scores() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    target = rng.uniform(0, 9, 60)
    pred = 0.1 * target + rng.normal(0, 0.2, 60)
    return pred, target


def test_against_scipy(scores):
    pred, target = scores
    assert plcc(pred, target) == pytest.approx(stats.pearsonr(pred, target)[0], abs=1e-12)
    assert srocc(pred, target) == pytest.approx(stats.spearmanr(pred, target)[0], abs=1e-12)
    assert krcc(pred, target) == pytest.approx(stats.kendalltau(pred, target)[0], abs=1e-12)
    assert krcc(pred, target, variant="c") == pytest.approx(stats.kendalltau(pred, target, variant="c")[0], abs=1e-12)
    assert rmse(pred, target) == pytest.approx(np.sqrt(np.mean((pred - target) ** 2)))


def test_input_types_and_shapes(scores):
    pred, target = scores
    expected = srocc(pred, target)
    assert srocc(torch.tensor(pred, dtype=torch.float64)[:, None], list(target)) == pytest.approx(expected)
    per_sample = [torch.tensor([p], dtype=torch.float64) for p in pred]  # MONAI's decollated (1,) tensors
    assert srocc(per_sample, torch.tensor(target)) == pytest.approx(expected)
    assert plcc(torch.tensor(pred, dtype=torch.bfloat16), target) == pytest.approx(plcc(pred, target), abs=0.02)


def test_logistic_fit_recovers_known_parameters():
    x = np.linspace(-3, 3, 80)
    beta = np.array([4.0, 1.0, 0.5, 0.7])
    y = logistic4(x, *beta)
    params = fit_logistic4(x, y)
    assert params is not None
    np.testing.assert_allclose(params[:3], beta[:3], rtol=1e-4, atol=1e-4)
    assert abs(params[3]) == pytest.approx(beta[3], rel=1e-4)
    raw = plcc(x, y)
    assert raw < 0.99
    assert plcc(x, y, fit="logistic4") == pytest.approx(1.0, abs=1e-8)
    summary = iqa_summary(x, y)
    assert summary["plcc"] == pytest.approx(raw)
    assert summary["plcc_logistic"] == pytest.approx(1.0, abs=1e-8)
    assert summary["rmse_logistic"] == pytest.approx(0.0, abs=1e-6)
    assert summary["n"] == 80
    assert set(summary) == set(IQA_SUMMARY_KEYS)


def test_logistic_fit_matches_pyiqa_numeric_fit():
    """Where pyiqa's plain ``curve_fit`` (numeric Jacobian) converges, the analytic Jacobian finds the same optimum."""
    from scipy import optimize

    rng = np.random.default_rng(3)
    x = rng.uniform(2, 8, 70)
    y = logistic4(x, 80.0, 20.0, 5.0, 0.9) + rng.normal(0, 2.0, 70)
    p0 = [y.max(), y.min(), x.mean(), x.std() / 4]
    reference, _ = optimize.curve_fit(logistic4, x, y, p0=p0, maxfev=10000)
    params = fit_logistic4(x, y)
    np.testing.assert_allclose(logistic4(x, *params), logistic4(x, *reference), rtol=1e-5, atol=1e-5)


def test_logistic4_jacobian_matches_finite_differences():
    from monai_iqad.metrics.correlation import _logistic4_jac

    x = np.linspace(-2, 3, 11)
    for beta in ([3.0, -1.0, 0.4, 0.8], [3.0, -1.0, 0.4, -0.8]):
        jac = _logistic4_jac(x, *beta)
        for i in range(4):
            step = np.zeros(4)
            step[i] = 1e-6
            fd = (logistic4(x, *(np.add(beta, step))) - logistic4(x, *(np.subtract(beta, step)))) / 2e-6
            np.testing.assert_allclose(jac[:, i], fd, rtol=1e-5, atol=1e-7)


def test_logistic4_sign_of_b4_and_overflow():
    x = np.array([-1e4, 0.0, 1e4])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(logistic4(x, 2, 1, 0, 1), [1, 1.5, 2])
    np.testing.assert_allclose(logistic4(x, 2, 1, 0, -1), logistic4(x, 2, 1, 0, 1))


def test_fit_failure_falls_back_with_warning(scores, caplog):
    caplog.set_level("DEBUG", logger="monai_iqad.metrics")
    pred, target = scores
    few_p, few_t = [0.1, 0.5, 0.9], [1.0, 3.0, 2.0]
    with pytest.warns(Logistic4FitWarning, match="too few points"):
        assert fit_logistic4(few_p, few_t) is None
    with pytest.warns(Logistic4FitWarning, match="too few points"):
        assert plcc(few_p, few_t, fit="logistic4") == pytest.approx(plcc(few_p, few_t))
    with pytest.warns(Logistic4FitWarning, match="constant target"):
        assert fit_logistic4(pred, np.ones_like(pred)) is None
    # every occurrence is logged at DEBUG (the console shows the warning once, not a second WARNING log line)
    fit_records = [r for r in caplog.records if "logistic fit failed" in r.getMessage()]
    assert len(fit_records) == 3 and {r.levelname for r in fit_records} == {"DEBUG"}
    # an unfittable relation (a sharp V) must not crash; either a fit or a warned fallback to the raw value
    v = np.abs(np.linspace(-1, 1, 9))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Logistic4FitWarning)
        assert math.isfinite(plcc(np.linspace(-1, 1, 9), v, fit="logistic4"))


def test_lower_better_negates(scores):
    pred, target = scores
    assert srocc(-pred, target, lower_better=True) == pytest.approx(srocc(pred, target))
    assert krcc(-pred, target, lower_better=True) == pytest.approx(krcc(pred, target))
    assert plcc(-pred, target, lower_better=True) == pytest.approx(plcc(pred, target))
    assert plcc(-pred, target, fit="logistic4", lower_better=True) == pytest.approx(
        plcc(pred, target, fit="logistic4"), abs=1e-6
    )
    assert iqa_summary(-pred, target, lower_better=True)["srocc"] == pytest.approx(srocc(pred, target))


def test_constant_input_gives_nan_with_warning():
    with pytest.warns(UndefinedMetricWarning, match="pred is constant"):
        assert math.isnan(srocc([1, 1, 1, 1], [1, 2, 3, 4]))
    with pytest.warns(UndefinedMetricWarning, match="target is constant"):
        assert math.isnan(plcc([1, 2, 3, 4], [2, 2, 2, 2], fit="logistic4"))
    with pytest.warns(UndefinedMetricWarning):
        assert math.isnan(krcc([1, 1, 1], [1, 2, 3]))
    with pytest.warns(UndefinedMetricWarning) as record:
        out = iqa_summary([1, 1, 1, 1, 1, 1], [1, 2, 3, 4, 5, 6])
    assert len(record) == 1
    assert math.isnan(out["plcc"]) and math.isnan(out["srocc"]) and math.isnan(out["plcc_logistic"])


@pytest.mark.parametrize(
    ("pred", "target", "match"),
    [
        ([1, 2, 3], [1, 2], "same number of scores, got 3 and 2"),
        ([1.0], [2.0], "at least 2 samples, got 1"),
        ([1, float("nan"), 3], [1, 2, 3], "pred contains 1 non-finite"),
        ([1, 2, 3], [1, 2, float("inf")], "target contains 1 non-finite"),
    ],
)
def test_errors(pred, target, match):
    for fn in (srocc, krcc, plcc, iqa_summary, fit_logistic4):
        with pytest.raises(ValueError, match=match):
            fn(pred, target)


def test_bad_options():
    with pytest.raises(ValueError, match="fit must be one of"):
        plcc([1, 2], [1, 2], fit="logistic5")
    with pytest.raises(ValueError, match="variant"):
        krcc([1, 2], [1, 2], variant="a")
    with pytest.raises(ValueError, match="fit must be"):
        PLCC(fit="linear")


class _NoisyScore(nn.Module):
    """Image = [true score, noise] → predicted score ``(B, 1)`` = true score + alpha * noise."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("alpha", torch.tensor(0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1] + self.alpha * x[:, 1:2]


def test_ignite_metrics_in_supervised_evaluator():
    rng = np.random.default_rng(0)
    n = 14
    truth = np.linspace(0.0, 1.0, n)
    noise = rng.normal(size=n)
    mos = truth + rng.normal(0, 0.05, n)
    data = [
        {"image": torch.tensor([t, z], dtype=torch.float32), "label": float(m)} for t, z, m in zip(truth, noise, mos)
    ]
    net = _NoisyScore()
    io = from_engine(["pred", "label"])
    evaluator = SupervisedEvaluator(
        device="cpu",
        val_data_loader=DataLoader(data, batch_size=4),
        network=net,
        key_val_metric={"srocc": SROCC(output_transform=io)},
        additional_metrics={
            "krcc": KRCC(output_transform=io),
            "plcc": PLCC(output_transform=io),
            "plcc4": PLCC(fit="logistic4", output_transform=io),
            "iqa": IQACorrelations(output_transform=io, prefix="iqa_"),
        },
    )
    images = torch.stack([d["image"] for d in data])
    labels = np.asarray(mos, dtype=np.float32)  # ignite batches the decollated Python floats as float32
    best = {}
    for epoch, alpha in enumerate([0.3, 3.0, 0.0, 1.0], start=1):
        net.alpha.fill_(alpha)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Logistic4FitWarning)
            evaluator.run(global_epoch=epoch)
            pred = net(images).numpy()
            expected = iqa_summary(pred, labels)
        m = evaluator.state.metrics
        assert m["srocc"] == pytest.approx(srocc(pred, labels), abs=1e-9)
        assert m["krcc"] == pytest.approx(krcc(pred, labels), abs=1e-9)
        assert m["plcc"] == pytest.approx(plcc(pred, labels), abs=1e-9)
        assert m["plcc4"] == pytest.approx(expected["plcc_logistic"], abs=1e-6)
        for k in IQA_SUMMARY_KEYS:
            assert m["iqa_" + k] == pytest.approx(expected[k], abs=1e-6)
        assert "iqa" not in m  # flattened dict result
        best[epoch] = m["srocc"]
    assert evaluator.state.best_metric_epoch == 3
    assert evaluator.state.best_metric == pytest.approx(max(best.values()))
    assert best[2] < best[1] < best[3]


def test_ignite_metric_shapes_and_lower_better():
    pred = torch.tensor([[0.1], [0.4], [0.2], [0.9]])
    target = torch.tensor([1.0, 3.0, 2.0, 4.0])  # (B, 1) against (B,): ignite's own metrics reject this
    metric = SROCC(lower_better=True)
    metric.update((pred, target))
    assert metric.compute() == pytest.approx(-1.0)
    metric = PLCC(skip_unrolling=True)  # lists of per-sample (1,) tensors reach update() as they are
    metric.update(([torch.tensor([v]) for v in (0.1, 0.4, 0.2, 0.9)], [1.0, 3.0, 2.0, 4.0]))
    assert metric.compute() == pytest.approx(plcc([0.1, 0.4, 0.2, 0.9], [1.0, 3.0, 2.0, 4.0]))
    with pytest.raises(ValueError, match="MOS for every image"):
        metric.update(([torch.tensor([0.5])], [None]))
    with pytest.raises(ValueError, match="same number of image-level scores"):
        metric.update((torch.zeros(4, 2), target))
