"""Batch-level entropy regulariser of MKCNet's meta learner."""

from __future__ import annotations

import torch
from torch.nn.modules.loss import _Loss

__all__ = ["EntropyRegularizer"]


class EntropyRegularizer(_Loss):
    """
    Negative entropy of the batch-averaged auxiliary distribution, ``R = sum_j p̄_j log p̄_j`` with
    ``p̄ = mean_b y_ω[b]``. Minimising ``R`` pushes the *average* use of the auxiliary classes towards uniform, which
    keeps the meta learner from collapsing onto a few auxiliary classes (``R`` lies in ``[-log K, 0]``).

    Re-implementation of the official ``entropy_loss`` of MKCNet based on:
    "Che, Chen, Chen, Image Quality-aware Diagnosis via Meta-knowledge Co-embedding, CVPR 2023,
    https://arxiv.org/abs/2303.15038" (the regulariser comes from MAXL, Liu et al., NeurIPS 2019).

    Args:
        eps: added inside the logarithm to guard ``log(0)`` (official 1e-20); ``0 * log(eps)`` is then 0 and the
            gradient stays finite. Defaults to 1e-20.

    Raises:
        ValueError: When ``eps`` is negative.
    """

    def __init__(self, eps: float = 1e-20) -> None:
        super().__init__()
        if eps < 0:
            raise ValueError(f"eps must be non-negative, got {eps}.")
        self.eps = float(eps)

    def forward(self, probs: torch.Tensor) -> torch.Tensor:
        """
        Args:
            probs: ``(B, K)`` probabilities (rows summing to 1), e.g. the meta learner output ``y_ω``.

        Returns:
            scalar ``R``.

        Raises:
            ValueError: When ``probs`` is not 2-d.
        """
        if probs.ndim != 2:
            raise ValueError(f"probs must have shape (batch, classes), got {tuple(probs.shape)}.")
        dtype = torch.promote_types(probs.dtype, torch.float32)
        p_bar = probs.to(dtype).mean(dim=0)
        return (p_bar * torch.log(p_bar + self.eps)).sum()
