"""TangentReplay: forward-mode passes from recorded activations equal plain forward-mode AD."""

from __future__ import annotations

import contextlib
from unittest import mock

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn as nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

from monai_iqad.engines.tangent_replay import TangentReplay, _compact_indices, _expand_indices, _gather
from monai_iqad.networks import MKCNet


class _Branchy(nn.Module):
    """A plain conv before the replayable body (its input has a tangent), 1-d layers, a BN without affine
    parameters, a bias-free conv, a conv whose output an in-place ReLU overwrites (no BN in between), and a sequence
    output modified in place after the sequence."""

    def __init__(self) -> None:
        super().__init__()
        self.pre = nn.Conv1d(2, 4, 3, padding=1)
        self.body = nn.Sequential(
            nn.Sequential(nn.Conv1d(4, 6, 3, padding=1, bias=False), nn.BatchNorm1d(6, affine=False), nn.ReLU()),
            nn.MaxPool1d(2),
            nn.Conv1d(6, 5, 3, padding=2, dilation=2),
            nn.BatchNorm1d(5),
            nn.ReLU(inplace=True),
            nn.Conv1d(5, 5, 1),
            nn.ReLU(inplace=True),
        )
        self.raw = nn.Sequential(nn.Conv1d(5, 3, 1), nn.ReLU(inplace=True))
        self.head = nn.Linear(3 * 8, 2)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.raw(self.body(self.pre(x)))
        return {"out": self.head(h.mul_(2.0).flatten(1))}


def _jvp(net, x, tangents, key, replay=None):
    """``(f(x), J u)`` at the network's parameters by forward-mode AD (cloned buffers, like the trainer)."""
    point = {n: p.detach() for n, p in net.named_parameters()}
    buffers = {n: b.clone() for n, b in net.named_buffers()}
    with torch.no_grad(), fwAD.dual_level(), replay.replay() if replay else torch.no_grad():
        duals = {n: fwAD.make_dual(point[n], tangents[n]) for n in point}
        primal, tangent = fwAD.unpack_dual(functional_call(net, {**point, **duals, **buffers}, (x,))[key])
        return primal.clone(), tangent.clone()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("recompute_layers", [0, 4, 7, 100])
def test_replay_equals_forward_mode_on_mkcnet(recompute_layers):
    torch.manual_seed(0)
    net = MKCNet(2, 2, 2, width=1 / 16).double().train()
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    tangents = {n: torch.randn_like(p) for n, p in net.named_parameters()}
    reference = _jvp(net, x, tangents, "auxiliary")
    replay = TangentReplay(net, recompute_layers)
    assert replay.sequences == [net.encoder.features]  # heads (Linear, attention blocks) are not replayable
    with replay.record():
        net(x).values()
    primal, tangent = _jvp(net, x, tangents, "auxiliary", replay)
    assert torch.equal(primal, reference[0])  # the recorded output is the forward's
    assert reference[1].norm() > 0 and _rel(tangent, reference[1]) < 1e-12
    assert not any(replay._records.values())  # consumed


def test_replay_saves_one_encoder_forward_of_flops():
    torch.manual_seed(0)
    net = MKCNet(2, 2, 2, width=1 / 16).train()
    x = torch.randn(2, 3, 32, 32)
    tangents = {n: torch.randn_like(p) for n, p in net.named_parameters()}
    flops = []
    for use in (False, True):
        replay = TangentReplay(net) if use else None
        if replay:
            with replay.record():
                net(x)
        counter = FlopCounterMode(display=False)
        with counter:
            _jvp(net, x, tangents, "auxiliary", replay)
        flops.append(counter.get_total_flops())
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net.encoder.features(x)
    # at least the encoder's primal forward (PyTorch's convolution JVP also convolves the first layer's zero input
    # tangent, which the replay skips)
    assert flops[0] - flops[1] >= counter.get_total_flops() > 0


def test_replay_branches_and_in_place_fallback():
    torch.manual_seed(1)
    net = _Branchy().double().train()
    x = torch.randn(4, 2, 16, dtype=torch.float64)
    tangents = {n: torch.randn_like(p) for n, p in net.named_parameters()}
    reference = _jvp(net, x, tangents, "out")
    replay = TangentReplay(net)
    assert replay.sequences == [net.body, net.raw]
    with replay.record():
        net(x)
    # raw's output was scaled in place after the sequence: its record is stale and the replay recomputes it; inside
    # a sequence, an in-place ReLU on a conv output leaves what the replay needs (relu(y) has y's ReLU mask)
    assert not replay._records[id(net.raw)][0].intact()
    assert replay._records[id(net.body)][0].intact()
    primal, tangent = _jvp(net, x, tangents, "out", replay)
    assert torch.allclose(primal, reference[0], rtol=1e-12, atol=1e-12)
    assert _rel(tangent, reference[1]) < 1e-12
    # only some parameters carry a tangent (the others are plain tensors)
    some = {n: (t if n.startswith("body.2") else torch.zeros_like(t)) for n, t in tangents.items()}
    reference = _jvp(net, x, some, "out")
    with replay.record():
        net(x)
    assert _rel(_jvp(net, x, some, "out", replay)[1], reference[1]) < 1e-12


