"""VGG16-BN convolutional encoder (no fully connected layers), as used by every network of MKCNet."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn as nn
from monai.networks.layers.factories import Act, Conv, Pool
from monai.networks.layers.utils import get_norm_layer

__all__ = ["VGGEncoder"]


class VGGEncoder(nn.Module):
    """
    VGG16-BN encoder (the convolutional part of VGG16 with batch normalisation, without the fully connected layers),
    optionally followed by global average pooling.

    Re-implementation of the backbone of MKCNet based on:
    "Che, Chen, Chen, Image Quality-aware Diagnosis via Meta-knowledge Co-embedding, CVPR 2023,
    https://arxiv.org/abs/2303.15038" (official code ``model/VGG.py``), itself the network of
    "Simonyan, Zisserman, Very Deep Convolutional Networks for Large-Scale Image Recognition, ICLR 2015,
    https://arxiv.org/abs/1409.1556".

    Layout: ``len(layers)`` blocks; block ``b`` has ``layers[b]`` 3×3 convolutions (padding 1), each followed by a
    normalisation layer and a ReLU, then a 2×2 max pooling with stride 2. With the defaults a 256×256 image gives a
    512×8×8 map, pooled to a 512-d vector. Weights are initialised as in the official code: Xavier-uniform
    convolution weights, zero biases, normalisation weight 1 and bias 0 (only the encoder's own layers).

    Pretrained weights: MKCNet trains from scratch. Users who have torchvision's VGG16-BN weights on disk can pass
    ``pretrained_path`` (a ``state_dict`` saved with ``torch.save``; loaded with ``weights_only=True``, nothing is
    downloaded). torchvision's ``features.N.*`` keys are mapped to this module's ``features.block{b}.{j}.*`` keys
    (see :py:meth:`torchvision_key_map`) and its ``classifier.*`` keys are ignored. A state dict saved from this module
    itself is accepted as well. Shapes must match: use ``in_channels=3``, ``width=1.0`` and the default
    ``channels``/``layers`` with torchvision weights.

    Args:
        spatial_dims: number of spatial dimensions of the input. Defaults to 2.
        in_channels: number of input channels (3 for RGB fundus images, 1 for OCTA/CT/CXR). Defaults to 3.
        channels: output channels of each block, before ``width`` scaling. Defaults to ``(64, 128, 256, 512, 512)``.
        layers: number of convolutions in each block. Defaults to ``(2, 2, 3, 3, 3)`` (VGG16).
        norm: normalisation layer, a name or a ``(name, args)`` tuple understood by MONAI's ``Norm`` factory.
            Defaults to ``"batch"``.
        width: multiplier applied to ``channels`` (e.g. ``1/16`` for fast CPU tests). Defaults to 1.0.
        pool_output: if True, return the globally average-pooled ``(B, C)`` vector, else the ``(B, C, *spatial)``
            map. Defaults to True.
        pretrained_path: optional local path of a torchvision VGG16-BN (or own) state dict to load. Defaults to None.

    Raises:
        ValueError: When ``channels`` and ``layers`` differ in length or are empty, when a count is not positive,
            or when ``width`` is not positive.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        channels: Sequence[int] = (64, 128, 256, 512, 512),
        layers: Sequence[int] = (2, 2, 3, 3, 3),
        norm: str | tuple = "batch",
        width: float = 1.0,
        pool_output: bool = True,
        pretrained_path: str | Path | None = None,
    ) -> None:
        super().__init__()
        if len(channels) != len(layers) or len(channels) == 0:
            raise ValueError(
                f"channels and layers must be non-empty and of equal length, got {len(channels)} and {len(layers)}."
            )
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}.")
        if in_channels < 1:
            raise ValueError(f"in_channels must be positive, got {in_channels}.")
        if any(n < 1 for n in layers):
            raise ValueError(f"every entry of layers must be positive, got {tuple(layers)}.")
        if any(c < 1 for c in channels):
            raise ValueError(f"every entry of channels must be positive, got {tuple(channels)}.")

        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.layers = tuple(int(n) for n in layers)
        self.channels = tuple(max(1, int(round(c * width))) for c in channels)
        self.pool_output = pool_output

        conv_type = Conv[Conv.CONV, spatial_dims]
        pool_type = Pool[Pool.MAX, spatial_dims]
        blocks: OrderedDict[str, nn.Module] = OrderedDict()
        c_in = in_channels
        for b, (c_out, n_conv) in enumerate(zip(self.channels, self.layers)):
            block: list[nn.Module] = []
            for _ in range(n_conv):
                block += [
                    conv_type(c_in, c_out, kernel_size=3, padding=1),
                    get_norm_layer(norm, spatial_dims=spatial_dims, channels=c_out),
                    Act[Act.RELU](inplace=True),
                ]
                c_in = c_out
            block.append(pool_type(kernel_size=2, stride=2))
            blocks[f"block{b + 1}"] = nn.Sequential(*block)
        self.features = nn.Sequential(blocks)
        self.pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)
        self.out_channels = c_in

        self.reset_parameters()
        if pretrained_path is not None:
            self.load_pretrained(pretrained_path)

    def reset_parameters(self) -> None:
        """Official initialisation: Xavier-uniform conv/linear weights, zero bias, norm weight 1 and bias 0."""
        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)):
                if getattr(m, "weight", None) is not None:
                    nn.init.ones_(m.weight)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)

    def torchvision_key_map(self) -> dict[str, str]:
        """
        Map torchvision's ``vgg*_bn().features`` state-dict keys to this module's keys.

        torchvision lays the same layers out in one flat ``nn.Sequential`` (conv, norm, ReLU per convolution and a
        max pooling per block), so ``features.{offset_b + j}`` is ``features.block{b}.{j}`` where ``offset_b`` counts
        the layers of the previous blocks (VGG16: convolutions at 0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40).

        Returns:
            ``{torchvision_key: own_key}`` for every parameter and buffer of the convolution and norm layers.
        """
        own = self.state_dict()
        mapping: dict[str, str] = {}
        offset = 0
        for b, n_conv in enumerate(self.layers):
            prefix = f"features.block{b + 1}."
            for key in own:
                if key.startswith(prefix):
                    j, _, name = key[len(prefix) :].partition(".")
                    mapping[f"features.{offset + int(j)}.{name}"] = key
            offset += 3 * n_conv + 1
        return mapping

    def load_pretrained(self, path: str | Path) -> None:
        """
        Load a local state dict, in torchvision's VGG-BN key layout or in this module's own layout.

        Args:
            path: file written by ``torch.save(state_dict)``; loaded with ``torch.load(weights_only=True)``.

        Raises:
            FileNotFoundError: When ``path`` does not exist.
            ValueError: When the file is not a state dict, when keys are missing or unexpected, or when a tensor's
                shape differs from this module's (the message names the key and both shapes).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"pretrained_path does not exist: {path}.")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, Mapping):
            raise ValueError(f"{path} does not hold a state dict (got {type(state).__name__}).")
        own = self.state_dict()
        tv_layout = any(k.startswith("features.") and k.split(".")[1].isdigit() for k in state)
        if tv_layout:
            key_map = self.torchvision_key_map()
            src = {k: v for k, v in state.items() if k.startswith("features.")}
            unexpected = sorted(set(src) - set(key_map))
            missing = sorted(k for k in key_map if k not in src and not k.endswith("num_batches_tracked"))
            renamed = {key_map[k]: v for k, v in src.items() if k in key_map}
        else:
            unexpected = sorted(set(state) - set(own))
            missing = sorted(k for k in own if k not in state and not k.endswith("num_batches_tracked"))
            renamed = dict(state)
        if unexpected or missing:
            raise ValueError(
                f"state dict {path} does not match VGGEncoder(layers={self.layers}, channels={self.channels}): "
                f"missing keys {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                f"unexpected keys {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}."
            )
        for key, value in renamed.items():
            if tuple(value.shape) != tuple(own[key].shape):
                raise ValueError(
                    f"shape mismatch for {key}: file has {tuple(value.shape)}, module has {tuple(own[key].shape)} "
                    f"(in_channels={self.in_channels}, channels={self.channels})."
                )
        self.load_state_dict(renamed, strict=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: input image, shape ``(batch, in_channels, *spatial)``; each spatial size should be divisible by
                ``2 ** len(layers)`` (32 for VGG16).

        Returns:
            ``(batch, out_channels)`` if ``pool_output`` else ``(batch, out_channels, *spatial / 2 ** len(layers))``.
        """
        x = self.features(x)
        if self.pool_output:
            x = torch.flatten(self.pool(x), 1)
        return x
