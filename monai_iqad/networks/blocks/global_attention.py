"""Global attention block "G" of MKCNet: CBAM, global average pooling and a linear projection."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.layers.factories import Pool

from monai_iqad.networks.blocks.cbam import CBAM

__all__ = ["GlobalAttentionBlock"]


class GlobalAttentionBlock(nn.Module):
    """
    Global attention block "G" of MKCNet: ``CBAM(in_channels) → global average pooling → Flatten →
    Linear(in_channels, out_features)``. MKCNet has three independent copies, producing ``f^d``, ``f^ω`` and ``f^q``.

    Re-implementation based on: "Che, Chen, Chen, Image Quality-aware Diagnosis via Meta-knowledge Co-embedding,
    CVPR 2023, https://arxiv.org/abs/2303.15038" (official ``TaskNet.branch_bam{1,2,3}``), with CBAM from
    "Woo et al., CBAM: Convolutional Block Attention Module, ECCV 2018, https://arxiv.org/abs/1807.06521".

    In the official network the encoder output is already globally pooled, so CBAM sees a 1×1 map: the channel gate
    reduces to ``sigmoid(2 * MLP(x))`` and the spatial gate to one batch-normalised scalar per sample. Both
    ``(B, C)`` vectors (treated as 1×1 maps) and ``(B, C, *spatial)`` maps are accepted.

    ``official_meta_forward=True`` reproduces the hand-written functional forward that the official code uses for
    the pseudo-updated weights in the meta step (``branch_bam_ff``): the channel gate uses only the average-pooling
    branch, i.e. ``sigmoid(MLP(avg))`` instead of ``sigmoid(MLP(avg) + MLP(max))``; the spatial gate is unchanged.

    Args:
        in_channels: number of input channels. Defaults to 512.
        out_features: size of the output feature. Defaults to 256.
        reduction: reduction ratio of the CBAM channel gate. Defaults to 16.
        spatial_dims: number of spatial dimensions of map inputs. Defaults to 2.
        pool_types: global poolings of the channel gate. Defaults to ``("avg", "max")``.
        kernel_size: spatial-gate convolution size. Defaults to 7.

    Raises:
        ValueError: see :py:class:`monai_iqad.networks.blocks.CBAM`.
    """

    def __init__(
        self,
        in_channels: int = 512,
        out_features: int = 256,
        reduction: int = 16,
        spatial_dims: int = 2,
        pool_types: Sequence[str] = ("avg", "max"),
        kernel_size: int = 7,
    ) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        self.cbam = CBAM(spatial_dims, in_channels, reduction, pool_types, spatial=True, kernel_size=kernel_size)
        self.pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)
        self.fc = nn.Linear(in_channels, out_features)

    def forward(self, x: torch.Tensor, official_meta_forward: bool = False) -> torch.Tensor:
        """
        Args:
            x: ``(batch, in_channels)`` pooled features or ``(batch, in_channels, *spatial)`` maps.
            official_meta_forward: use the official functional-path channel gate (average branch only).

        Returns:
            ``(batch, out_features)``.
        """
        if x.ndim == 2:
            x = x.reshape(list(x.shape) + [1] * self.spatial_dims)
        if official_meta_forward:
            gate = self.cbam.channel_gate
            scale = torch.sigmoid(gate.attention_logits(x, ["avg"]))
            x = x * scale.reshape(list(scale.shape) + [1] * (x.ndim - 2))
            if self.cbam.spatial_gate is not None:
                x = self.cbam.spatial_gate(x)
        else:
            x = self.cbam(x)
        return self.fc(torch.flatten(self.pool(x), 1))
