"""SAQMEnsemble: the mean of its members' scores, state dict layout, errors, TorchScript."""

from __future__ import annotations

import io

import pytest
import torch

from monai_iqad.networks import SAQM, SAQMEnsemble

WIDTH = 1 / 16


def _members(n: int, in_channels: int = 3) -> list[SAQM]:
    nets = []
    for seed in range(n):
        torch.manual_seed(seed)
        net = SAQM(in_channels=in_channels, width=WIDTH)
        with torch.no_grad():  # gamma starts at 0; make the attention path count too
            net.attention.gamma.fill_(0.5 + 0.1 * seed)
        nets.append(net.eval())
    return nets


def test_scores_are_the_mean_of_the_members():
    members = _members(3, in_channels=5)
    ens = SAQMEnsemble.from_state_dicts([m.state_dict() for m in members], width=WIDTH).eval()
    assert ens.in_channels == 5 and ens.patch_size == 32 and len(ens.members) == 3
    x = torch.rand(2, 5, 64, 96)
    with torch.no_grad():
        each = [m(x) for m in members]  # (B, 1) each
        expected = (each[0] + each[1] + each[2]) / 3
        got = ens(x)
        grid = ens.score_map(x)
    assert got.shape == (2, 1) and grid.shape == (2, 1, 2, 3)
    assert not torch.allclose(each[0], each[1])  # the members differ, so the mean is a real average
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(grid.mean(dim=(2, 3)), got, rtol=0, atol=1e-6)
    torch.testing.assert_close(grid, sum(m.score_map(x) for m in members) / 3, rtol=0, atol=1e-6)


def test_one_member_is_the_member():
    (member,) = _members(1)
    ens = SAQMEnsemble.from_state_dicts([member.state_dict()], width=WIDTH).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ens(x), member(x), rtol=0, atol=0)


def test_state_dict_round_trip_and_gradients():
    members = _members(2)
    ens = SAQMEnsemble.from_state_dicts([m.state_dict() for m in members], width=WIDTH).eval()
    state = ens.state_dict()
    assert {k.split(".")[1] for k in state} == {"0", "1"} and all(k.startswith("members.") for k in state)
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    again = SAQMEnsemble(members=2, width=WIDTH)
    again.load_state_dict(torch.load(buf, weights_only=True))
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(x), ens(x), rtol=0, atol=0)
    again(x).sum().backward()
    for m in again.members:
        assert m.attention.value[0].weight.grad.abs().sum() > 0


def test_from_state_dict_reads_members_and_channels_from_the_keys():
    members = _members(3, in_channels=5)
    ens = SAQMEnsemble.from_state_dicts([m.state_dict() for m in members], width=WIDTH).eval()
    state = ens.state_dict()
    assert SAQMEnsemble.members_of(state) == 3 and SAQMEnsemble.members_of(members[0].state_dict()) == 0
    again = SAQMEnsemble.from_state_dict(state, width=WIDTH).eval()
    assert len(again.members) == 3 and again.in_channels == 5
    x = torch.rand(1, 5, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(again(x), ens(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="not a SAQMEnsemble state dict"):
        SAQMEnsemble.from_state_dict(members[0].state_dict(), width=WIDTH)


def test_errors():
    with pytest.raises(ValueError, match="at least 1 member"):
        SAQMEnsemble(members=0)
    with pytest.raises(ValueError, match="no state dict"):
        SAQMEnsemble.from_state_dicts([])
    good = _members(1)[0].state_dict()
    bad = SAQM(width=2 * WIDTH).state_dict()
    with pytest.raises(ValueError, match="member 1"):
        SAQMEnsemble.from_state_dicts([good, bad], width=WIDTH)
    with pytest.raises(ValueError, match="input channels"):
        SAQMEnsemble(members=2, width=WIDTH)(torch.rand(1, 5, 64, 64))


def test_torchscript():
    """The bundle's ``ckpt_export`` scripts the network: forward and score_map must compile."""
    ens = SAQMEnsemble.from_state_dicts([m.state_dict() for m in _members(2)], width=WIDTH).eval()
    scripted = torch.jit.script(ens)
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), ens(x))
        torch.testing.assert_close(scripted.score_map(x), ens.score_map(x))
