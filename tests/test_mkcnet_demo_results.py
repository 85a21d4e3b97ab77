"""benchmarks/mkcnet_demo_results.py: the bootstrap AUC matches scikit-learn, the intervals behave, runs resume.

Synthetic predictions only (no training); the end-to-end ``--quick`` run is in ``tests/test_bundles_mkcnet.py``.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from monai_iqad.metrics import diagnosis_metrics

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def script():
    sys.path.insert(0, str(BENCHMARKS))  # the script imports its sibling bench_utils
    try:
        spec = importlib.util.spec_from_file_location("mkcnet_demo_results", BENCHMARKS / "mkcnet_demo_results.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


def _predictions(rng, n, num_classes, signal):
    """Labels and softmax probabilities whose true-class logit is raised by ``signal`` (every 4th row copies the one
    before it: tied scores)."""
    labels = rng.integers(0, num_classes, n)
    logits = rng.normal(size=(n, num_classes))
    logits[np.arange(n), labels] += signal
    logits[1::4] = logits[0::4]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return probs, labels


@pytest.mark.parametrize("num_classes", [2, 3])
def test_weighted_auc_matches_sklearn(script, num_classes):
    rng = np.random.default_rng(0)
    probs, labels = _predictions(rng, 200, num_classes, 1.0)
    ones = np.ones((1, labels.size))
    expected = diagnosis_metrics(probs, labels, num_classes=num_classes)["auc"]
    assert script.weighted_auc(probs, labels, ones)[0] == pytest.approx(expected, abs=1e-12)
    # integer weights = the data set with image i repeated w[i] times (a bootstrap resample)
    weights = rng.multinomial(labels.size, np.full(labels.size, 1 / labels.size), size=3).astype(float)
    got = script.weighted_auc(probs, labels, weights)
    for row, value in zip(weights.astype(int), got, strict=True):
        idx = np.repeat(np.arange(labels.size), row)
        p = probs[idx] / probs[idx].sum(axis=1, keepdims=True)
        ref = (
            roc_auc_score(labels[idx], p[:, 1])
            if num_classes == 2
            else roc_auc_score(labels[idx], p, multi_class="ovo")
        )
        assert value == pytest.approx(ref, abs=1e-12)
    # all weight on one class: undefined
    assert np.isnan(script.weighted_binary_auc(probs[:, 1], labels == 1, (labels == 1)[None].astype(float))[0])


def test_weighted_accuracy(script):
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    labels = np.array([0, 1, 1])
    acc = script.weighted_accuracy(probs, labels, np.array([[1.0, 1, 1], [0, 0, 2], [3, 1, 0], [0, 0, 0]]))
    np.testing.assert_allclose(acc[:3], [2 / 3, 0.0, 1.0])
    assert np.isnan(acc[3])


def _runs(rng, signals, num_seeds, n=600, num_quality=3):
    """method -> runs; each method's signal is lower on worse grades (grade g keeps (g + 1) / num_quality of it)."""
    labels = rng.integers(0, 2, n)
    quality = rng.integers(0, num_quality, n)
    runs = {}
    for method, signal in signals.items():
        runs[method] = []
        for seed in range(num_seeds):
            score = rng.normal(size=n) + signal * (quality + 1) / num_quality * (2 * labels - 1)
            p1 = 1 / (1 + np.exp(-score))
            runs[method].append(
                {"seed": seed, "probs": np.stack([1 - p1, p1], 1), "labels": labels, "quality": quality}
            )
    return runs


INFO = {"num_diagnosis": 2, "num_quality": 3, "f1_average": "binary", "multi_class": "ovo"}


def test_bundle_statistics_intervals_and_paired_differences(script):
    rng = np.random.default_rng(1)
    runs = _runs(rng, {"mkcnet": 2.0, "vanilla": 0.8, "multitask": 2.0}, num_seeds=5)
    stats = script.bundle_statistics(runs, INFO, num_boot=300)
    assert stats["subsets"] == ["all", "q0", "q1", "q2", "low"]
    assert stats["seeds"] == [0, 1, 2, 3, 4]
    mk = stats["methods"]["mkcnet"]
    # the point estimate is the mean of the per-run evaluator AUCs, inside its interval
    per_run = [diagnosis_metrics(r["probs"], r["labels"])["auc"] for r in runs["mkcnet"]]
    assert mk["all"]["auc"] == pytest.approx(np.mean(per_run), abs=1e-12)
    for name in stats["subsets"]:
        lo, hi = mk[name]["auc_ci"]
        assert lo < mk[name]["auc"] < hi
    assert mk["q0"]["auc"] < mk["q1"]["auc"] < mk["q2"]["auc"]  # the simulated grade effect
    assert mk["low"]["n"] == int((runs["mkcnet"][0]["quality"] < 2).sum())
    # a clearly better method: the paired interval excludes 0; equal signals: it covers 0
    d = stats["differences"]["mkcnet - vanilla"]["low"]
    assert d["auc_ci"][0] > 0.05 and d["positive"] == 1.0
    assert script._verdict(d) == "yes"
    same = stats["differences"]["mkcnet - multitask"]["all"]
    assert same["auc_ci"][0] < 0 < same["auc_ci"][1]
    # fixed RNG: identical tables on a second call
    again = script.bundle_statistics(runs, INFO, num_boot=300)
    assert again["methods"]["vanilla"]["low"]["auc_ci"] == stats["methods"]["vanilla"]["low"]["auc_ci"]


