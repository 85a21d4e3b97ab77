"""SAGAN-style self-attention of SAQM (Tliba et al., eqs. 1-3)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from monai_iqad.networks import SelfAttention2d


class _Fixed(nn.Module):
    """Projection returning a fixed map (ignores its input's values, keeps its batch size)."""

    def __init__(self, value: torch.Tensor) -> None:
        super().__init__()
        self.value = value
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.value.expand(x.shape[0], *self.value.shape[1:])


def _reference(q: np.ndarray, k: np.ndarray, v: np.ndarray, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """Eqs. 1-3 with plain loops. q, k: (Cq, N); v: (C, N)."""
    cq, n = q.shape
    c = v.shape[0]
    s = [[sum(q[d, row] * k[d, j] for d in range(cq)) for j in range(n)] for row in range(n)]  # S[row][j]
    a = np.zeros((n, n))
    for row in range(n):
        denom = sum(math.exp(s[row][j]) for j in range(n))
        for j in range(n):
            a[row, j] = math.exp(s[row][j]) / denom
    out = np.zeros((c, n))
    for ch in range(c):
        for row in range(n):
            out[ch, row] = gamma * sum(a[row, j] * v[ch, j] for j in range(n)) + v[ch, row]
    return out, a


def test_hand_computed_tiny_case():
    # C = 2 value channels, Cq = 1, N = 2 positions (a 1x2 map)
    q = torch.tensor([[[[1.0, 2.0]]]], dtype=torch.float64)  # (1, 1, 1, 2)
    k = torch.tensor([[[[0.5, -1.0]]]], dtype=torch.float64)
    v = torch.tensor([[[[3.0, -2.0]], [[1.0, 4.0]]]], dtype=torch.float64)  # (1, 2, 1, 2)
    block = SelfAttention2d(1, query=_Fixed(q), key=_Fixed(k), value=_Fixed(v)).double()
    with torch.no_grad():
        block.gamma.fill_(0.7)
    out, attn = block(torch.zeros(1, 1, 1, 2, dtype=torch.float64), return_attention=True)

    ref_out, ref_attn = _reference(q[0].flatten(1).numpy(), k[0].flatten(1).numpy(), v[0].flatten(1).numpy(), 0.7)
    # written out for row l=0: S = [0.5, -1] -> A = softmax = [e^.5, e^-1] / (e^.5 + e^-1)
    a00 = math.exp(0.5) / (math.exp(0.5) + math.exp(-1.0))
    assert ref_attn[0, 0] == pytest.approx(a00)
    assert ref_out[0, 0] == pytest.approx(0.7 * (a00 * 3.0 + (1 - a00) * -2.0) + 3.0)

    assert attn.shape == (1, 2, 2)
    assert out.shape == (1, 2, 1, 2)
    np.testing.assert_allclose(attn[0].numpy(), ref_attn, rtol=1e-12)
    np.testing.assert_allclose(out[0].flatten(1).detach().numpy(), ref_out, rtol=1e-12)


def test_default_projections_random_case_against_loops():
    torch.manual_seed(1)
    block = SelfAttention2d(16, reduction=8).double()
    with torch.no_grad():
        block.gamma.fill_(-0.4)
    x = torch.randn(2, 16, 3, 2, dtype=torch.float64)
    out, attn = block(x, return_attention=True)
    assert block.query.out_channels == 2 and block.value.out_channels == 16
    for b in range(2):
        q = block.query(x)[b].flatten(1).detach().numpy()
        k = block.key(x)[b].flatten(1).detach().numpy()
        v = block.value(x)[b].flatten(1).detach().numpy()
        ref_out, ref_attn = _reference(q, k, v, -0.4)
        np.testing.assert_allclose(attn[b].detach().numpy(), ref_attn, rtol=1e-10)
        np.testing.assert_allclose(out[b].flatten(1).detach().numpy(), ref_out, rtol=1e-10, atol=1e-12)


def test_gamma_zero_gives_value_and_rows_sum_to_one():
    block = SelfAttention2d(8, reduction=4)
    assert block.gamma.item() == 0.0
    x = torch.randn(3, 8, 4, 5)
    out, attn = block(x, return_attention=True)
    torch.testing.assert_close(out, block.value(x))
    assert attn.shape == (3, 20, 20)
    torch.testing.assert_close(attn.sum(-1), torch.ones(3, 20))
    assert (attn >= 0).all()


def test_custom_projection_modules_are_used():
    query = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.MaxPool2d(2))
    key = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.MaxPool2d(2))
    value = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.MaxPool2d(2))
    block = SelfAttention2d(3, query=query, key=key, value=value)
    assert block.query is query and block.key is key and block.value is value
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        block.gamma.fill_(1.0)
    out, attn = block(x, return_attention=True)
    assert out.shape == (2, 6, 4, 4) and attn.shape == (2, 16, 16)
    out.sum().backward()
    for module in (query, key, value):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def test_shape_mismatch_and_bad_arguments():
    bad = SelfAttention2d(3, query=nn.Conv2d(3, 2, 1), key=nn.Conv2d(3, 4, 1), value=nn.Conv2d(3, 4, 1))
    with pytest.raises(ValueError, match="query and key"):
        bad(torch.randn(1, 3, 4, 4))
    bad = SelfAttention2d(3, query=nn.Conv2d(3, 2, 1), key=nn.Conv2d(3, 2, 1), value=nn.Conv2d(3, 4, 2))
    with pytest.raises(ValueError, match="value map"):
        bad(torch.randn(1, 3, 4, 4))
    with pytest.raises(ValueError, match="reduction"):
        SelfAttention2d(4, reduction=8)
    with pytest.raises(ValueError):
        SelfAttention2d(0)
