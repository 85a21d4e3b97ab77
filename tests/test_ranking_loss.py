"""PairwiseRankingLoss / ladder_pairs and the ranking option of DomainAdaptationTrainer."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from monai_iqad.engines import DomainAdaptationTrainer
from monai_iqad.losses import PairwiseRankingLoss, ladder_pairs
from monai_iqad.networks import SAQM


def test_ladder_pairs_only_within_group_and_ordered():
    groups = torch.tensor([0, 0, 0, 1, 1])
    levels = torch.tensor([0, 2, 1, 3, 0])
    i, j = ladder_pairs(groups, levels)
    pairs = sorted(zip(i.tolist(), j.tolist()))
    # group 0: (0 better than 1), (0 better than 2), (2 better than 1); group 1: (4 better than 3)
    assert pairs == [(0, 1), (0, 2), (2, 1), (4, 3)]
    with pytest.raises(ValueError, match="same length"):
        ladder_pairs(groups, levels[:3])


def test_ranknet_and_margin_values_by_hand():
    scores = torch.tensor([2.0, 0.5, 1.0])
    groups = torch.zeros(3, dtype=torch.long)
    levels = torch.tensor([0, 2, 1])
    # pairs: (0,1) d=1.5, (0,2) d=1.0, (2,1) d=0.5
    d = torch.tensor([1.5, 1.0, 0.5])
    expected = F.softplus(-d).mean()
    assert PairwiseRankingLoss()(scores, groups, levels).item() == pytest.approx(expected.item(), rel=1e-6)
    assert PairwiseRankingLoss(temperature=0.5)(scores, groups, levels).item() == pytest.approx(
        F.softplus(-d / 0.5).mean().item(), rel=1e-6
    )
    margin = PairwiseRankingLoss("margin", margin=1.2)(scores, groups, levels).item()
    assert margin == pytest.approx((0.0 + 0.2 + 0.7) / 3, rel=1e-6)
    # gap weights: (0,1) gap 2, (0,2) gap 1, (2,1) gap 1
    gw = PairwiseRankingLoss("margin", margin=1.2, gap_weighted=True)(scores, groups, levels).item()
    assert gw == pytest.approx((2 * 0.0 + 0.2 + 0.7) / 4, rel=1e-6)


def test_gradient_pushes_better_item_up_and_no_pairs_is_zero():
    scores = torch.tensor([0.0, 0.0], requires_grad=True)
    loss = PairwiseRankingLoss()(scores, torch.tensor([5, 5]), torch.tensor([0, 3]))
    assert loss.item() == pytest.approx(math.log(2.0))
    loss.backward()
    assert scores.grad[0] < 0 < scores.grad[1]  # descending the loss raises the better score
    lone = torch.tensor([1.0, 2.0], requires_grad=True)
    zero = PairwiseRankingLoss()(lone, torch.tensor([0, 1]), torch.tensor([0, 1]))
    assert zero.item() == 0.0
    zero.backward()
    assert torch.equal(lone.grad, torch.zeros(2))


def test_validation():
    with pytest.raises(ValueError, match="mode"):
        PairwiseRankingLoss("hinge")
    with pytest.raises(ValueError, match="margin"):
        PairwiseRankingLoss("margin", margin=-1)
    with pytest.raises(ValueError, match="temperature"):
        PairwiseRankingLoss(temperature=0)
    with pytest.raises(ValueError, match="one value per item"):
        PairwiseRankingLoss()(torch.zeros(3), torch.zeros(2), torch.zeros(3))


def _ladder_batches(n_batches: int = 4):
    """Two ladders of 3 levels each per batch: Gaussian noise of growing strength on one random texture."""
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n_batches):
        images, mos, ladder, level = [], [], [], []
        for lad in range(2):
            base = torch.rand(1, 3, 32, 32, generator=g)
            for lev, sigma in enumerate((0.0, 0.5, 1.0)):
                images.append(base + sigma * torch.randn(1, 3, 32, 32, generator=g))
                mos.append(1.0 - 0.4 * lev)
                ladder.append(lad)
                level.append(lev)
        out.append(
            {
                "image": torch.cat(images),
                "mos": torch.tensor(mos),
                "ladder": torch.tensor(ladder),
                "level": torch.tensor(level),
            }
        )
    return out


def _trainer(batches, ranking_loss=None, ranking_weight=1.0):
    torch.manual_seed(0)
    net = SAQM(width=1 / 16, regressor_channels=(32,))
    return DomainAdaptationTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=batches,
        network=net,
        optimizer=torch.optim.Adam(net.parameters(), 1e-3),
        mode="source_only",
        ranking_loss=ranking_loss,
        ranking_weight=ranking_weight,
        decollate=False,
    )


def test_trainer_adds_weighted_ranking_term():
    batches = _ladder_batches(1)
    losses = {}
    for weight in (0.0, 2.0):
        trainer = _trainer(batches, PairwiseRankingLoss(), weight)
        trainer.run()
        out = trainer.state.output
        losses[weight] = out
        assert "loss_rank" in out
        assert float(out["loss"]) == pytest.approx(float(out["loss_reg"]) + weight * float(out["loss_rank"]), rel=1e-5)
    # same initial weights and batch: the first step's regression and ranking terms agree across weights
    assert float(losses[0.0]["loss_reg"]) == pytest.approx(float(losses[2.0]["loss_reg"]), rel=1e-6)


def test_trainer_ranking_off_by_default_and_keys_checked():
    batches = _ladder_batches(1)
    trainer = _trainer(batches)
    trainer.run()
    assert "loss_rank" not in trainer.state.output
    assert float(trainer.state.output["loss"]) == pytest.approx(float(trainer.state.output["loss_reg"]))
    no_keys = [{"image": batches[0]["image"], "mos": batches[0]["mos"]}]
    with pytest.raises(ValueError, match="ladder"):
        _trainer(no_keys, PairwiseRankingLoss()).run()
