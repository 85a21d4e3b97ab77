"""SAGAN-style 2D self-attention with a zero-initialised residual gate, as used by SAQM."""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.layers.factories import Conv

__all__ = ["SelfAttention2d"]


class SelfAttention2d(nn.Module):
    """
    Self-attention over the spatial positions of a 2D feature map, with a learnable gate ``gamma`` initialised to 0.

    Re-implementation of the attention of SAQM based on:
    "Tliba et al., Deep-based quality assessment of medical images through domain adaptation, ICIP 2022,
    https://arxiv.org/abs/2210.10533" (eqs. 1-3), itself the SAGAN block of
    "Zhang et al., Self-Attention Generative Adversarial Networks, ICML 2019, https://arxiv.org/abs/1805.08318"
    in its common "query/key at C/8, value at C" variant.

    With ``Q = query(x)``, ``K = key(x)`` of shape (B, Cq, N) and ``V = value(x)`` of shape (B, C, N), N = H'·W':

    - ``S[l, j] = Q[:, l]^T K[:, j]`` (eq. 1; no ``1/sqrt(d)`` scaling),
    - ``A[l, j] = softmax_j(S[l, j])``: each query position ``l`` distributes a unit mass over the key positions
      (eq. 2), so every row of ``A`` sums to 1,
    - ``out[:, l] = gamma * sum_j A[l, j] V[:, j] + V[:, l]`` (eq. 3).

    The residual is the **value** (paper eq. 3), not the block input: in SAQM the input is the image patch and
    the three projections are separate conv stacks, so ``x`` and ``V`` do not even have the same shape.
    ``gamma = 0`` at initialisation, so the block starts as ``out = V``.

    The default projections are 1x1 convolutions of the input (plain SAGAN). User-supplied ``query``, ``key`` and
    ``value`` modules replace them; they must map (B, C_in, H, W) to (B, Cq, H', W'), (B, Cq, H', W') and
    (B, C, H', W') respectively.
    """

    def __init__(
        self,
        in_channels: int,
        reduction: int = 8,
        value_channels: int | None = None,
        query: nn.Module | None = None,
        key: nn.Module | None = None,
        value: nn.Module | None = None,
        gamma_init: float = 0.0,
    ) -> None:
        """
        Args:
            in_channels: number of channels of the block input (used by the default 1x1 projections).
            reduction: query/key channels are ``value_channels // reduction`` for the default projections.
                Defaults to 8 (the paper and SAGAN).
            value_channels: output channels of the default value projection. Defaults to ``in_channels``.
            query: optional module computing the query map (B, Cq, H', W'). Defaults to a 1x1 conv.
            key: optional module computing the key map (B, Cq, H', W'). Defaults to a 1x1 conv.
            value: optional module computing the value map (B, C, H', W'). Defaults to a 1x1 conv.
            gamma_init: initial value of the learnable gate. Defaults to 0 (the paper: "initialized to zero in
                order to focus on learning the main task").

        Raises:
            ValueError: When ``in_channels`` or ``reduction`` is not positive, or when a default query/key
                projection would have no channel (``value_channels // reduction == 0``).
        """
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be positive, got {in_channels}.")
        if reduction < 1:
            raise ValueError(f"reduction must be positive, got {reduction}.")
        value_channels = in_channels if value_channels is None else value_channels
        if value_channels < 1:
            raise ValueError(f"value_channels must be positive, got {value_channels}.")
        qk_channels = value_channels // reduction
        if (query is None or key is None) and qk_channels < 1:
            raise ValueError(
                f"value_channels // reduction must be >= 1 for the default query/key projections, "
                f"got value_channels={value_channels}, reduction={reduction}."
            )
        conv_type = Conv[Conv.CONV, 2]
        self.in_channels = in_channels
        self.reduction = reduction
        self.query = query if query is not None else conv_type(in_channels, qk_channels, kernel_size=1)
        self.key = key if key is not None else conv_type(in_channels, qk_channels, kernel_size=1)
        self.value = value if value is not None else conv_type(in_channels, value_channels, kernel_size=1)
        self.gamma = nn.Parameter(torch.full((1,), float(gamma_init)))

    def forward(
        self, x: torch.Tensor, return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            x: input in shape (batch, in_channels, H, W).
            return_attention: also return the attention map.

        Returns:
            The attended value map (batch, C, H', W'); with ``return_attention``, also the attention map
            (batch, N, N), N = H'·W', whose row ``l`` (a query position) is a distribution over key positions.

        Raises:
            ValueError: When the query, key and value maps have inconsistent shapes.
        """
        q, k, v = self.query(x), self.key(x), self.value(x)
        if q.ndim != 4 or q.shape != k.shape:
            raise ValueError(
                f"query and key maps must have the same 4D shape, got {list(q.shape)} and {list(k.shape)}."
            )
        if v.ndim != 4 or v.shape[0] != q.shape[0] or v.shape[2:] != q.shape[2:]:
            raise ValueError(
                f"value map {list(v.shape)} must have the batch and spatial shape of the query map {list(q.shape)}."
            )
        b, c, h, w = v.shape
        q_flat = q.flatten(2)  # (B, Cq, N)
        k_flat = k.flatten(2)  # (B, Cq, N)
        v_flat = v.flatten(2)  # (B, C, N)
        similarity = torch.bmm(q_flat.transpose(1, 2), k_flat)  # (B, N_query, N_key), eq. 1
        attention = torch.softmax(similarity, dim=-1)  # normalised over key positions, eq. 2
        attended = torch.bmm(v_flat, attention.transpose(1, 2)).view(b, c, h, w)  # out[:, l] = sum_j A[l, j] V[:, j]
        out = self.gamma.to(attended.dtype) * attended + v  # eq. 3
        if return_attention:
            return out, attention
        return out