def test_nothing_recorded_with_running_statistics_or_autocast():
    torch.manual_seed(2)
    net = MKCNet(2, 2, 2, width=1 / 16)
    x = torch.randn(2, 3, 32, 32)
    replay = TangentReplay(net)
    net.eval()  # BN with running statistics: not recorded, the replay recomputes (same result)
    with replay.record():
        net(x)
    assert not replay._records
    tangents = {n: torch.randn_like(p) for n, p in net.named_parameters()}
    assert _rel(_jvp(net, x, tangents, "auxiliary", replay)[1], _jvp(net, x, tangents, "auxiliary")[1]) < 1e-6
    net.train()
    with replay.record(), torch.autocast("cpu", dtype=torch.bfloat16):
        net(x)
    assert not replay._records


def test_record_drops_earlier_records_and_validation():
    torch.manual_seed(3)
    net = MKCNet(2, 2, 2, width=1 / 16).double().train()
    x1, x2 = torch.randn(2, 2, 3, 32, 32, dtype=torch.float64)
    replay = TangentReplay(net)
    with replay.record():
        net(x1)
    with replay.record():  # a new record (another batch) replaces the old one
        net(x2)
    assert len(replay._records[id(net.encoder.features)]) == 1
    tangents = {n: torch.randn_like(p) for n, p in net.named_parameters()}
    assert _rel(_jvp(net, x2, tangents, "auxiliary", replay)[1], _jvp(net, x2, tangents, "auxiliary")[1]) < 1e-12
    replay.clear()
    assert not replay._records
    with pytest.raises(ValueError, match="recompute_layers must be non-negative"):
        TangentReplay(net, -1)


@pytest.mark.parametrize(
    "pool, shape, dtype",
    [
        (nn.MaxPool2d(2), (2, 3, 8, 10), torch.uint8),
        (nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), (2, 3, 9, 7), torch.uint8),
        (nn.MaxPool2d((2, 3), stride=(1, 2), dilation=(2, 1)), (1, 2, 9, 11), torch.uint8),
        (nn.MaxPool1d(4, stride=3, padding=2), (2, 3, 17), torch.uint8),
        (nn.MaxPool3d(2, stride=(1, 2, 2), padding=(1, 0, 1)), (1, 2, 5, 6, 7), torch.uint8),
        (nn.MaxPool2d(2), (1, 2, 4, 300), torch.int16),  # offsets up to 301
        (nn.MaxPool2d(17), (1, 1, 34, 34), torch.int16),  # offsets up to 16 * 34 + 16
        (nn.MaxPool2d(2), (1, 1, 2, 40000), torch.int32),  # offsets up to 40001
    ],
)
def test_pool_indices_stored_compactly_and_exactly(pool, shape, dtype):
    torch.manual_seed(4)
    x = torch.randn(shape)
    fn = {1: torch.nn.functional.max_pool1d, 2: torch.nn.functional.max_pool2d, 3: torch.nn.functional.max_pool3d}
    args = (pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode)
    out, indices = fn[x.ndim - 2](x, *args, return_indices=True)
    before = indices.clone()
    stored = _compact_indices(pool, indices, x.shape[2:])
    assert torch.equal(indices, before)  # the forward's indices (saved by autograd) are not modified
    assert stored.compact.dtype == dtype
    expanded = _expand_indices(pool, stored)
    assert expanded.dtype == torch.int64 and torch.equal(expanded, indices)
    assert torch.equal(_gather(x, expanded), out)


def test_recomputed_first_convolution_runs_through_the_replay():
    """``recompute_layers=1``: the image convolution's output is not kept, the replay recomputes it (no generic
    forward-mode batch norm) and the tangent is unchanged."""
    torch.manual_seed(5)
    net = MKCNet(2, 2, 2, width=1 / 16).double().train()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    tangents = {n: torch.randn_like(p) for n, p in net.named_parameters()}
    reference = _jvp(net, x, tangents, "auxiliary")
    kept = []
    for layers in (0, 1):
        replay = TangentReplay(net, layers)
        with replay.record():
            net(x)
        kept.append(len(replay._records[id(net.encoder.features)][0].conv_outputs))
        norms = [m for m in net.encoder.features.modules() if isinstance(m, nn.BatchNorm2d)]
        with contextlib.ExitStack() as stack:  # no encoder layer runs its own (generic forward-mode) forward
            for m in norms:
                stack.enter_context(mock.patch.object(m, "forward", side_effect=AssertionError("generic forward")))
            _, tangent = _jvp(net, x, tangents, "auxiliary", replay)
        assert _rel(tangent, reference[1]) < 1e-12
    assert kept == [13, 12]
