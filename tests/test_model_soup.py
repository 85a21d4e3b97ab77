"""Weight averaging of fine-tunes (``average_state_dicts``), and the greedy soup and the prediction ensemble of
``benchmarks/iqa_ladder.py``."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from monai_iqad.networks import SAQM, average_state_dicts

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_average_state_dicts_by_hand():
    a = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor(0.5, dtype=torch.float16), "n": torch.tensor(3)}
    b = {"w": torch.tensor([3.0, 6.0]), "b": torch.tensor(1.5, dtype=torch.float16), "n": torch.tensor(3)}
    uniform = average_state_dicts([a, b])
    torch.testing.assert_close(uniform["w"], torch.tensor([2.0, 4.0]))
    assert uniform["b"].dtype == torch.float16 and float(uniform["b"]) == 1.0
    assert uniform["n"].dtype == torch.int64 and int(uniform["n"]) == 3
    weighted = average_state_dicts([a, {"model": b}], weights=[3, 1])  # normalised to 0.75 / 0.25; checkpoint unwrapped
    torch.testing.assert_close(weighted["w"], torch.tensor([1.5, 3.0]))
    assert average_state_dicts([a])["w"] is not a["w"]  # a copy, not the input
    with pytest.raises(ValueError, match="at least one"):
        average_state_dicts([])
    with pytest.raises(ValueError, match="non-negative"):
        average_state_dicts([a, b], weights=[1, -1])
    with pytest.raises(ValueError, match="non-negative"):
        average_state_dicts([a, b], weights=[1])
    with pytest.raises(ValueError, match="other keys"):
        average_state_dicts([a, {k: v for k, v in b.items() if k != "n"}])
    with pytest.raises(ValueError, match=r"w: shape \(3,\)"):
        average_state_dicts([a, {**b, "w": torch.zeros(3)}])
    with pytest.raises(ValueError, match="non-float tensor differs"):
        average_state_dicts([a, {**b, "n": torch.tensor(4)}])


def test_average_of_saqm_fine_tunes_loads_and_interpolates():
    torch.manual_seed(0)
    base = SAQM(width=0.125)
    tuned = SAQM(width=0.125)
    tuned.load_state_dict({k: v + 0.01 for k, v in base.state_dict().items()})
    soup = SAQM(width=0.125)
    soup.load_state_dict(average_state_dicts([base.state_dict(), tuned.state_dict()]))
    for k, v in soup.state_dict().items():
        torch.testing.assert_close(v, base.state_dict()[k] + 0.005)


def _ladder(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the script imports bench_utils from its own folder
    spec = importlib.util.spec_from_file_location("iqa_ladder", BENCHMARKS / "iqa_ladder.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_greedy_soup_recipe(monkeypatch, tmp_path):
    """Recipe 1 of Wortsman et al. with a score whose optimum is known: score = -(gamma - 0.5)^2 of the network's
    attention gate. Ingredients 0.9 (best alone), 0.0, 1.0, 3.0: the soup starts at 0.9, adds 0.0 (mean 0.45, better),
    skips 1.0 (mean 0.63) and 3.0 (mean 1.3), so it is the average of 0.9 and 0.0. A reference that every ingredient
    trails by more than the allowed drop writes nothing."""
    ladder = _ladder(monkeypatch)

    def evaluator(items, paths, bf16, modalities):
        def evaluate(net):
            score = -((float(net.attention.gamma) - 0.5) ** 2)
            return score, {"f": score}, ""

        return evaluate

    monkeypatch.setattr(ladder, "_evaluator", evaluator)
    paths = []
    torch.manual_seed(0)
    base = SAQM(width=0.125).state_dict()
    for g in (0.9, 0.0, 1.0, 3.0, 0.5):
        paths.append(str(tmp_path / f"g{g}.pt"))
        torch.save({**base, "attention.gamma": torch.tensor([g])}, paths[-1])
    out = tmp_path / "soup.pt"
    judge = ladder._judge([], [], 0.125, False, [])
    assert ladder._greedy_soup(paths[:4], str(out), judge, 0.125) == 0
    soup = torch.load(out, weights_only=True)
    assert float(soup["attention.gamma"]) == pytest.approx(0.45)
    torch.testing.assert_close(soup["attention.query.0.weight"], base["attention.query.0.weight"])
    out.unlink()
    strict = ladder._judge([], [], 0.125, False, [], reference=paths[4], max_drop=0.1)
    assert ladder._greedy_soup(paths[:4], str(out), strict, 0.125) == 1
    assert not out.exists()


def test_prediction_ensemble_mode(monkeypatch, tmp_path):
    """``iqa_ladder.py --ensemble``: with a judge whose value is linear in the scores (the mean score of a fixed batch
    of images) the ensemble's value is the mean of its members' values; the written ensemble loads back through
    ``_load_saqm`` and scores every image with the mean of the members' scores (modality-conditioned members, so the
    input planes are those of the members); a rule it cannot pass writes nothing."""
    from monai_iqad.networks import SAQMEnsemble

    ladder = _ladder(monkeypatch)
    torch.manual_seed(0)
    images = [torch.rand(1, 5, 64, 64) for _ in range(3)]
    mods = ["CT", "US", None]

    def evaluator(items, paths, bf16, modalities):
        def evaluate(net):
            score = float(np.mean(ladder._score_saqm(net, images, False, mods)))
            return score, {"f": score}, ""

        return evaluate

    monkeypatch.setattr(ladder, "_evaluator", evaluator)
    paths, values = [], []
    for seed in range(3):
        torch.manual_seed(seed)
        net = SAQM(in_channels=9, width=0.125).eval()
        paths.append(str(tmp_path / f"s{seed}.pt"))
        torch.save({"model": net.state_dict()}, paths[-1])  # a training checkpoint layout is unwrapped too
        values.append(float(np.mean(ladder._score_saqm(net, images, False, mods))))
    judge = ladder._judge([], [], 0.125, False, [])
    out = tmp_path / "ens.pt"
    assert ladder._ensemble(paths, str(out), judge, 0.125) == 0
    ens = ladder._load_saqm(out, 0.125)
    assert isinstance(ens, SAQMEnsemble) and len(ens.members) == 3 and ens.in_channels == 9
    assert judge(ens)[0] == pytest.approx(np.mean(values), abs=1e-6)
    each = np.stack([ladder._score_saqm(ladder._load_saqm(Path(p), 0.125), images, False, mods) for p in paths])
    np.testing.assert_allclose(ladder._score_saqm(ens, images, False, mods), each.mean(0), atol=1e-6)
    out.unlink()
    strict = ladder._judge([], [], 0.125, False, [], reference=paths[0], max_drop=-1.0)
    assert ladder._ensemble(paths, str(out), strict, 0.125) == 1 and not out.exists()
