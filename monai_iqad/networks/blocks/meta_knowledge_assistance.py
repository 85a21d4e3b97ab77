"""Meta-knowledge assistance block "C" of MKCNet: a channel gate on the auxiliary feature."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from monai_iqad.networks.blocks.cbam import ChannelGate

__all__ = ["MetaKnowledgeAssistanceBlock"]


class MetaKnowledgeAssistanceBlock(nn.Module):
    """
    Meta-knowledge assistance block "C" of MKCNet: a CBAM channel gate (no spatial gate) applied to the auxiliary
    feature ``f^ω``, ``C(f) = f ⊙ sigmoid(MLP(avg f) + MLP(max f))``; on a feature vector both poolings are the
    identity, so ``C(f) = f ⊙ sigmoid(2 · MLP(f))``. MKCNet concatenates ``C(f^ω)`` to ``f^d`` for the diagnosis head.

    Re-implementation based on: "Che, Chen, Chen, Image Quality-aware Diagnosis via Meta-knowledge Co-embedding,
    CVPR 2023, https://arxiv.org/abs/2303.15038" (official ``TaskNet.branch_cor``, ``CBAM(256, no_spatial=True)``).

    ``official_meta_forward=True`` reproduces the official functional forward of the meta step (``branch_cor_ff``),
    which returns the raw MLP output ``Linear → ReLU → Linear`` of ``f^ω``: no sigmoid and no multiplication, so C is
    not a gate there.

    Args:
        channels: size of ``f^ω``. Defaults to 256.
        reduction: reduction ratio of the MLP. Defaults to 16.
        pool_types: global poolings of the channel gate. Defaults to ``("avg", "max")``.

    Raises:
        ValueError: see :py:class:`monai_iqad.networks.blocks.ChannelGate`.
    """

    def __init__(self, channels: int = 256, reduction: int = 16, pool_types: Sequence[str] = ("avg", "max")) -> None:
        super().__init__()
        self.gate = ChannelGate(channels, reduction, pool_types)

    def forward(self, x: torch.Tensor, official_meta_forward: bool = False) -> torch.Tensor:
        """
        Args:
            x: ``(batch, channels)`` feature (or ``(batch, channels, *spatial)``, flattened on output).
            official_meta_forward: return the raw MLP output (official functional path) instead of the gated feature.

        Returns:
            ``(batch, channels)`` if the input is a vector (``(batch, channels * prod(spatial))`` for a map input
            in module mode).
        """
        if official_meta_forward:
            return self.gate.mlp(self.gate.global_pool(x, "avg"))
        return torch.flatten(self.gate(x), 1)
