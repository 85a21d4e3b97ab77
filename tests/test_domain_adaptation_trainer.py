"""DomainAdaptationTrainer: the four SAQM configurations, gradient reversal, schedule, masking, errors."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from ignite.engine import Events
from monai.engines import IterationEvents
from torch.utils.data import DataLoader, Sampler

from monai_iqad.engines import DomainAdaptationTrainer, PrepareIQABatch
from monai_iqad.networks import SAQM, DomainClassifier, dann_lambda

WIDTH = 1 / 16
NAN = float("nan")
OUTPUT_KEYS = {"image", "label", "pred", "loss", "loss_reg", "loss_dom", "grl_lambda", "gamma", "domain_acc"}


def _source_batches(n: int, batch: int = 2) -> list[dict]:
    g = torch.Generator().manual_seed(10)
    return [
        {"image": torch.rand(batch, 3, 32, 32, generator=g), "mos": torch.rand(batch, generator=g)} for _ in range(n)
    ]


def _target_batch(labelled=(1, 0, 1), mos=(0.3, NAN, 0.8), size: int = 32) -> dict:
    g = torch.Generator().manual_seed(20)
    batch = {"image": torch.rand(len(mos), 3, size, size, generator=g), "mos": torch.tensor(mos)}
    if labelled is not None:
        batch["labelled"] = torch.tensor(labelled)
    return batch


def _models(seed: int = 0, dropout: float | None = None):
    torch.manual_seed(seed)
    net = SAQM(width=WIDTH)
    head = DomainClassifier(net.out_channels, hidden_channels=(16,), dropout=dropout)
    return net, head


def _trainer(mode, source, target=None, net=None, head=None, max_epochs=1, with_head=True, **kwargs):
    if net is None:
        net, head = _models()
    params = [*net.parameters(), *(head.parameters() if with_head else [])]
    return DomainAdaptationTrainer(
        device="cpu",
        max_epochs=max_epochs,
        train_data_loader=source,
        network=net,
        optimizer=torch.optim.Adam(params, lr=1e-2),
        domain_classifier=head if with_head else None,
        target_data_loader=target,
        mode=mode,
        **kwargs,
    )


def _first(output):
    """state.output is a list of per-sample dicts after decollation."""
    return output[0] if isinstance(output, list) else output


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before, module):
    return {k for k, v in module.state_dict().items() if not torch.equal(before[k], v)}


@pytest.mark.parametrize("mode", ["target_only", "source_only", "unsupervised", "semi_supervised"])
def test_modes_train_and_update_the_right_parameters(mode):
    net, head = _models()
    net_before, head_before = _snapshot(net), _snapshot(head)
    adversarial = mode in ("unsupervised", "semi_supervised")
    source = _source_batches(2) if mode != "target_only" else [_target_batch(None, (0.3, 0.5, 0.8))] * 2
    trainer = _trainer(mode, source, [_target_batch()] if adversarial else None, net, head)
    trainer.run()
    assert trainer.state.iteration == 2
    out = _first(trainer.state.output)
    assert OUTPUT_KEYS <= set(out)
    assert torch.isfinite(torch.as_tensor(out["loss"])) and torch.isfinite(torch.as_tensor(out["loss_reg"]))
    assert 0.0 <= float(out["pred"]) <= 1.0
    assert float(out["gamma"]) == pytest.approx(net.attention.gamma.item())
    assert "attention.value.0.weight" in _changed(net_before, net)
    assert "attention.gamma" in _changed(net_before, net)
    if adversarial:
        assert _changed(head_before, head) == set(head_before)
        assert float(out["loss_dom"]) > 0 and 0.0 <= float(out["domain_acc"]) <= 1.0
        assert float(out["grl_lambda"]) == pytest.approx(dann_lambda(0.5))
    else:
        assert not _changed(head_before, head)
        assert float(out["loss_dom"]) == 0.0 and float(out["grl_lambda"]) == 0.0


@pytest.mark.parametrize("mode", ["target_only", "source_only"])
def test_non_adversarial_modes_need_no_domain_classifier(mode):
    trainer = _trainer(mode, _source_batches(1), with_head=False, decollate=False)
    trainer.run()
    assert OUTPUT_KEYS <= set(trainer.state.output)
    assert torch.isnan(trainer.state.output["domain_acc"])


def test_lambda_follows_the_schedule():
    net, head = _models()
    trainer = _trainer("unsupervised", _source_batches(3), [_target_batch()], net, head, max_epochs=2)
    seen = []

    @trainer.on(Events.ITERATION_COMPLETED)
    def _record(engine):
        seen.append((engine.state.iteration, head.grl.lambda_, float(_first(engine.state.output)["grl_lambda"])))

    trainer.run()
    assert [s[0] for s in seen] == list(range(1, 7))
    for it, on_module, in_output in seen:
        expected = dann_lambda((it - 1) / 6)
        assert on_module == pytest.approx(expected) and in_output == pytest.approx(expected)
    assert seen[0][1] == 0.0 and all(b[1] > a[1] for a, b in zip(seen, seen[1:]))


def test_domain_head_gets_plain_gradient_and_features_get_reversed_gradient():
    net, head = _models(dropout=None)
    source, target = _source_batches(2), _target_batch()
    trainer = _trainer("unsupervised", source, [target], net, head, domain_loss_weight=1.0)
    state, grads = {}, {}

    @trainer.on(Events.ITERATION_STARTED)
    def _snap(engine):
        if engine.state.iteration == 2:
            state["net"], state["head"] = copy.deepcopy(net.state_dict()), copy.deepcopy(head.state_dict())

    @trainer.on(IterationEvents.BACKWARD_COMPLETED)
    def _grads(engine):
        if engine.state.iteration == 2:
            grads["net"] = {n: p.grad.clone() for n, p in net.named_parameters()}
            grads["head"] = {n: p.grad.clone() for n, p in head.named_parameters()}

    trainer.run()
    lam = dann_lambda(0.5)

    # manual recomputation from the iteration-2 weights, without any reversal
    ref_net, ref_head = _models()
    ref_net.load_state_dict(state["net"])
    ref_head.load_state_dict(state["head"])
    x = torch.cat([source[1]["image"], target["image"]])
    logits, feats = ref_net(x, patch_level=True, return_features=True)
    loss_reg = F.binary_cross_entropy_with_logits(logits[:2].reshape(-1), source[1]["mos"])
    dom_logits = ref_head.mlp(feats.reshape(-1, feats.shape[-1])).reshape(-1)  # the head without its GRL
    loss_dom = F.binary_cross_entropy_with_logits(dom_logits, torch.tensor([0.0, 0, 1, 1, 1]))
    net_params = list(ref_net.parameters())
    g_reg = torch.autograd.grad(loss_reg, net_params, retain_graph=True, allow_unused=True)
    g_dom = torch.autograd.grad(loss_dom, net_params + list(ref_head.parameters()), allow_unused=True)
    g_dom_net, g_dom_head = g_dom[: len(net_params)], g_dom[len(net_params) :]

    def _z(g, p):
        return torch.zeros_like(p) if g is None else g

    for (name, p), gr, gd in zip(ref_net.named_parameters(), g_reg, g_dom_net):
        torch.testing.assert_close(grads["net"][name], _z(gr, p) - lam * _z(gd, p), rtol=1e-4, atol=1e-6)
    # the value stack does receive a (reversed) domain gradient
    value_w = [i for i, (n, _) in enumerate(ref_net.named_parameters()) if n == "attention.value.0.weight"][0]
    assert g_dom_net[value_w].abs().sum() > 0
    for (name, p), gd in zip(ref_head.named_parameters(), g_dom_head):
        torch.testing.assert_close(grads["head"][name], _z(gd, p), rtol=1e-5, atol=1e-7)


def _one_step_loss_reg(mode, target, seed=0):
    net, head = _models(seed)
    trainer = _trainer(mode, _source_batches(1), [target], net, head, decollate=False)
    trainer.run()
    return float(trainer.state.output["loss_reg"]), trainer


def test_semi_supervised_uses_only_labelled_target_items():
    base, _ = _one_step_loss_reg("semi_supervised", _target_batch((1, 0, 1), (0.3, NAN, 0.8)))
    assert base == base  # finite: the NaN MOS of the unlabelled item never enters the loss
    # the MOS of unlabelled items is irrelevant
    other, _ = _one_step_loss_reg("semi_supervised", _target_batch((1, 0, 1), (0.3, 0.99, 0.8)))
    assert other == pytest.approx(base, abs=1e-7)
    # flipping a flag changes the regression loss
    fewer, _ = _one_step_loss_reg("semi_supervised", _target_batch((1, 0, 0), (0.3, NAN, 0.8)))
    assert fewer != pytest.approx(base, abs=1e-6)
    # unsupervised ignores target labels altogether
    unsup, _ = _one_step_loss_reg("unsupervised", _target_batch((1, 0, 1), (0.3, NAN, 0.8)))
    assert unsup != pytest.approx(base, abs=1e-6)
    # without a `labelled` key, a finite MOS marks the labelled items
    implicit, _ = _one_step_loss_reg("semi_supervised", _target_batch(None, (0.3, NAN, 0.8)))
    assert implicit == pytest.approx(base, abs=1e-7)

    # the value itself: BCE over source patches + labelled target patches, from the initial weights
    net, _ = _models(0)
    source, target = _source_batches(1)[0], _target_batch()
    with torch.no_grad():
        logits = net(torch.cat([source["image"], target["image"]]), patch_level=True).reshape(-1)
    manual = F.binary_cross_entropy_with_logits(logits[[0, 1, 2, 4]], torch.tensor([*source["mos"], 0.3, 0.8]))
    assert base == pytest.approx(float(manual), rel=1e-5)


def test_labelled_item_with_nan_mos_is_an_error():
    with pytest.raises(ValueError, match="non-finite"):
        _one_step_loss_reg("semi_supervised", _target_batch((1, 1, 0), (0.3, NAN, 0.8)))


def test_nan_loss_raises_floating_point_error():
    source = _source_batches(2)
    source[1]["mos"] = torch.tensor([NAN, 0.5])
    trainer = _trainer("source_only", source, with_head=False)
    with pytest.raises(FloatingPointError, match=r"epoch 1, iteration 2"):
        trainer.run()


def test_different_crop_sizes_use_two_forwards():
    trainer = _trainer("unsupervised", _source_batches(1), [_target_batch(size=64)], decollate=False)
    trainer.run()
    out = trainer.state.output
    assert torch.isfinite(out["loss_dom"]) and out["loss_dom"] > 0
    assert 0.0 <= float(out["domain_acc"]) <= 1.0


class _EpochSampler(Sampler):
    def __init__(self, n: int) -> None:
        self.n, self.epoch, self.calls = n, 0, []

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.calls.append(epoch)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def _target_loader(n: int = 6) -> DataLoader:
    items = [{"image": torch.full((3, 32, 32), float(i) / n), "mos": NAN, "idx": i} for i in range(n)]
    return DataLoader(items, batch_size=2, sampler=_EpochSampler(n))


def _recording_prepare(record):
    def prepare(batch, device=None, non_blocking=False, **kwargs):
        if "idx" in batch:
            record.append(batch["idx"].tolist())
        return PrepareIQABatch()(batch, device, non_blocking, **kwargs)

    return prepare


def test_target_loader_cycles_and_restarts_each_epoch_with_set_epoch():
    seen: list = []
    loader = _target_loader()
    trainer = _trainer("unsupervised", _source_batches(4), loader, max_epochs=2, prepare_batch=_recording_prepare(seen))
    trainer.run()
    assert loader.sampler.calls == [1, 2]
    assert len(seen) == 8
    # 3 target batches per pass: cycles within an epoch, restarts at each epoch
    assert sorted(sum(seen[:3], [])) == list(range(6)) and seen[3] == seen[0]
    assert seen[4:] == _epoch_batches(2)[:4]

    # a run resumed at epoch 2 sees the same target batches as the uninterrupted one
    resumed_seen: list = []
    resumed = _trainer(
        "unsupervised",
        _source_batches(4),
        _target_loader(),
        max_epochs=2,
        prepare_batch=_recording_prepare(resumed_seen),
    )
    resumed.state.epoch, resumed.state.iteration = 1, 4
    resumed.run()
    assert resumed_seen == seen[4:]


def _epoch_batches(epoch: int, n: int = 6) -> list[list[int]]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch)).tolist()
    batches = [order[i : i + 2] for i in range(0, n, 2)]
    return batches + batches


def test_constructor_validation():
    net, head = _models()
    source, target = _source_batches(1), [_target_batch()]
    with pytest.raises(ValueError, match="mode must be one of"):
        _trainer("fully_supervised", source, target, net, head)
    with pytest.raises(ValueError, match="target_data_loader"):
        _trainer("unsupervised", source, None, net, head)
    with pytest.raises(ValueError, match="domain_classifier"):
        _trainer("semi_supervised", source, target, net, head, with_head=False)
    with pytest.raises(ValueError, match="optimizer holds none"):
        DomainAdaptationTrainer(
            "cpu", 1, source, net, torch.optim.Adam(net.parameters()), domain_classifier=head, target_data_loader=target
        )
    with pytest.raises(ValueError, match="not both"):
        _trainer("source_only", source, None, net, head, loss_function=torch.nn.MSELoss(), regression_loss=F.mse_loss)
    with pytest.raises(ValueError, match="domain_loss_weight"):
        _trainer("unsupervised", source, target, net, head, domain_loss_weight=-1.0)
    with pytest.warns(UserWarning, match="ignored"):
        _trainer("source_only", source, target, net, head)


def test_outputs_feed_monai_handlers_and_ignite_correlation_metrics():
    from ignite.metrics.regression import PearsonCorrelation
    from monai.handlers import StatsHandler, from_engine

    net, head = _models()
    trainer = _trainer(
        "semi_supervised",
        _source_batches(2, batch=3),
        [_target_batch()],
        net,
        head,
        train_handlers=[StatsHandler(name="da_test", output_transform=from_engine(["loss_dom"], first=True))],
        key_train_metric={"plcc": PearsonCorrelation(output_transform=from_engine(["pred", "label"]))},
    )
    trainer.run()
    assert -1.0 <= trainer.state.metrics["plcc"] <= 1.0
    assert trainer.state.output[0]["label"].shape == trainer.state.output[0]["pred"].shape == (1,)


def test_bfloat16_autocast_on_cpu():
    """``amp_dtype="bfloat16"``: the adversarial step runs under CPU autocast and stays close to float32."""
    results = {}
    for amp_dtype in (None, "bfloat16"):
        net, head = _models()
        trainer = _trainer("unsupervised", _source_batches(2), [_target_batch()], net, head, amp_dtype=amp_dtype)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.run()
        # no loss scaling for bfloat16: no (CUDA) GradScaler is built, so none warns that CUDA is unavailable
        assert trainer.scaler is None
        assert not [w for w in caught if "GradScaler" in str(w.message)], [str(w.message) for w in caught]
        out = _first(trainer.state.output)
        assert torch.isfinite(torch.as_tensor(out["loss"])) and torch.isfinite(torch.as_tensor(out["loss_dom"]))
        results[amp_dtype] = (trainer.amp, float(out["loss_reg"]))
    assert results[None][0] is False and results["bfloat16"][0] is True
    assert results["bfloat16"][1] != results[None][1]  # autocast changed the arithmetic ...
    assert results["bfloat16"][1] == pytest.approx(results[None][1], abs=0.05)  # ... not the result
