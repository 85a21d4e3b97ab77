"""Convolutional Block Attention Module (CBAM): channel gate, spatial gate and their composition."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers.factories import Act, Conv, Norm

__all__ = ["ChannelGate", "SpatialGate", "CBAM"]

_POOL_TYPES = ("avg", "max", "lp", "lse")


class ChannelGate(nn.Module):
    """
    CBAM channel attention: ``x * sigmoid(sum_p MLP(pool_p(x)))`` with one MLP shared by all global poolings.

    Re-implementation of the channel attention module based on:
    "Woo et al., CBAM: Convolutional Block Attention Module, ECCV 2018, https://arxiv.org/abs/1807.06521",
    following the layout used by MKCNet ("Che, Chen, Chen, Image Quality-aware Diagnosis via Meta-knowledge
    Co-embedding, CVPR 2023, https://arxiv.org/abs/2303.15038", official ``model/CBAM.py``).

    The MLP is ``Flatten → Linear(C, C // reduction) → ReLU → Linear(C // reduction, C)`` (the leading ``Flatten``
    keeps the official parameter indices ``mlp.1`` and ``mlp.3``). The pooling is global over all spatial dimensions,
    so the gate works for any number of them; a ``(B, C)`` vector is treated as a map with one spatial point.
    On a one-point map all poolings are equal, so the default gate computes ``x * sigmoid(2 * MLP(x))``.

    Args:
        channels: number of input channels ``C``.
        reduction: reduction ratio of the hidden layer. Defaults to 16.
        pool_types: global poolings, any of ``"avg"``, ``"max"``, ``"lp"`` (L2 power-average) and ``"lse"``
            (log-sum-exp). Defaults to ``("avg", "max")``.

    Raises:
        ValueError: When ``reduction`` is not positive or larger than ``channels``, when ``pool_types`` is empty,
            or when it holds an unknown pooling name.
    """

    def __init__(self, channels: int, reduction: int = 16, pool_types: Sequence[str] = ("avg", "max")) -> None:
        super().__init__()
        if reduction <= 0 or channels // reduction < 1:
            raise ValueError(
                f"reduction must be positive and <= channels, got reduction={reduction}, channels={channels}."
            )
        pool_types = tuple(pool_types)
        if not pool_types:
            raise ValueError("pool_types must not be empty.")
        for p in pool_types:
            if p not in _POOL_TYPES:
                raise ValueError(f"unknown pool type {p!r}, expected one of {_POOL_TYPES}.")
        self.channels = channels
        self.pool_types = list(pool_types)
        hidden = channels // reduction
        self.mlp = nn.Sequential(
            nn.Flatten(), nn.Linear(channels, hidden), Act[Act.RELU](), nn.Linear(hidden, channels)
        )

    @staticmethod
    def global_pool(x: torch.Tensor, pool_type: str) -> torch.Tensor:
        """
        Global pooling of a ``(B, C, *spatial)`` map (or a ``(B, C)`` vector) to ``(B, C)``.

        Args:
            x: input tensor.
            pool_type: one of ``"avg"``, ``"max"``, ``"lp"``, ``"lse"``.
        """
        flat = x.reshape(x.shape[0], x.shape[1], -1)
        if pool_type == "avg":
            return flat.mean(-1)
        if pool_type == "max":
            return flat.amax(-1)
        if pool_type == "lp":
            return flat.pow(2).sum(-1).sqrt()
        if pool_type == "lse":
            return torch.logsumexp(flat, dim=-1)
        raise ValueError("unknown pool type " + pool_type + ", expected avg, max, lp or lse.")

    def attention_logits(self, x: torch.Tensor, pool_types: list[str] | None = None) -> torch.Tensor:
        """
        Sum of the shared-MLP outputs over the poolings, before the sigmoid.

        Args:
            x: ``(B, C, *spatial)`` map or ``(B, C)`` vector.
            pool_types: poolings to use; defaults to ``self.pool_types``.

        Returns:
            ``(B, C)`` raw channel attention.
        """
        out = torch.zeros(1, dtype=x.dtype, device=x.device)
        for pool_type in self.pool_types if pool_types is None else pool_types:
            out = out + self.mlp(self.global_pool(x, pool_type))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: ``(batch, channels, *spatial)`` map or ``(batch, channels)`` vector.

        Returns:
            tensor of the same shape as ``x``, each channel scaled by its gate in ``(0, 1)``.
        """
        scale = torch.sigmoid(self.attention_logits(x))
        return x * scale.reshape(list(scale.shape) + [1] * (x.ndim - 2))


class SpatialGate(nn.Module):
    """
    CBAM spatial attention: ``x * sigmoid(BN(conv([max_c x, mean_c x])))``.

    Re-implementation of the spatial attention module based on:
    "Woo et al., CBAM: Convolutional Block Attention Module, ECCV 2018, https://arxiv.org/abs/1807.06521",
    as in the official MKCNet code (``Conv(2, 1, 7, padding 3, bias=False)`` then
    ``BatchNorm(1, eps=1e-5, momentum=0.01)``, no ReLU).

    Batch-size-1 fix: PyTorch's batch norm raises in train mode when it sees a single value per channel, which is the
    case for a batch of one sample on a 1×1 map (MKCNet applies CBAM to globally pooled features, so a last
    mini-batch of one sample crashed the official code). In that case this gate normalises with the running
    statistics, **without updating them** (as in eval mode); the affine weight and bias still receive gradients.
    Any other input uses ordinary batch norm.

    Args:
        spatial_dims: number of spatial dimensions of the input. Defaults to 2.
        kernel_size: size of the convolution kernel (odd). Defaults to 7.
        eps: batch-norm epsilon. Defaults to 1e-5.
        momentum: batch-norm momentum. Defaults to 0.01 (official value).

    Raises:
        ValueError: When ``kernel_size`` is not a positive odd number.
    """

    def __init__(self, spatial_dims: int = 2, kernel_size: int = 7, eps: float = 1e-5, momentum: float = 0.01) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}.")
        self.spatial_dims = spatial_dims
        self.conv = Conv[Conv.CONV, spatial_dims](
            2, 1, kernel_size=kernel_size, padding=(kernel_size - 1) // 2, bias=False
        )
        self.norm = Norm[Norm.BATCH, spatial_dims](1, eps=eps, momentum=momentum)

    def _normalise(self, y: torch.Tensor) -> torch.Tensor:
        if self.training and y.numel() == 1 and self.norm.running_mean is not None:
            # a single value per channel: batch statistics are undefined, use the running ones and leave them as is
            return F.batch_norm(
                y,
                self.norm.running_mean,
                self.norm.running_var,
                self.norm.weight,
                self.norm.bias,
                training=False,
                momentum=0.0,
                eps=self.norm.eps,
            )
        return self.norm(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: ``(batch, channels, *spatial)`` with ``len(spatial) == spatial_dims``.

        Returns:
            tensor of the same shape as ``x``, each position scaled by its gate in ``(0, 1)``.
        """
        compressed = torch.cat((x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)), dim=1)
        return x * torch.sigmoid(self._normalise(self.conv(compressed)))


class CBAM(nn.Module):
    """
    Convolutional Block Attention Module: a channel gate followed (optionally) by a spatial gate.

    Re-implementation based on: "Woo et al., CBAM: Convolutional Block Attention Module, ECCV 2018,
    https://arxiv.org/abs/1807.06521", with the settings of MKCNet ("Che, Chen, Chen, Image Quality-aware Diagnosis
    via Meta-knowledge Co-embedding, CVPR 2023, https://arxiv.org/abs/2303.15038"). See :py:class:`SpatialGate` for
    the batch-size-1 fix.

    Args:
        spatial_dims: number of spatial dimensions of the input.
        channels: number of input channels.
        reduction: reduction ratio of the channel-gate MLP. Defaults to 16.
        pool_types: global poolings of the channel gate. Defaults to ``("avg", "max")``.
        spatial: whether to apply the spatial gate (the official ``no_spatial`` is ``not spatial``). Defaults to True.
        kernel_size: spatial-gate convolution size. Defaults to 7.

    Raises:
        ValueError: see :py:class:`ChannelGate` and :py:class:`SpatialGate`.
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        reduction: int = 16,
        pool_types: Sequence[str] = ("avg", "max"),
        spatial: bool = True,
        kernel_size: int = 7,
    ) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        self.channel_gate = ChannelGate(channels, reduction, pool_types)
        self.spatial_gate = SpatialGate(spatial_dims, kernel_size) if spatial else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: ``(batch, channels, *spatial)``; a ``(batch, channels)`` vector is accepted when ``spatial=False``.

        Returns:
            tensor of the same shape as ``x``.
        """
        x = self.channel_gate(x)
        if self.spatial_gate is not None:
            x = self.spatial_gate(x)
        return x
