"""Gradient reversal layer and DANN lambda schedule."""

from __future__ import annotations

import math

import pytest
import torch

from monai_iqad.networks import GradientReversal, GradientReversalFunction, dann_lambda


def test_forward_is_identity():
    x = torch.randn(3, 5, requires_grad=True)
    grl = GradientReversal(0.7)
    y = grl(x)
    assert y.shape == x.shape
    assert torch.equal(y, x)


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0, 2.5])
def test_backward_is_minus_lambda_times_upstream(lam):
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(4, 6, dtype=torch.float64)
    y = GradientReversal(lam)(x)
    y.backward(upstream)
    assert torch.equal(x.grad, -lam * upstream)


def test_jacobian_against_finite_differences_float64():
    """Analytic Jacobian (autograd) = -lambda x numerical Jacobian (finite differences of the identity forward)."""
    lam = 0.6
    x = torch.randn(5, dtype=torch.float64)

    def f(t):
        return GradientReversalFunction.apply(t, lam)

    analytic = torch.autograd.functional.jacobian(f, x)
    eps = 1e-6
    numerical = torch.stack(
        [(f(x + eps * e) - f(x - eps * e)) / (2 * eps) for e in torch.eye(5, dtype=torch.float64)], dim=1
    )
    torch.testing.assert_close(numerical, torch.eye(5, dtype=torch.float64))
    torch.testing.assert_close(analytic, -lam * numerical)


def test_gradcheck_with_reversal_of_reversal():
    """lambda = -1 reverses the reversal: the layer is an exact identity for gradcheck (forward and backward)."""
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: GradientReversalFunction.apply(t, -1.0) * 2.0, (x,))
    assert torch.autograd.gradgradcheck(lambda t: GradientReversalFunction.apply(t, -1.0) ** 2, (x,))


def test_set_lambda_and_validation():
    grl = GradientReversal()
    assert grl.lambda_ == 1.0
    grl.set_lambda(0.25)
    assert grl.lambda_ == 0.25
    assert "0.25" in repr(grl)
    with pytest.raises(ValueError, match="finite"):
        grl.set_lambda(float("nan"))
    with pytest.raises(ValueError, match="finite"):
        GradientReversal(float("inf"))


def test_dann_schedule_values():
    assert dann_lambda(0.0) == 0.0
    assert dann_lambda(0.5) == pytest.approx(0.98661, abs=1e-4)
    assert dann_lambda(1.0) == pytest.approx(0.99991, abs=1e-5)
    assert dann_lambda(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    # clamped progress
    assert dann_lambda(-0.3) == 0.0
    assert dann_lambda(1.7) == dann_lambda(1.0)
    # max_value and gamma
    assert dann_lambda(0.5, max_value=0.5) == pytest.approx(0.5 * dann_lambda(0.5))
    assert dann_lambda(0.5, gamma=1.0) == pytest.approx(2 / (1 + math.exp(-0.5)) - 1)
    values = [dann_lambda(p / 100) for p in range(101)]
    assert all(b > a for a, b in zip(values, values[1:]))


@pytest.mark.parametrize("kwargs", [{"progress": float("nan")}, {"progress": 0.5, "gamma": -1.0}])
def test_dann_schedule_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        dann_lambda(**kwargs)
