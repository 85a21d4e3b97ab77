"""Gradient reversal layer (GRL) and the DANN schedule of its coefficient."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn

__all__ = ["GradientReversalFunction", "GradientReversal", "dann_lambda"]


def _check_lambda(lambda_: float) -> float:
    value = float(lambda_)
    if not math.isfinite(value):
        raise ValueError(f"The gradient reversal coefficient must be finite, got lambda_={lambda_!r}.")
    return value


class GradientReversalFunction(torch.autograd.Function):
    """
    Identity in the forward pass; multiplies the incoming gradient by ``-lambda_`` in the backward pass.

    Re-implementation of the gradient reversal layer based on:
    "Ganin et al., Domain-Adversarial Training of Neural Networks, JMLR 17(59), 2016,
    https://jmlr.org/papers/v17/15-239.html" (eqs. 4-5 of Tliba et al., ICIP 2022, https://arxiv.org/abs/2210.10533).

    Usage: ``GradientReversalFunction.apply(x, lambda_)``. The backward pass is made of differentiable operations,
    so double backward works (the reversed map is linear).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, lambda_: float) -> torch.Tensor:
        ctx.lambda_ = float(lambda_)
        # a view keeps the forward free of copies while giving autograd a distinct output node
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad_output.neg() * ctx.lambda_, None


class GradientReversal(nn.Module):
    """
    Gradient reversal layer: ``y = x`` forward, ``dL/dx = -lambda_ * dL/dy`` backward.

    Re-implementation of the GRL based on:
    "Ganin et al., Domain-Adversarial Training of Neural Networks, JMLR 17(59), 2016,
    https://jmlr.org/papers/v17/15-239.html", as used by SAQM (Tliba et al., "Deep-based quality assessment of
    medical images through domain adaptation", ICIP 2022, https://arxiv.org/abs/2210.10533, eqs. 4-5).

    The coefficient is a plain Python float attribute (not a buffer): it is recomputed from the training progress
    every iteration (see :func:`dann_lambda`), so it is not part of the ``state_dict``.
    """

    def __init__(self, lambda_: float = 1.0) -> None:
        """
        Args:
            lambda_: the gradient multiplier magnitude; the backward pass multiplies by ``-lambda_``.
                Defaults to 1.0 (the paper's eq. 5).

        Raises:
            ValueError: When ``lambda_`` is not a finite number.
        """
        super().__init__()
        self.lambda_ = _check_lambda(lambda_)

    def set_lambda(self, lambda_: float) -> None:
        """
        Set the reversal coefficient (called by the trainer every iteration).

        Args:
            lambda_: new coefficient.

        Raises:
            ValueError: When ``lambda_`` is not a finite number.
        """
        self.lambda_ = _check_lambda(lambda_)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: any tensor, e.g. features in shape (batch, features).

        Returns:
            ``x`` unchanged (same shape); its gradient is reversed and scaled by ``lambda_``.
        """
        return GradientReversalFunction.apply(x, self.lambda_)

    def extra_repr(self) -> str:
        return f"lambda_={self.lambda_}"


def dann_lambda(progress: float, gamma: float = 10.0, max_value: float = 1.0) -> float:
    """
    DANN schedule of the gradient reversal coefficient: ``max_value * (2 / (1 + exp(-gamma * p)) - 1)``.

    From Ganin et al., JMLR 2016 (sec. 5.2.2): ``lambda`` grows from 0 at the start of training to ``max_value``
    at the end, which suppresses the noisy domain signal while the features are still random.

    Args:
        progress: training progress ``p`` (global step / total steps); clamped to ``[0, 1]``.
        gamma: steepness of the schedule. Defaults to 10 (the DANN paper).
        max_value: value approached at ``p = 1``. Defaults to 1.

    Returns:
        The coefficient, in ``[0, max_value)`` for ``gamma > 0``. For example, with the defaults
        ``dann_lambda(0) == 0``, ``dann_lambda(0.5) ~ 0.9866`` and ``dann_lambda(1) ~ 0.99991``.

    Raises:
        ValueError: When ``progress``, ``gamma`` or ``max_value`` is not finite, or ``gamma`` is negative.
    """
    progress, gamma, max_value = float(progress), float(gamma), float(max_value)
    if not math.isfinite(progress):
        raise ValueError(f"progress must be a finite number, got {progress!r}.")
    if not math.isfinite(gamma) or gamma < 0:
        raise ValueError(f"gamma must be a finite non-negative number, got {gamma!r}.")
    if not math.isfinite(max_value):
        raise ValueError(f"max_value must be a finite number, got {max_value!r}.")
    p = min(max(progress, 0.0), 1.0)
    return max_value * (2.0 / (1.0 + math.exp(-gamma * p)) - 1.0)
