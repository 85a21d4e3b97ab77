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


def test_item_weights_by_hand():
    """A pair takes the weight of its worse item; the loss is the weighted mean; weights of 1 give the plain mean."""
    scores = torch.tensor([2.0, 0.5, 1.0])
    groups = torch.zeros(3, dtype=torch.long)
    levels = torch.tensor([0, 2, 1])
    weights = torch.tensor([7.0, 3.0, 0.5])  # item 0 is never the worse item, so its 7 weighs nothing
    # pairs (better, worse): (0,1) margin term 0.0, weight 3; (0,2) 0.2, weight 0.5; (2,1) 0.7, weight 3
    loss = PairwiseRankingLoss("margin", margin=1.2)(scores, groups, levels, weights)
    assert loss.item() == pytest.approx((3 * 0.0 + 0.5 * 0.2 + 3 * 0.7) / 6.5, rel=1e-6)
    # with gap weights the pair weight is the product: gaps 2, 1, 1
    both = PairwiseRankingLoss("margin", margin=1.2, gap_weighted=True)(scores, groups, levels, weights)
    assert both.item() == pytest.approx((6 * 0.0 + 0.5 * 0.2 + 3 * 0.7) / 9.5, rel=1e-6)
    plain = PairwiseRankingLoss()(scores, groups, levels)
    assert torch.equal(PairwiseRankingLoss()(scores, groups, levels, torch.ones(3)), plain)
    # gradient: only the weighted pairs move the scores; a zero weight silences pair (0,2) and item 2's own pairs
    x = torch.tensor([0.0, 0.0, 0.0], requires_grad=True)
    PairwiseRankingLoss()(x, groups, levels, torch.tensor([1.0, 1.0, 0.0])).backward()
    # left: (0,1) and (2,1), each d = 0 -> d loss / d d = -0.5, weight 1 / 2
    assert x.grad.tolist() == pytest.approx([-0.25, 0.5, -0.25])
    with pytest.raises(ValueError, match="non-negative"):
        PairwiseRankingLoss()(scores, groups, levels, torch.tensor([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match="one value per item"):
        PairwiseRankingLoss()(scores, groups, levels, torch.ones(2))


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


def test_trainer_passes_batch_rank_weights():
    """With a ``rank_weight`` batch key the first step's ranking term is the weighted loss of the same scores: all
    ones equal the unweighted term; weight on level 2 only differs from it."""
    batches = _ladder_batches(1)
    terms = {}
    for name, w in {"none": None, "ones": [1.0, 1.0, 1.0], "mild": [1.0, 0.0, 1.0]}.items():
        batch = dict(batches[0])
        if w is not None:
            batch["rank_weight"] = torch.tensor(w * 2)
        trainer = _trainer([batch], PairwiseRankingLoss())
        trainer.run()
        terms[name] = float(trainer.state.output["loss_rank"])
    assert terms["ones"] == pytest.approx(terms["none"], rel=1e-6)
    assert terms["mild"] != pytest.approx(terms["none"], rel=1e-3)
    # the loss gets the batch's weights as its fourth argument, one per image
    seen = []

    def recording(scores, groups, levels, *rest):
        seen.append([t.clone() for t in rest])
        return PairwiseRankingLoss()(scores, groups, levels, *rest)

    batch = {**batches[0], "rank_weight": torch.tensor([1.0, 0.0, 1.0] * 2)}
    _trainer([batch], recording).run()
    assert len(seen) == 1 and torch.equal(seen[0][0], batch["rank_weight"])
    _trainer(batches, recording).run()
    assert seen[1] == []  # no key, no weights


def test_trainer_ranking_off_by_default_and_keys_checked():
    batches = _ladder_batches(1)
    trainer = _trainer(batches)
    trainer.run()
    assert "loss_rank" not in trainer.state.output
    assert float(trainer.state.output["loss"]) == pytest.approx(float(trainer.state.output["loss_reg"]))
    no_keys = [{"image": batches[0]["image"], "mos": batches[0]["mos"]}]
    with pytest.raises(ValueError, match="ladder"):
        _trainer(no_keys, PairwiseRankingLoss()).run()
