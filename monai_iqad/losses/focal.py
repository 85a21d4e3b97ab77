"""Multi-class softmax focal loss with hard (index) or soft (probability) targets, as used by MKCNet."""

from __future__ import annotations

import torch
from monai.losses.focal_loss import softmax_focal_loss
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

__all__ = ["FocalLoss"]


class FocalLoss(_Loss):
    """
    Softmax focal loss on logits, ``loss_i = -sum_c t_c (1 - p_c)^gamma log p_c`` with ``p = softmax(logits_i)``,
    reduced over the batch. Targets are class indices ``(B,)`` (one-hot) or probability vectors ``(B, C)`` (soft
    targets, e.g. MKCNet's auxiliary label ``y_ω``).

    Re-implementation of the loss of MKCNet (official ``model_fit``) based on:
    "Che, Chen, Chen, Image Quality-aware Diagnosis via Meta-knowledge Co-embedding, CVPR 2023,
    https://arxiv.org/abs/2303.15038" and "Lin et al., Focal Loss for Dense Object Detection, ICCV 2017,
    https://arxiv.org/abs/1708.02002". The element-wise term is MONAI's
    :py:func:`monai.losses.focal_loss.softmax_focal_loss` (log-softmax based, numerically stable; the official code
    uses ``log(p + 1e-20)``), summed over classes.

    Args:
        gamma: focusing parameter (0 gives cross-entropy). Defaults to 2.0.
        reduction: ``"mean"`` (default, official), ``"sum"`` or ``"none"`` (per-sample ``(B,)`` losses).

    Raises:
        ValueError: When ``gamma`` is negative or ``reduction`` is unknown.
    """

    def __init__(self, gamma: float = 2.0, reduction: LossReduction | str = LossReduction.MEAN) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        if gamma < 0:
            raise ValueError(f"gamma must be non-negative, got {gamma}.")
        self.gamma = float(gamma)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            input: ``(B, C)`` logits.
            target: ``(B,)`` (or ``(B, 1)``) integer class indices in ``[0, C)``, or ``(B, C)`` floating-point
                target probabilities.

        Returns:
            scalar for ``"mean"``/``"sum"``, ``(B,)`` for ``"none"``.

        Raises:
            ValueError: When ``input`` is not 2-d, when the target shape matches neither form, when index targets
                are not integers, or when a class index is out of range (the message names it).
        """
        if input.ndim != 2:
            raise ValueError(f"input must be (batch, classes) logits, got shape {tuple(input.shape)}.")
        num_classes = input.shape[1]
        if target.ndim == 2 and target.shape[1] == 1 and num_classes != 1 and not target.is_floating_point():
            target = target[:, 0]
        if target.ndim == 1:
            if target.shape[0] != input.shape[0]:
                raise ValueError(f"target batch size {target.shape[0]} differs from input batch size {input.shape[0]}.")
            if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
                raise ValueError(f"class-index targets must be integers, got dtype {target.dtype}.")
            if target.numel():
                low, high = int(target.min()), int(target.max())
                if low < 0 or high >= num_classes:
                    raise ValueError(f"class index {low if low < 0 else high} is out of range [0, {num_classes - 1}].")
            target = torch.nn.functional.one_hot(target.long(), num_classes).to(input.dtype)
        elif target.shape != input.shape:
            raise ValueError(
                f"target must be (batch,) indices or (batch, classes) probabilities matching input "
                f"{tuple(input.shape)}, got {tuple(target.shape)}."
            )
        else:
            target = target.to(input.dtype)
        loss = softmax_focal_loss(input, target, gamma=self.gamma).sum(dim=1)
        if self.reduction == LossReduction.MEAN.value:
            return loss.mean()
        if self.reduction == LossReduction.SUM.value:
            return loss.sum()
        return loss