def test_bootstrap_resamples_seeds_and_images(script):
    rng = np.random.default_rng(2)
    # identical runs under every seed: only the image resampling widens the interval, and a method compared with
    # itself differs by exactly 0 in every replicate
    one = _runs(rng, {"mkcnet": 1.5}, num_seeds=1)["mkcnet"][0]
    runs = {"mkcnet": [{**one, "seed": s} for s in range(4)], "vanilla": [{**one, "seed": s} for s in range(4)]}
    stats = script.bundle_statistics(runs, INFO, num_boot=200)
    assert stats["differences"]["mkcnet - vanilla"]["all"]["auc_ci"] == (0.0, 0.0)
    width_images = np.diff(stats["methods"]["mkcnet"]["all"]["auc_ci"])[0]
    assert width_images > 0.01
    # runs that differ only by seed (a constant per-seed offset of the score) add seed variance: wider interval
    spread = {"mkcnet": []}
    for s, offset in enumerate([-1.0, -0.3, 0.3, 1.0]):
        p1 = 1 / (1 + np.exp(-(np.log(one["probs"][:, 1] / one["probs"][:, 0]) * (1 + offset))))
        spread["mkcnet"].append({**one, "seed": s, "probs": np.stack([1 - p1, p1], 1)})
    wide = script.bundle_statistics(spread, INFO, num_boot=200)["methods"]["mkcnet"]["all"]["auc_ci"]
    assert np.diff(wide)[0] > 1.5 * width_images
    with pytest.raises(ValueError, match="test images differ"):
        bad = {"mkcnet": [one], "vanilla": [{**one, "labels": 1 - one["labels"]}]}
        script.bundle_statistics(bad, INFO, num_boot=10)


class FakeCache:
    """A BundleCache whose runs write a result.json without training (counts calls; fails on request)."""

    def __init__(self, script, root, bundle, fail=()):
        self.inner = script.BundleCache(root, bundle, {})
        self.calls, self.fail = [], set(fail)

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def build_data(self, threads=1):
        self.inner.data_dir.mkdir(parents=True, exist_ok=True)
        (self.inner.data_dir / "datalist.json").write_text("{}")
        return 0.0

    def run(self, method, seed, threads=1):
        self.calls.append((method, seed))
        if (method, seed) in self.fail:
            raise RuntimeError("simulated failure")
        dest = self.inner.run_dir(method, seed)
        dest.mkdir(parents=True)
        result = {"method": method, "seed": seed, "train_s": 1.0, "eval_s": 1.0, "auc_evaluator": 0.5}
        (dest / "result.json").write_text(json.dumps(result))
        return result


def test_resume_and_cache_key(script, tmp_path, monkeypatch):
    bundles = tmp_path / "bundles"
    for b in ("b1", "b2"):
        (bundles / b / "configs").mkdir(parents=True)
        for name in script.RUN_CONFIGS:
            (bundles / b / "configs" / name).write_text(f"{b} {name}")
    monkeypatch.setattr(script, "BUNDLES_DIR", bundles)
    tasks = script.ordered_tasks(["b1", "b2"], ["mkcnet", "vanilla"], [0, 1])
    assert tasks[:4] == [("b1", "mkcnet", 0), ("b1", "vanilla", 0), ("b2", "mkcnet", 0), ("b2", "vanilla", 0)]
    caches = {
        b: FakeCache(script, tmp_path / "cache", b, fail=[("vanilla", 1)] if b == "b2" else []) for b in "b1 b2".split()
    }
    results, errors = script.execute(tasks, caches, jobs=2, log=lambda _: None)
    assert len(results) == 7 and len(errors) == 1 and "b2 vanilla seed 1" in errors[0]
    # restart: only the failed run is tried again
    caches = {b: FakeCache(script, tmp_path / "cache", b) for b in ("b1", "b2")}
    results, errors = script.execute(tasks, caches, jobs=2, log=lambda _: None)
    assert len(results) == 8 and not errors
    assert caches["b1"].calls == [] and caches["b2"].calls == [("vanilla", 1)]
    # the configs are snapshotted; an edited config gives a new cache folder, and so do other overrides
    old_root = caches["b1"].root
    (bundles / "b1" / "configs" / "demo.json").write_text("changed")
    assert script.BundleCache(tmp_path / "cache", "b1", {}).root != old_root
    assert script.BundleCache(tmp_path / "cache", "b2", {"max_epochs": 1}).root != caches["b2"].root
    assert (old_root / "configs" / "demo.json").read_text() == "b1 demo.json"
