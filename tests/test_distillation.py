"""Teacher distillation: BernoulliKLDivLoss values and gradients, frozen_copy, the DomainAdaptationTrainer term."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from monai_iqad.engines import DomainAdaptationTrainer
from monai_iqad.losses import BernoulliKLDivLoss
from monai_iqad.networks import SAQM, frozen_copy


def test_bernoulli_kl_hand_value_zero_and_reductions():
    # p = sigmoid(log 3) = 0.75, q = sigmoid(0) = 0.5: 0.75 ln(1.5) + 0.25 ln(0.5)
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    loss = BernoulliKLDivLoss()
    value = loss(torch.tensor([0.0]), torch.tensor([math.log(3.0)]))
    assert float(value) == pytest.approx(expected, rel=1e-6)
    x = torch.randn(4, 5)
    assert float(loss(x, x)) == pytest.approx(0.0, abs=1e-7)
    assert BernoulliKLDivLoss("none")(x, x + 1).shape == (4, 5)
    assert float(BernoulliKLDivLoss("sum")(x, x + 1)) == pytest.approx(20 * float(loss(x, x + 1)), rel=1e-5)
    # large logits stay finite (log-sigmoid form)
    assert torch.isfinite(loss(torch.tensor([-60.0, 60.0]), torch.tensor([60.0, -60.0])))
    with pytest.raises(ValueError, match="shapes differ"):
        loss(torch.zeros(2), torch.zeros(3))


def test_bernoulli_kl_is_bce_minus_teacher_entropy_with_the_bce_gradient():
    g = torch.Generator().manual_seed(0)
    student = torch.randn(7, generator=g, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(7, generator=g, dtype=torch.float64)
    p = torch.sigmoid(teacher)
    entropy = -(p * p.log() + (1 - p) * (1 - p).log())
    kl = BernoulliKLDivLoss("none")(student, teacher)
    bce = F.binary_cross_entropy_with_logits(student, p, reduction="none")
    assert torch.allclose(kl, bce - entropy, atol=1e-12)
    (grad,) = torch.autograd.grad(kl.sum(), student)
    assert torch.allclose(grad, torch.sigmoid(student) - p, atol=1e-12)
    assert torch.autograd.gradcheck(lambda s: BernoulliKLDivLoss()(s, teacher), (student,))


def test_frozen_copy_is_a_detached_eval_snapshot():
    net = nn.Sequential(nn.Linear(3, 2), nn.Dropout(0.5))
    snap = frozen_copy(nn.DataParallel(net))
    assert isinstance(snap, nn.Sequential) and not snap.training
    assert not any(p.requires_grad for p in snap.parameters())
    assert all(p.requires_grad for p in net.parameters()) and net.training
    with torch.no_grad():
        net[0].weight.add_(1.0)
    assert not torch.equal(snap[0].weight, net[0].weight)


def _batches(n: int = 3) -> list[dict]:
    g = torch.Generator().manual_seed(3)
    return [{"image": torch.rand(2, 3, 32, 32, generator=g), "mos": torch.rand(2, generator=g)} for _ in range(n)]


def _trainer(batches, net, **kwargs) -> DomainAdaptationTrainer:
    optimizer = torch.optim.Adam(net.parameters(), 1e-2)
    return DomainAdaptationTrainer("cpu", 1, batches, net, optimizer, mode="source_only", decollate=False, **kwargs)


def _net(seed: int) -> SAQM:
    torch.manual_seed(seed)
    return SAQM(width=1 / 16, regressor_channels=(16,))


def test_trainer_adds_the_weighted_kl_to_the_teacher_scores():
    batches = _batches(1)
    student, other = _net(0), _net(1)
    with torch.no_grad():
        for param in other.parameters():
            param.mul_(2.0)  # scores further from 0.5 than at initialisation
    teacher = frozen_copy(other)
    with torch.no_grad():
        s_logits = student(batches[0]["image"], patch_level=True)
        t_logits = teacher(batches[0]["image"], patch_level=True)
    expected = float(BernoulliKLDivLoss()(s_logits, t_logits))
    assert expected > 1e-2
    trainer = _trainer(batches, student, teacher=teacher, distillation_weight=2.5)
    trainer.run()
    out = trainer.state.output
    assert float(out["loss_distill"]) == pytest.approx(expected, rel=1e-5)
    assert float(out["loss"]) == pytest.approx(float(out["loss_reg"]) + 2.5 * expected, rel=1e-5)
    # the teacher is neither trained nor switched to train mode
    assert not teacher.training
    assert torch.equal(teacher(batches[0]["image"], patch_level=True), t_logits)


def test_teacher_anchors_the_network_to_its_start():
    batches = _batches(3)

    def drift(**kwargs) -> float:
        net = _net(0)
        start = frozen_copy(net)
        trainer = _trainer(batches, net, **kwargs)
        trainer.run()
        with torch.no_grad():
            x = torch.cat([b["image"] for b in batches])
            return float((net(x) - start(x)).abs().max())

    free = drift()
    anchored = drift(teacher=frozen_copy(_net(0)), distillation_weight=50.0)
    assert anchored < 0.5 * free


def test_teacher_starts_at_zero_distance_and_is_validated():
    batches = _batches(1)
    net = _net(0)
    trainer = _trainer(batches, net, teacher=frozen_copy(net))
    trainer.run()
    assert float(trainer.state.output["loss_distill"]) == pytest.approx(0.0, abs=1e-7)  # first step: same weights
    with pytest.raises(ValueError, match="frozen"):
        _trainer(batches, _net(0), teacher=_net(1))
    with pytest.raises(ValueError, match="distillation_weight"):
        _trainer(batches, _net(0), teacher=frozen_copy(_net(1)), distillation_weight=-1.0)
    off = _trainer(batches, _net(0))
    off.run()
    assert "loss_distill" not in off.state.output
