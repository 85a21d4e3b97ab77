"""Distillation loss between two sets of sigmoid scores given as logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

__all__ = ["BernoulliKLDivLoss"]


class BernoulliKLDivLoss(_Loss):
    """
    KL divergence between Bernoulli distributions given by logits, ``KL(sigmoid(target) || sigmoid(input))``
    per element: ``p (log p - log q) + (1 - p) (log(1 - p) - log(1 - q))`` with ``p = sigmoid(target)`` and
    ``q = sigmoid(input)``, computed with ``logsigmoid`` (stable for large logits). It is
    ``BCEWithLogits(input, p)`` minus the entropy of ``p``: the same gradient in ``input``, but 0 where the two
    scores agree, so its value reads as a distance. Used to distil a teacher's patch scores into a student
    (``DomainAdaptationTrainer(teacher=...)``).

    Args:
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` over the elements. Defaults to ``"mean"``.
    """

    def __init__(self, reduction: LossReduction | str = LossReduction.MEAN) -> None:
        super().__init__(reduction=LossReduction(reduction).value)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            input: student logits, any shape.
            target: teacher logits, the same shape (no gradient is taken through it by the caller's choice).

        Raises:
            ValueError: When the shapes differ.
        """
        if input.shape != target.shape:
            raise ValueError(f"input and target shapes differ: {tuple(input.shape)} vs {tuple(target.shape)}.")
        p = torch.sigmoid(target)
        kl = p * (F.logsigmoid(target) - F.logsigmoid(input)) + (1 - p) * (F.logsigmoid(-target) - F.logsigmoid(-input))
        if self.reduction == LossReduction.MEAN.value:
            return kl.mean()
        if self.reduction == LossReduction.SUM.value:
            return kl.sum()
        return kl
