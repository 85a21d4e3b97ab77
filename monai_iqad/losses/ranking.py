"""Pairwise ranking loss on within-ladder pairs (same content, two severities of one distortion)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["PairwiseRankingLoss", "ladder_pairs"]


def ladder_pairs(groups: torch.Tensor, levels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All ordered pairs ``(i, j)`` of a batch with the same group and ``levels[i] < levels[j]`` (i is better).

    Args:
        groups: (N,) integer ladder ids.
        levels: (N,) severities (0 = pristine; higher = worse).

    Returns:
        Two (P,) long tensors of indices: the better item ``i`` and the worse item ``j`` of each pair.

    Raises:
        ValueError: When ``groups`` and ``levels`` are not 1-D with the same length.
    """
    groups, levels = groups.reshape(-1), levels.reshape(-1)
    if groups.shape != levels.shape:
        raise ValueError(
            f"groups and levels must have the same length, got {tuple(groups.shape)} and {tuple(levels.shape)}."
        )
    same = groups[:, None] == groups[None, :]
    better = levels[:, None] < levels[None, :]
    i, j = torch.nonzero(same & better, as_tuple=True)
    return i, j


class PairwiseRankingLoss(nn.Module):
    """
    Pairwise ranking loss on within-ladder pairs: for items ``i``, ``j`` of one ladder (same ``group``) with
    ``level_i < level_j`` (``i`` less distorted), the score of ``i`` should exceed the score of ``j``.

    With ``d = s_i - s_j`` over the P pairs of the batch:

    - ``"ranknet"`` (Burges et al., ICML 2005): ``mean(softplus(-d / temperature))``, the cross-entropy of
      ``sigmoid(d / temperature)`` against "i is better";
    - ``"margin"``: ``mean(relu(margin - d))`` (``torch.nn.MarginRankingLoss`` with target 1).

    ``gap_weighted`` weights each pair by its level gap ``level_j - level_i`` (normalised to mean 1), so distant
    levels, whose order is certain, count more. ``forward``'s optional ``weights`` give each item a weight that its
    pairs take when it is their worse item ``j`` (e.g. :class:`~monai_iqad.demo.pretrain_corpus.LadderPatchDataset`'s
    ``level_weights``: more weight on the mild levels of one distortion family); the loss is then the weighted mean
    ``sum(w * l) / sum(w)`` (with ``gap_weighted``, ``w`` is the product of both weights). A batch without any pair
    gives 0 (with a gradient path), so the loss can be added unconditionally.

    Args:
        mode: ``"ranknet"`` or ``"margin"``. Defaults to ``"ranknet"``.
        margin: margin of ``"margin"`` (score units, e.g. logits). Defaults to 0.5.
        temperature: scale of ``"ranknet"``. Defaults to 1.
        gap_weighted: weight pairs by their level gap. Defaults to False.

    Raises:
        ValueError: When ``mode`` is unknown, or ``margin`` is negative, or ``temperature`` not positive.
    """

    def __init__(
        self, mode: str = "ranknet", margin: float = 0.5, temperature: float = 1.0, gap_weighted: bool = False
    ) -> None:
        super().__init__()
        if mode not in ("ranknet", "margin"):
            raise ValueError(f"mode must be 'ranknet' or 'margin', got {mode!r}.")
        if margin < 0:
            raise ValueError(f"margin must be non-negative, got {margin}.")
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}.")
        self.mode = mode
        self.margin = float(margin)
        self.temperature = float(temperature)
        self.gap_weighted = bool(gap_weighted)

    def forward(
        self,
        scores: torch.Tensor,
        groups: torch.Tensor,
        levels: torch.Tensor,
        weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Args:
            scores: (N,) or (N, 1) scores, higher = better quality (e.g. image-level logits).
            groups: (N,) ladder ids.
            levels: (N,) severities.
            weights: optional (N,) non-negative item weights; a pair takes the weight of its worse item. Defaults
                to None (every pair weighs 1; the loss is then the plain mean, bit for bit).

        Returns:
            The 0-d loss.

        Raises:
            ValueError: When the inputs do not have N items each, or ``weights`` has a negative or non-finite value.
        """
        scores = scores.reshape(-1)
        n = scores.numel()
        if n != groups.numel() or n != levels.numel() or (weights is not None and n != weights.numel()):
            sizes = [groups.numel(), levels.numel()] + ([] if weights is None else [weights.numel()])
            raise ValueError(f"scores, groups, levels (and weights) need one value per item: {n} scores, got {sizes}.")
        groups, levels = groups.to(scores.device), levels.to(scores.device)
        i, j = ladder_pairs(groups, levels)
        if i.numel() == 0:
            return scores.sum() * 0.0
        d = scores[i] - scores[j]
        per_pair = F.softplus(-d / self.temperature) if self.mode == "ranknet" else F.relu(self.margin - d)
        pair_w: torch.Tensor | None = None
        if weights is not None:
            weights = weights.reshape(-1).to(device=scores.device, dtype=per_pair.dtype)
            if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
                raise ValueError(f"ranking weights must be finite and non-negative, got {weights.tolist()}.")
            pair_w = weights[j]
        if self.gap_weighted:
            gap = (levels[j] - levels[i]).to(per_pair.dtype)
            pair_w = gap if pair_w is None else pair_w * gap
        if pair_w is None:
            return per_pair.mean()
        return (per_pair * pair_w).sum() / pair_w.sum().clamp_min(torch.finfo(per_pair.dtype).tiny)
