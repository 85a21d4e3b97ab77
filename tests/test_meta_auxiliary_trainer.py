"""MKCNet trainers: hyper-gradient against finite differences, stage isolation, schedules, baselines, NaN guard."""

from __future__ import annotations

import copy
import gc
import warnings
import weakref

import pytest
import torch
from ignite.engine import Events
from monai.engines.utils import IterationEvents
from torch.func import functional_call
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from monai_iqad.engines import MetaAuxiliaryTrainer, MultiTaskTrainer, VanillaTrainer
from monai_iqad.engines.meta_auxiliary import _Int32, _pack_int32, _unpack_int32
from monai_iqad.losses import EntropyRegularizer, FocalLoss
from monai_iqad.networks import MetaLearner, MKCNet, VanillaNet

W = 1 / 16
ND, NQ, K = 2, 2, 2


def _data(n: int, seed: int = 0, dtype=torch.float32) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    return [
        {"image": torch.randn(3, 32, 32, generator=g, dtype=dtype), "diagnosis": i % ND, "quality": (i // 2) % NQ}
        for i in range(n)
    ]


def _nets(dtype=torch.float32):
    return MKCNet(ND, NQ, K, width=W).to(dtype), MetaLearner(ND, NQ, K, width=W).to(dtype)


def _params(module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def _buffers(module) -> dict[str, torch.Tensor]:
    return {n: b.detach().clone() for n, b in module.named_buffers()}


def _same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------------------------------------
def _meta_objective(net, meta, x, d, q, lr, wd, lam, official, lq=1.0, la=1.0):
    """L_φ(θ̃(φ)) evaluated from scratch (forward passes and a first-order ∇_θ only), BN in batch-statistics mode."""
    focal, entropy = FocalLoss(), EntropyRegularizer()
    net, meta = net.train(), meta.train()
    y = meta(x, d, q)
    buffers = {n: b.clone() for n, b in net.named_buffers()}
    params = dict(net.named_parameters())
    out = functional_call(net, {**params, **buffers}, (x,))
    ell = focal(out["diagnosis"], d) + lq * focal(out["quality"], q) + la * focal(out["auxiliary"], y) / K
    grads = torch.autograd.grad(ell, list(params.values()))
    fast = {n: p - lr * (g + wd * p) for (n, p), g in zip(params.items(), grads)}
    buffers = {n: b.clone() for n, b in net.named_buffers()}
    out = functional_call(net, {**fast, **buffers}, (x,), {"official_meta_forward": official})
    return (focal(out["diagnosis"], d) + lq * focal(out["quality"], q) + lam * entropy(y)).item()


def _run_two_stages(meta_gradient, lam, official, lr=0.05, wd=5e-4, fd_epsilon=0.01, seed=0, **kwargs):
    """One batch, 'epoch' schedule: iteration 1 = stage I, iteration 2 = stage II. Returns snapshot and φ-grads."""
    torch.manual_seed(seed)
    net, meta = _nets(torch.float64)
    data = _data(4, seed=seed, dtype=torch.float64)
    trainer = MetaAuxiliaryTrainer(
        "cpu",
        1,
        DataLoader(data, batch_size=4),
        net,
        torch.optim.SGD(net.parameters(), lr=lr, weight_decay=wd),
        meta,
        torch.optim.SGD(meta.parameters(), lr=0.0),
        entropy_weight=lam,
        meta_gradient=meta_gradient,
        official_meta_forward=official,
        fd_epsilon=fd_epsilon,
        decollate=False,
        **kwargs,
    )
    snap = {}

    @trainer.on(Events.ITERATION_COMPLETED(once=1))
    def _after_stage_one(engine):
        snap["net"], snap["meta"] = copy.deepcopy(net), copy.deepcopy(meta)

    trainer.run()
    grads = {n: p.grad.clone() for n, p in meta.named_parameters()}
    batch = next(iter(DataLoader(data, batch_size=4)))
    return snap, grads, (batch["image"], batch["diagnosis"].long(), batch["quality"].long())


@pytest.mark.parametrize(
    "meta_gradient, lam, official, weights",
    [
        ("second_order", 0.3, False, {}),
        ("second_order", 0.0, False, {}),
        ("second_order", 0.3, True, {}),
        ("forward_mode", 0.3, False, {}),
        ("forward_mode", 0.0, True, {}),
        ("forward_mode", 0.3, False, {"quality_weight": 0.5, "auxiliary_weight": 2.0}),
    ],
)
def test_hypergradient_matches_finite_differences(meta_gradient, lam, official, weights):
    lr, wd, h = 0.05, 5e-4, 1e-6
    snap, grads, (x, d, q) = _run_two_stages(meta_gradient, lam, official, lr, wd, **weights)
    lq, la = weights.get("quality_weight", 1.0), weights.get("auxiliary_weight", 1.0)
    coords = [
        ("head.2.weight", (0, 0)),
        ("head.2.weight", (5, 3)),
        ("head.2.bias", (2,)),
        ("head.0.weight", (4, 7)),
        ("encoder.features.block1.0.weight", (1, 0, 1, 1)),
        ("encoder.features.block5.1.weight", (3,)),
    ]
    for name, idx in coords:
        vals = []
        for sign in (1.0, -1.0):
            meta = copy.deepcopy(snap["meta"])
            with torch.no_grad():
                dict(meta.named_parameters())[name][idx] += sign * h
            vals.append(_meta_objective(copy.deepcopy(snap["net"]), meta, x, d, q, lr, wd, lam, official, lq, la))
        fd = (vals[0] - vals[1]) / (2 * h)
        analytic = grads[name][idx].item()
        assert analytic == pytest.approx(fd, rel=1e-4, abs=1e-9), (name, idx, analytic, fd)
    # the meta-gradient through θ̃ carries signal (λ = 0 leaves nothing else)
    assert max(g.abs().max().item() for g in grads.values()) > 1e-8


def _flat(grads: dict, names) -> torch.Tensor:
    return torch.cat([grads[n].flatten() for n in names])


def test_first_order_approximates_second_order():
    # λ_R = 0: only the mixed second derivative is left. With a small θ-space step the finite difference converges
    # to the exact hyper-gradient (the tiny piecewise-linear net has ReLU/max-pool kinks within the official 0.01).
    _, exact, _ = _run_two_stages("second_order", 0.0, False)
    _, fine, _ = _run_two_stages("first_order", 0.0, False, fd_epsilon=1e-5)
    v2, v1 = _flat(exact, exact), _flat(fine, exact)
    assert v2.norm() > 0
    assert ((v1 - v2).norm() / v2.norm()).item() < 1e-4
    # official step (0.01) with the entropy term: an approximation
    _, exact, _ = _run_two_stages("second_order", 0.3, False)
    _, approx, _ = _run_two_stages("first_order", 0.3, False)
    v2, v1 = _flat(exact, exact), _flat(approx, exact)
    assert ((v1 - v2).norm() / v2.norm()).item() < 0.1


def _iteration_grads(meta_gradient, seed, lam=0.3, official=False, **kwargs):
    """One batch, 'iteration' schedule, meta lr 0: φ's gradient of the single stage II (fp64)."""
    torch.manual_seed(seed)
    net, meta = _nets(torch.float64)
    trainer = MetaAuxiliaryTrainer(
        "cpu",
        1,
        DataLoader(_data(4, seed=seed, dtype=torch.float64), batch_size=4),
        net,
        torch.optim.SGD(net.parameters(), lr=0.05, weight_decay=5e-4),
        meta,
        torch.optim.SGD(meta.parameters(), lr=0.0),
        entropy_weight=lam,
        schedule="iteration",
        meta_gradient=meta_gradient,
        official_meta_forward=official,
        decollate=False,
        **kwargs,
    )
    trainer.run()
    return {n: p.grad.clone() for n, p in meta.named_parameters()}


def _rel(a: dict, b: dict) -> float:
    va, vb = _flat(a, b), _flat(b, b)
    return ((va - vb).norm() / vb.norm()).item()


@pytest.mark.parametrize(
    "seed, lam, official, replay",
    [
        (0, 0.3, False, {}),  # default: the forward-mode pass reuses the encoder activations of the forward at θ
        (1, 0.0, False, {}),
        (2, 0.5, True, {}),
        (0, 0.3, False, {"reuse_activations": False}),  # the primal forward recomputed
        (1, 0.3, True, {"recompute_layers": 4}),  # the first VGG block recomputed, the rest reused
        (2, 0.3, False, {"recompute_layers": 0}),  # every convolution output kept (default: all but the first)
    ],
)
def test_forward_mode_equals_second_order(seed, lam, official, replay):
    # 'epoch' schedule: stage II after a stage-I step
    _, exact, _ = _run_two_stages("second_order", lam, official, seed=seed)
    _, forward, _ = _run_two_stages("forward_mode", lam, official, seed=seed, **replay)
    assert _flat(exact, exact).norm() > 0
    assert _rel(forward, exact) <= 1e-5
    # 'iteration' schedule, unfused (stage II at the θ after stage I's step, like second order)
    exact = _iteration_grads("second_order", seed, lam, official)
    forward = _iteration_grads("forward_mode", seed, lam, official, reuse_task_gradient=False, **replay)
    assert _rel(forward, exact) <= 1e-5


def test_stage_two_graphs_keep_pooling_indices_as_int32():
    """The saved-tensor hooks of the forward-mode stage II: exact gradients, int64 → int32 only where it fits, and
    saved leaves (θ̃) are released with the graph."""
    big = torch.arange(5000, dtype=torch.int64) * 1000
    packed = _pack_int32(big)
    assert isinstance(packed, _Int32) and packed.tensor.dtype == torch.int32
    assert torch.equal(_unpack_int32(packed), big) and _unpack_int32(packed).dtype == torch.int64
    for kept in (big * 10**6, torch.arange(10), torch.randn(5000)):  # out of int32 range, small, float
        assert torch.equal(_unpack_int32(_pack_int32(kept)), kept)
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 16)
    weight = torch.randn(4, 3, 3, 3, requires_grad=True)

    def _grad() -> torch.Tensor:
        y = torch.nn.functional.max_pool2d(torch.nn.functional.conv2d(x, weight, padding=1).relu(), 2)
        return torch.autograd.grad((y * y).sum(), weight)[0]

    reference = _grad()
    with torch.autograd.graph.saved_tensors_hooks(_pack_int32, _unpack_int32):
        assert torch.equal(_grad(), reference)
        net, _ = _nets()
        fast = {n: p.detach().clone().requires_grad_(True) for n, p in net.named_parameters()}
        alive = [weakref.ref(t) for t in fast.values()]
        out = MetaAuxiliaryTrainer._functional_forward(net, fast, torch.randn(2, 3, 32, 32))
        torch.autograd.grad(out["diagnosis"].sum() + out["quality"].sum(), list(fast.values()), allow_unused=True)
    del fast, out
    gc.collect()
    assert not any(ref() is not None for ref in alive)  # (a pack hook returning the tensor itself keeps some)


def test_forward_mode_reuses_the_encoder_activations():
    """The forward-mode pass reads the stage-II forward's encoder activations: one encoder forward of FLOPs less."""
    flops = []
    for reuse in (False, True):
        torch.manual_seed(0)
        net, meta = _nets()
        trainer = MetaAuxiliaryTrainer(
            "cpu",
            1,
            DataLoader(_data(4), batch_size=4),
            net,
            torch.optim.SGD(net.parameters(), lr=0.01),
            meta,
            torch.optim.SGD(meta.parameters(), lr=0.01),
            meta_gradient="forward_mode",
            reuse_activations=reuse,
            decollate=False,
        )
        counter = FlopCounterMode(display=False)
        with counter:
            trainer.run()
        flops.append(counter.get_total_flops())
        assert not reuse or not any(trainer.tangent_replay._records.values())  # nothing kept after the pass
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net.encoder.features(torch.zeros(4, 3, 32, 32))
    assert flops[0] - flops[1] >= counter.get_total_flops() > 0


class _MetaStepFirst(MetaAuxiliaryTrainer):
    """Unfused reference of ``reuse_task_gradient``: stage II at the iteration's starting θ (its own task backward),
    then stage I; both from the same φ (one shared y_ω)."""

    def _iteration(self, engine, batchdata):
        x, d, q = engine.prepare_batch(batchdata, engine.state.device)
        y_w = engine.meta_learner(x, d, q)
        output = self._meta_step(engine, x, d, q, y_w=y_w)
        self._task_step(engine, x, d, q, y_w=y_w)
        engine.state.output = output
        return output


@pytest.mark.parametrize("reference", ["forward_mode", "second_order"])
def test_reused_task_gradient_equals_unfused(reference):
    results = []
    for cls, meta_gradient, reuse in ((MetaAuxiliaryTrainer, "forward_mode", None), (_MetaStepFirst, reference, False)):
        torch.manual_seed(3)
        net, meta = _nets(torch.float64)
        trainer = cls(
            "cpu",
            1,
            DataLoader(_data(6, seed=3, dtype=torch.float64), batch_size=3),
            net,
            torch.optim.SGD(net.parameters(), lr=0.05, weight_decay=5e-4),
            meta,
            torch.optim.SGD(meta.parameters(), lr=0.05, weight_decay=5e-4),
            entropy_weight=0.3,
            schedule="iteration",
            meta_gradient=meta_gradient,
            reuse_task_gradient=reuse,
            decollate=False,
        )
        assert trainer.reuse_task_gradient == (cls is MetaAuxiliaryTrainer)
        trainer.run()
        grads = {n: p.grad.clone() for n, p in meta.named_parameters()}
        results.append((_params(net), _params(meta), grads, trainer.state.output))
    (theta, phi, grads, out), (theta_ref, phi_ref, grads_ref, out_ref) = results
    assert _rel(grads, grads_ref) <= 1e-9
    for a, b in ((theta, theta_ref), (phi, phi_ref)):
        for k in a:
            assert torch.allclose(a[k], b[k], rtol=1e-9, atol=1e-12), k
    assert float(out["loss_meta"]) == pytest.approx(float(out_ref["loss_meta"]), rel=1e-9)


def test_reuse_task_gradient_needs_plain_sgd():
    net, meta = _nets()
    loader = DataLoader(_data(2), batch_size=2)
    momentum = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    meta_opt = torch.optim.SGD(meta.parameters(), lr=0.01)
    args = ("cpu", 1, loader, net, momentum, meta, meta_opt)
    trainer = MetaAuxiliaryTrainer(*args, schedule="iteration", meta_gradient="forward_mode")
    assert not trainer.reuse_task_gradient  # momentum: stage I's step is not θ̃
    with pytest.raises(ValueError, match="reuse_task_gradient=True needs"):
        MetaAuxiliaryTrainer(*args, schedule="iteration", meta_gradient="forward_mode", reuse_task_gradient=True)
    with pytest.raises(ValueError, match="reuse_task_gradient=True needs"):
        MetaAuxiliaryTrainer(*args[:4], torch.optim.SGD(net.parameters(), 0.01), *args[5:], reuse_task_gradient=True)


# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("schedule", ["epoch", "iteration"])
@pytest.mark.parametrize("meta_gradient", ["second_order", "first_order", "forward_mode"])
def test_one_epoch_stage_isolation(schedule, meta_gradient):
    net, meta = _nets()
    loader = DataLoader(_data(3), batch_size=2)  # last batch has ONE sample
    trainer = MetaAuxiliaryTrainer(
        "cpu",
        1,
        loader,
        net,
        torch.optim.SGD(net.parameters(), lr=0.01, weight_decay=5e-4),
        meta,
        torch.optim.SGD(meta.parameters(), lr=0.01, weight_decay=5e-4),
        schedule=schedule,
        meta_gradient=meta_gradient,
        decollate=False,
    )
    assert trainer.state.epoch_length == (4 if schedule == "epoch" else 2)
    seen: dict = {"stages": [], "sizes": [], "events": {e: 0 for e in IterationEvents}}
    for event in IterationEvents:
        trainer.add_event_handler(event, lambda e, ev=event: seen["events"].__setitem__(ev, seen["events"][ev] + 1))

    @trainer.on(Events.ITERATION_STARTED)
    def _before(engine):
        seen["theta"], seen["phi"], seen["size"] = _params(net), _params(meta), len(engine.state.batch["image"])
        reference = copy.deepcopy(net).train()  # one module forward at θ is the only allowed BN update
        with torch.no_grad():
            reference(engine.state.batch["image"])
        seen["expected_buffers"] = _buffers(reference)

    @trainer.on(Events.ITERATION_COMPLETED)
    def _after(engine):
        out = engine.state.output
        stage = out["stage"]
        seen["stages"].append(stage)
        seen["sizes"].append(seen["size"])
        assert set(out) >= {
            "loss",
            "loss_d",
            "loss_q",
            "loss_aux",
            "loss_meta",
            "entropy",
            "stage",
            "pred",
            "label",
            "quality",
        }
        assert out["pred"].shape == (seen["size"], ND)
        theta_same, phi_same = _same(seen["theta"], _params(net)), _same(seen["phi"], _params(meta))
        if schedule == "iteration":
            assert not theta_same and not phi_same
            return
        if stage == 1:
            assert not theta_same and phi_same
            assert out["loss_meta"] == 0.0
        else:
            assert theta_same and not phi_same
            assert torch.isfinite(out["loss_meta"])
        actual = _buffers(net)
        for key, value in seen["expected_buffers"].items():
            assert torch.allclose(actual[key], value, rtol=1e-5, atol=1e-7), key

    trainer.run()
    assert seen["sizes"] == ([2, 1, 2, 1] if schedule == "epoch" else [2, 1])
    assert seen["stages"] == ([1, 1, 2, 2] if schedule == "epoch" else [2, 2])
    per_stage = 4  # epoch: 4 iterations x 1 stage each; iteration: 2 iterations x 2 stages
    assert seen["events"][IterationEvents.FORWARD_COMPLETED] == per_stage
    assert seen["events"][IterationEvents.BACKWARD_COMPLETED] == per_stage
    assert seen["events"][IterationEvents.MODEL_COMPLETED] == len(seen["stages"])
    assert trainer.state.meta_learning_rate == 0.01


def test_baseline_trainers_update_only_used_parameters():
    loader = DataLoader(_data(3), batch_size=2)

    net = MKCNet(ND, NQ, K, width=W)
    before = _params(net)
    trainer = MultiTaskTrainer("cpu", 1, loader, net, torch.optim.SGD(net.parameters(), lr=0.01, weight_decay=5e-4))
    trainer.run()
    out = trainer.state.output  # decollated: one dict per sample
    assert isinstance(out, list) and {"loss", "loss_d", "loss_q", "pred", "label", "quality"} <= set(out[0])
    after = _params(net)
    for name in before:
        changed = not torch.equal(before[name], after[name])
        assert changed == (not name.startswith("auxiliary_head")), name

    vanilla = VanillaNet(ND, width=W)
    before = _params(vanilla)
    VanillaTrainer("cpu", 1, loader, vanilla, torch.optim.SGD(vanilla.parameters(), lr=0.01, weight_decay=5e-4)).run()
    assert all(not torch.equal(before[n], p) for n, p in _params(vanilla).items())

    net = MKCNet(ND, NQ, K, width=W)
    before = _params(net)
    unused = ("auxiliary_head", "quality_head", "attention_quality")
    VanillaTrainer("cpu", 1, loader, net, torch.optim.SGD(net.parameters(), lr=0.01, weight_decay=5e-4)).run()
    after = _params(net)
    for name in before:
        assert torch.equal(before[name], after[name]) == name.startswith(unused), name


def test_non_finite_loss_raises():
    data = _data(2)
    data[0]["image"][0, 0, 0] = float("nan")
    net, meta = _nets()
    trainer = MetaAuxiliaryTrainer(
        "cpu",
        1,
        DataLoader(data, batch_size=2),
        net,
        torch.optim.SGD(net.parameters(), lr=0.01),
        meta,
        torch.optim.SGD(meta.parameters(), lr=0.01),
    )
    with pytest.raises(FloatingPointError, match="epoch 1, iteration 1"):
        trainer.run()
    trainer = MultiTaskTrainer("cpu", 1, DataLoader(data, batch_size=2), net, torch.optim.SGD(net.parameters(), 0.01))
    with pytest.raises(FloatingPointError, match="epoch 1, iteration 1"):
        trainer.run()


def test_invalid_arguments():
    net, meta = _nets()
    loader = DataLoader(_data(2), batch_size=2)
    args = (
        "cpu",
        1,
        loader,
        net,
        torch.optim.SGD(net.parameters(), 0.01),
        meta,
        torch.optim.SGD(meta.parameters(), 0.01),
    )
    with pytest.raises(ValueError, match="schedule must be one of"):
        MetaAuxiliaryTrainer(*args, schedule="batch")
    with pytest.raises(ValueError, match="meta_gradient must be one of"):
        MetaAuxiliaryTrainer(*args, meta_gradient="zeroth_order")
    with pytest.raises(ValueError, match="even epoch_length"):
        MetaAuxiliaryTrainer(*args, epoch_length=3)
    with pytest.raises(ValueError, match="recompute_layers must be non-negative"):
        MetaAuxiliaryTrainer(*args, meta_gradient="forward_mode", recompute_layers=-1)
    assert MetaAuxiliaryTrainer(*args, meta_gradient="forward_mode").tangent_replay is not None
    assert MetaAuxiliaryTrainer(*args, meta_gradient="forward_mode", reuse_activations=False).tangent_replay is None
    assert MetaAuxiliaryTrainer(*args, meta_gradient="second_order").tangent_replay is None
    # SupervisedTrainer arguments the MKCNet training steps do not use are refused, not silently ignored
    with pytest.raises(TypeError, match="inferer"):
        MetaAuxiliaryTrainer(*args, inferer=object())
    with pytest.raises(TypeError, match="accumulation_steps"):
        MultiTaskTrainer("cpu", 1, loader, net, torch.optim.SGD(net.parameters(), 0.01), accumulation_steps=2)
    trainer = MultiTaskTrainer("cpu", 1, loader, net, torch.optim.SGD(net.parameters(), 0.01), epoch_length=1)
    assert trainer.state.epoch_length == 1, "SupervisedTrainer keywords pass through"


@pytest.mark.parametrize("meta_gradient", ["second_order", "first_order"])
def test_iteration_schedule_shares_one_meta_forward(meta_gradient):
    """One meta-learner forward per iteration; θ and φ equal those of separate per-stage forwards (the old way)."""

    class _SeparateForwards(MetaAuxiliaryTrainer):
        def _task_step(self, engine, x, d, q, y_w=None):
            return super()._task_step(engine, x, d, q)

        def _meta_step(self, engine, x, d, q, y_w=None):
            return super()._meta_step(engine, x, d, q)

    results = []
    for cls in (MetaAuxiliaryTrainer, _SeparateForwards):
        torch.manual_seed(0)
        net, meta = _nets()
        calls: list[int] = []
        meta.register_forward_hook(lambda *args, calls=calls: calls.append(1))
        trainer = cls(
            "cpu",
            1,
            DataLoader(_data(6), batch_size=3),
            net,
            torch.optim.SGD(net.parameters(), lr=0.01, weight_decay=5e-4),
            meta,
            torch.optim.SGD(meta.parameters(), lr=0.01, weight_decay=5e-4),
            schedule="iteration",
            meta_gradient=meta_gradient,
            decollate=False,
        )
        trainer.run()
        results.append((_params(net), _params(meta), _buffers(net), len(calls)))
    (theta, phi, buffers, n_calls), (theta_ref, phi_ref, buffers_ref, n_calls_ref) = results
    assert n_calls == 2  # 2 iterations, one forward each
    assert n_calls_ref == 6  # the reference ignores the shared forward and runs one more per stage
    assert _same(theta, theta_ref) and _same(phi, phi_ref) and _same(buffers, buffers_ref)


@pytest.mark.parametrize("name", ["vanilla", "multitask", "epoch/forward_mode", "iteration/second_order"])
def test_bfloat16_autocast_on_cpu(name):
    """``amp_dtype="bfloat16"`` runs the stage-I forward (and the forward-mode stage-II forwards) under CPU autocast."""
    torch.manual_seed(0)
    loader = DataLoader(_data(4), batch_size=2)
    if name == "vanilla":
        net = VanillaNet(ND, width=W)
        opt = torch.optim.SGD(net.parameters(), 0.01)
        trainer = VanillaTrainer("cpu", 1, loader, net, opt, amp_dtype="bfloat16", decollate=False)
    elif name == "multitask":
        net = MKCNet(ND, NQ, K, width=W)
        opt = torch.optim.SGD(net.parameters(), 0.01)
        kwargs = {"amp_dtype": "bfloat16", "quality_weight": 0.5, "decollate": False}
        trainer = MultiTaskTrainer("cpu", 1, loader, net, opt, **kwargs)
    else:
        schedule, meta_gradient = name.split("/")
        net, meta = _nets()
        trainer = MetaAuxiliaryTrainer(
            "cpu",
            1,
            loader,
            net,
            torch.optim.SGD(net.parameters(), 0.01),
            meta,
            torch.optim.SGD(meta.parameters(), 0.01),
            schedule=schedule,
            meta_gradient=meta_gradient,
            amp_dtype="bfloat16",
            decollate=False,
        )
    before = _params(net)
    dtypes = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: dtypes.append((e.state.output["stage"], e.state.output["pred"].dtype))
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.run()
    # bfloat16 needs no loss scaling: no (CUDA) GradScaler is built, so none warns that CUDA is unavailable
    assert trainer.scaler is None
    assert not [w for w in caught if "GradScaler" in str(w.message)], [str(w.message) for w in caught]
    assert trainer.amp and trainer.amp_kwargs["dtype"] == torch.bfloat16
    losses = [torch.as_tensor(v) for k, v in trainer.state.output.items() if k.startswith("loss")]
    assert losses and all(torch.isfinite(v).all() for v in losses)
    assert not _same(before, _params(net))
    for stage, dtype in dtypes:  # the forward at θ ran in bf16 where autocast applies
        second_order_stage_two = stage == 2 and name.endswith("second_order")
        assert dtype == (torch.float32 if second_order_stage_two else torch.bfloat16), (stage, dtype)


def test_amp_dtype_validation_and_quality_weight():
    net = MKCNet(ND, NQ, K, width=W)
    loader = DataLoader(_data(4), batch_size=4)
    with pytest.raises(ValueError, match="amp_dtype must be one of"):
        MultiTaskTrainer("cpu", 1, loader, net, torch.optim.SGD(net.parameters(), 0.01), amp_dtype="float8")
    with pytest.raises(ValueError, match="quality_weight must be non-negative"):
        MultiTaskTrainer("cpu", 1, loader, net, torch.optim.SGD(net.parameters(), 0.01), quality_weight=-1.0)
    # λ_Q = 0.5: loss = L_D + 0.5 L_Q; λ_Q = 0 (no weight decay): the quality head is not trained
    for weight in (0.5, 0.0):
        torch.manual_seed(0)
        net = MKCNet(ND, NQ, K, width=W)
        before = _params(net)
        trainer = MultiTaskTrainer(
            "cpu", 1, loader, net, torch.optim.SGD(net.parameters(), 0.01), quality_weight=weight, decollate=False
        )
        trainer.run()
        out = trainer.state.output
        assert float(out["loss"]) == pytest.approx(float(out["loss_d"]) + weight * float(out["loss_q"]), rel=1e-6)
        quality_same = all(torch.equal(before[n], p) for n, p in _params(net).items() if n.startswith("quality_head"))
        assert quality_same == (weight == 0.0)


def test_evaluator_bfloat16_autocast():
    from monai_iqad.engines import MultiOutputEvaluator

    torch.manual_seed(0)
    net = MKCNet(ND, NQ, K, width=W).eval()
    loader = DataLoader(_data(4), batch_size=4)
    preds = {}
    for amp_dtype in (None, "bfloat16"):
        evaluator = MultiOutputEvaluator(
            "cpu", loader, net, label_key="diagnosis", pred_key=None, amp_dtype=amp_dtype, decollate=False
        )
        evaluator.run()
        preds[amp_dtype] = evaluator.state.output["pred"]
    full, half = preds[None], preds["bfloat16"]
    assert full["diagnosis"].dtype == half["diagnosis"].dtype == torch.float32  # cast back for the metrics
    assert not torch.equal(full["diagnosis"], half["diagnosis"])  # autocast ran
    assert torch.allclose(full["diagnosis"], half["diagnosis"], atol=0.1)


def test_all_loss_terms_logged_without_a_key_list():
    from monai_iqad.handlers import output_scalars

    net, meta = _nets()
    trainer = MetaAuxiliaryTrainer(
        "cpu",
        1,
        DataLoader(_data(2), batch_size=2),
        net,
        torch.optim.SGD(net.parameters(), 0.01),
        meta,
        torch.optim.SGD(meta.parameters(), 0.01),
        schedule="iteration",
    )
    trainer.run()  # decollated: one dict per sample
    logged = output_scalars(prefix="train/")(trainer.state.output)
    names = {"loss", "loss_d", "loss_q", "loss_aux", "loss_meta", "entropy"}
    assert set(logged) == {f"train/{n}" for n in names}  # not the labels, the quality grade, stage or the logits
    assert logged["train/loss_meta"] > 0


def test_functional_call_keeps_tied_weights_tied():
    """The trainer's functional forward skips torch's tied-weight search only for modules without tied tensors."""
    from monai_iqad.engines.meta_auxiliary import _functional_call

    tied = torch.nn.Sequential(torch.nn.Linear(3, 3, bias=False), torch.nn.Linear(3, 3, bias=False))
    tied[1].weight = tied[0].weight
    plain = torch.nn.Sequential(torch.nn.Linear(3, 3, bias=False), torch.nn.Linear(3, 3, bias=False))
    x = torch.randn(2, 3)
    for module in (tied, plain):
        new = {n: torch.randn_like(p) for n, p in module.named_parameters()}  # tied: one name for both layers
        expected = functional_call(module, new, (x,), tie_weights=True)
        assert torch.equal(_functional_call(module, new, (x,)), expected)
    new = {"0.weight": torch.randn(3, 3)}
    assert not torch.equal(functional_call(tied, new, (x,), tie_weights=False), _functional_call(tied, new, (x,)))
