"""SAQM: Self-Attention Quality Metric, a patch-wise no-reference image quality network."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.data import MetaTensor
from monai.networks.layers.factories import Conv, Pool
from monai.networks.layers.utils import get_act_layer
from monai.networks.nets import FullyConnectedNet

from monai_iqad.networks.blocks.self_attention import SelfAttention2d

__all__ = ["SAQM", "saqm_conv_stack", "SAQM_STACK_CHANNELS"]

#: Output channels of the 3x3 convolutions of one SAQM projection stack (Tliba et al., Table 1).
SAQM_STACK_CHANNELS: tuple[int, ...] = (128, 256, 256, 256, 512, 512, 512)
#: Indices (into ``SAQM_STACK_CHANNELS``) of the convolutions followed by a 2x2 max pooling (Table 1).
_POOL_AFTER: tuple[int, ...] = (3, 6)


def _scaled(channels: int, width: float, minimum: int) -> int:
    return max(minimum, int(round(channels * width)))


def saqm_conv_stack(
    in_channels: int,
    out_channels: int,
    width: float = 1.0,
    act: tuple | str = ("relu", {"inplace": True}),
    spatial_dims: int = 2,
) -> nn.Sequential:
    """
    One SAQM projection stack (Tliba et al., ICIP 2022, Table 1): seven 3x3 convolutions (padding 1) with channels
    128, 256, 256, 256, [max pool 2], 512, 512, 512, [max pool 2], then a 1x1 convolution to ``out_channels``;
    an activation follows every convolution, the 1x1 one included. A 32x32 patch gives an 8x8 map.

    Args:
        in_channels: input channels (3 in the paper).
        out_channels: channels of the final 1x1 convolution (C = 512 for the value, C/8 = 64 for query and key).
            Not scaled by ``width``.
        width: multiplier of the seven 3x3 convolution widths, rounded, at least 8. Defaults to 1 (the paper).
        act: activation type, any name of MONAI's ``Act`` factory. Defaults to in-place ReLU (the paper).
        spatial_dims: number of spatial dimensions; only 2 is supported.

    Returns:
        ``nn.Sequential`` mapping (B, in_channels, H, W) to (B, out_channels, H/4, W/4).

    Raises:
        ValueError: When ``spatial_dims != 2`` or ``width`` is not positive.
    """
    if spatial_dims != 2:
        raise ValueError(f"SAQM only supports spatial_dims=2, got {spatial_dims}.")
    if not width > 0:
        raise ValueError(f"width must be positive, got {width}.")
    conv_type = Conv[Conv.CONV, spatial_dims]
    pool_type = Pool[Pool.MAX, spatial_dims]
    layers: list[nn.Module] = []
    prev = in_channels
    for i, ch in enumerate(SAQM_STACK_CHANNELS):
        ch = _scaled(ch, width, 8)
        layers += [conv_type(prev, ch, kernel_size=3, padding=1), get_act_layer(act)]
        if i in _POOL_AFTER:
            layers.append(pool_type(kernel_size=2, stride=2))
        prev = ch
    layers += [conv_type(prev, out_channels, kernel_size=1), get_act_layer(act)]
    return nn.Sequential(*layers)


class SAQM(nn.Module):
    """
    Self-Attention Quality Metric: a shallow self-attention network that scores 32x32 patches; the image score is
    the mean of its patch scores.

    Re-implementation of SAQM based on:
    "Tliba, Sekhri, Kerkouri, Chetouani, Deep-based quality assessment of medical images through domain
    adaptation, ICIP 2022, https://arxiv.org/abs/2210.10533".

    Per patch: query, key and value each have their own conv stack (Table 1, :func:`saqm_conv_stack`), giving
    (C/8, 8, 8), (C/8, 8, 8) and (C, 8, 8) maps; :class:`SelfAttention2d` (eqs. 1-3, ``gamma`` initialised to 0)
    combines them; global max pooling gives a C-vector (the patch *feature*, used for domain adaptation); an MLP
    regressor gives one logit. Patch score = ``sigmoid(logit)``; image score = mean of the patch scores.

    Choices the paper leaves open (see ``docs/saqm.md``):

    - The regressor is ``FullyConnectedNet(C, 1, regressor_channels)`` with ReLU; default one hidden layer of 256.
    - Image to patches happens in ``forward``: a grid of ``patch_size`` patches every ``stride`` pixels
      (non-overlapping by default, ``stride < patch_size`` overlaps). Remainder rows/columns are **dropped**, never
      zero-padded. Patches go through the network in chunks of ``patch_batch_size`` (bounds inference memory on
      large images; under autograd every chunk's activations are kept anyway).
    - Grayscale images: the model expects ``in_channels`` (3, as the paper's first 3→128 conv). Channel
      replication (or RGB→luminance→replication) is a transform, not part of the model.
    - ``width`` scales the 3x3 stacks, ``C`` and the regressor (for tests and CPU demos); 1 = the paper.
    - Initialisation: He normal for the convolutions (see :meth:`init_weights`); the paper says "randomly
      initialized".
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        value_channels: int = 512,
        reduction: int = 8,
        regressor_channels: Sequence[int] = (256,),
        regressor_dropout: float | None = None,
        act: tuple | str = ("relu", {"inplace": True}),
        patch_size: int = 32,
        stride: int | None = None,
        patch_batch_size: int = 256,
        width: float = 1.0,
    ) -> None:
        """
        Args:
            spatial_dims: number of spatial dimensions; only 2 is supported.
            in_channels: image channels. Defaults to 3 (the paper's first conv is 3→128).
            value_channels: C, the channels of the value map and of the patch feature. Defaults to 512 (Table 1).
                Scaled by ``width`` (rounded, at least 8).
            reduction: query/key channels are ``C // reduction`` (at least 1). Defaults to 8 (the paper).
            regressor_channels: hidden sizes of the MLP regressor, each scaled by ``width`` (rounded, at least 8).
                Defaults to ``(256,)`` (our choice; the paper says "a shallow MLP").
            regressor_dropout: dropout of the regressor hidden layers. Defaults to None (no dropout; our choice).
            act: activation of the conv stacks and the regressor, any MONAI ``Act`` name. Defaults to ReLU.
            patch_size: side of the square patches. Defaults to 32 (the paper).
            stride: grid step; ``None`` = ``patch_size`` (non-overlapping, the default).
            patch_batch_size: patches per network call when scoring an image. Defaults to 256.
            width: channel multiplier of the whole model (see above). Defaults to 1 (the paper).

        Raises:
            ValueError: When ``spatial_dims != 2``, or a size/width argument is not positive.
        """
        super().__init__()
        if spatial_dims != 2:
            raise ValueError(f"SAQM only supports spatial_dims=2, got {spatial_dims}.")
        if in_channels < 1:
            raise ValueError(f"in_channels must be positive, got {in_channels}.")
        if not width > 0:
            raise ValueError(f"width must be positive, got {width}.")
        if reduction < 1:
            raise ValueError(f"reduction must be positive, got {reduction}.")
        stride = patch_size if stride is None else stride
        if patch_size < 1 or stride < 1:
            raise ValueError(f"patch_size and stride must be positive, got patch_size={patch_size}, stride={stride}.")
        if patch_batch_size < 1:
            raise ValueError(f"patch_batch_size must be positive, got {patch_batch_size}.")

        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.patch_size = patch_size
        self.stride = stride
        self.patch_batch_size = patch_batch_size
        self.width = width
        self.out_channels = _scaled(value_channels, width, 8)
        self.qk_channels = max(1, self.out_channels // reduction)

        self.attention = SelfAttention2d(
            in_channels=in_channels,
            reduction=reduction,
            value_channels=self.out_channels,
            query=saqm_conv_stack(in_channels, self.qk_channels, width, act, spatial_dims),
            key=saqm_conv_stack(in_channels, self.qk_channels, width, act, spatial_dims),
            value=saqm_conv_stack(in_channels, self.out_channels, width, act, spatial_dims),
        )
        self.global_pool = Pool[Pool.ADAPTIVEMAX, spatial_dims](1)
        self.regressor = FullyConnectedNet(
            in_channels=self.out_channels,
            out_channels=1,
            hidden_channels=[_scaled(c, width, 8) for c in regressor_channels],
            dropout=regressor_dropout,
            act=act,
            adn_ordering="AD",
        )
        self.init_weights()

    def init_weights(self) -> None:
        """
        He (Kaiming) normal initialisation of every convolution (``fan_in``, ReLU gain) with zero biases; the
        regressor keeps PyTorch's default and ``gamma`` stays 0. The paper only says "randomly initialized": with
        PyTorch's default conv init the signal of this 8-conv stack without normalisation fades to near-constant
        patch features, while He init keeps patches distinguishable at the start of training (as torchvision's VGG).
        """
        for module in self.attention.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    # ------------------------------------------------------------------------------------------------------------
    # patch grid
    def grid_shape(self, h: int, w: int) -> tuple[int, int]:
        """
        Number of patch rows and columns of an ``h`` x ``w`` image (remainder dropped).

        Raises:
            ValueError: When the image is smaller than one patch.
        """
        p, s = self.patch_size, self.stride
        if h < p or w < p:
            raise ValueError(f"SAQM needs images of at least {p}x{p} pixels (one patch), got spatial shape {(h, w)}.")
        return (h - p) // s + 1, (w - p) // s + 1

    def num_patches(self, h: int, w: int) -> int:
        """
        Number of patches of an ``h`` x ``w`` image: ``nh * nw`` with ``nh = (h - patch) // stride + 1``.

        Raises:
            ValueError: When the image is smaller than one patch.
        """
        nh, nw = self.grid_shape(h, w)
        return nh * nw

    # ------------------------------------------------------------------------------------------------------------
    def forward_patches(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Score a batch of patches (no chunking).

        Args:
            patches: (M, in_channels, patch_size, patch_size); any size the stacks accept works.

        Returns:
            logits (M,) and pooled features (M, C).
        """
        out = self.attention(patches)
        attended = out if isinstance(out, torch.Tensor) else out[0]  # (M, C, h', w'); refines the Union for TorchScript
        features = self.global_pool(attended).flatten(1)  # (M, C)
        logits = self.regressor(features).squeeze(-1)  # (M,)
        return logits, features

    def _patch_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        if not torch.jit.is_scripting() and isinstance(x, MetaTensor):
            x = x.as_tensor()  # plain tensor: no meta tracking through the strided views and gathers
        if x.ndim != 4:
            raise ValueError(f"SAQM expects input of shape (B, C, H, W), got {list(x.shape)}.")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"SAQM was built for {self.in_channels} input channels, got input of shape {list(x.shape)} "
                "(replicate grayscale channels in the transforms)."
            )
        b, c = x.shape[:2]
        nh, nw = self.grid_shape(int(x.shape[2]), int(x.shape[3]))
        p, s = self.patch_size, self.stride
        # (B, C, nh, nw, p, p) strided view, then (B, nh, nw, C, p, p): still no copy
        grid = x.unfold(2, p, s).unfold(3, p, s).permute(0, 2, 3, 1, 4, 5)
        n_total = b * nh * nw
        logits_chunks: list[torch.Tensor] = []
        feature_chunks: list[torch.Tensor] = []
        if nh == 1 and nw == 1:
            # a single patch per image (training crops): the input itself, no gather
            flat = grid.reshape(n_total, c, p, p)
            for start in range(0, n_total, self.patch_batch_size):
                lg, ft = self.forward_patches(flat[start : start + self.patch_batch_size])
                logits_chunks.append(lg)
                feature_chunks.append(ft)
        else:
            for start in range(0, n_total, self.patch_batch_size):
                # gather only this chunk's patches (bounded memory); index order is (b, row, col)
                idx = torch.arange(start, min(start + self.patch_batch_size, n_total), device=x.device)
                bi, rem = idx // (nh * nw), idx % (nh * nw)
                chunk = grid[bi, rem // nw, rem % nw]  # (m, C, p, p)
                lg, ft = self.forward_patches(chunk)
                logits_chunks.append(lg)
                feature_chunks.append(ft)
        logits = torch.cat(logits_chunks).view(b, nh * nw)
        features = torch.cat(feature_chunks).view(b, nh * nw, -1)
        return logits, features, (nh, nw)

    def forward(
        self, x: torch.Tensor, return_features: bool = False, patch_level: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            x: images in shape (B, in_channels, H, W), H and W at least ``patch_size``.
            return_features: also return the pooled attention features.
            patch_level: return per-patch logits instead of the image score.

        Returns:
            - ``patch_level=False``: image score (B, 1) in [0, 1] = mean over patches of ``sigmoid(logit)``;
              with ``return_features``, also features (B, C) = mean of the patch features.
            - ``patch_level=True``: patch **logits** (B, Np), patches in row-major grid order; with
              ``return_features``, also patch features (B, Np, C).

        Raises:
            ValueError: When ``x`` is not 4D, has the wrong channel count, or is smaller than one patch.
        """
        logits, features, _ = self._patch_logits(x)
        if patch_level:
            if return_features:
                return logits, features
            return logits
        score = torch.sigmoid(logits).mean(dim=1, keepdim=True)
        if return_features:
            return score, features.mean(dim=1)
        return score

    @torch.jit.export
    def score_map(self, x: torch.Tensor) -> torch.Tensor:
        """
        Patch scores laid out on the patch grid, e.g. for heat maps.

        Args:
            x: images in shape (B, in_channels, H, W).

        Returns:
            (B, 1, nh, nw) patch scores in [0, 1]; their mean over (nh, nw) is ``forward(x)``.

        Raises:
            ValueError: as :meth:`forward`.
        """
        logits, _, (nh, nw) = self._patch_logits(x)
        return torch.sigmoid(logits).view(-1, 1, nh, nw)
