"""MKCNet task network, its export wrapper and the vanilla diagnosis baseline."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
from monai.networks.layers.factories import Pool

from monai_iqad.networks.blocks.global_attention import GlobalAttentionBlock
from monai_iqad.networks.blocks.meta_knowledge_assistance import MetaKnowledgeAssistanceBlock
from monai_iqad.networks.nets.vgg import VGGEncoder

__all__ = ["MKCNet", "MKCNetInference", "VanillaNet"]


def _mlp_head(in_features: int, out_features: int, dropout: float) -> nn.Sequential:
    """``Linear(in, in) → ReLU → Dropout → Linear(in, out)`` (the dropout is a no-op at p=0, the official setting)."""
    return nn.Sequential(
        nn.Linear(in_features, in_features),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(in_features, out_features),
    )


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if int(value) < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}.")


class MKCNet(nn.Module):
    """
    Task network ``M_θ`` of MKCNet (meta-knowledge co-embedding network) for image-quality-aware diagnosis.

    Re-implementation based on: "Che, Chen, Chen, Image Quality-aware Diagnosis via Meta-knowledge Co-embedding,
    CVPR 2023, https://arxiv.org/abs/2303.15038" (official ``model/MKCNet.py: TaskNet``).

    Architecture (sizes for ``width=1``)::

        x → VGG16-BN encoder → GAP (512) ─┬─ G_d → f^d (256) ─────────────┐
                                          ├─ G_ω → f^ω (256) ─ C ─ C(f^ω) ┴─ cat (512) → MLP → diagnosis logits
                                          │              └──────────────────── MLP → auxiliary logits (NUM_M·k)
                                          └─ G_q → f^q (256) ──────────────────── MLP → quality logits

    G is :py:class:`~monai_iqad.networks.blocks.GlobalAttentionBlock` (CBAM → GAP → Linear), C is
    :py:class:`~monai_iqad.networks.blocks.MetaKnowledgeAssistanceBlock` (channel gate). Heads are
    ``Linear(n, n) → ReLU → Linear(n, classes)``. The encoder keeps the official Xavier initialisation; attention
    blocks and heads keep PyTorch's default initialisation, as in the official code. Nothing is detached: the
    diagnosis loss also trains the ``f^ω`` branch.

    ``forward(x, official_meta_forward=True)`` reproduces the official hand-written functional forward used for the
    pseudo-updated weights of the meta step (G: average-pooling branch only; C: raw MLP output, no gate). It is meant
    for ``torch.func.functional_call(net, params, (x,), {"official_meta_forward": True})`` in the trainer; the default
    is the module semantics.

    Args:
        num_diagnosis: number of diagnosis classes ``NUM_T``.
        num_quality: number of quality classes ``NUM_IQ``.
        aux_per_class: auxiliary classes per joint (diagnosis, quality) class, ``k`` (official ``META_LENGTH``).
        in_channels: image channels (3 for fundus, 1 for OCTA/CT/CXR). Defaults to 3.
        width: multiplier of the encoder channels and of ``feature_dim`` (1.0 = paper; e.g. 1/16 for CPU tests).
            Defaults to 1.0.
        feature_dim: size of ``f^d``, ``f^ω``, ``f^q`` before ``width`` scaling. Defaults to 256.
        reduction: reduction ratio of every channel gate. Defaults to 16.
        pool_before_attention: globally average-pool the encoder output before the G blocks (official; CBAM then
            sees a 1×1 map). If False, G is applied to the encoder map, so CBAM's spatial gate is a real spatial
            attention. Defaults to True.
        dropout: dropout probability inside the three heads (0 = official). Defaults to 0.0.
        encoder: optional replacement encoder; it must expose ``out_channels`` and return ``(B, C)`` or
            ``(B, C, H, W)``. Defaults to None (VGG16-BN built from ``in_channels``/``width``).

    Raises:
        ValueError: When a count is not positive, when ``dropout`` is outside ``[0, 1)``, when ``encoder`` lacks
            ``out_channels``, or when a channel gate would have no hidden unit (``channels // reduction == 0``).
    """

    def __init__(
        self,
        num_diagnosis: int,
        num_quality: int,
        aux_per_class: int,
        in_channels: int = 3,
        width: float = 1.0,
        feature_dim: int = 256,
        reduction: int = 16,
        pool_before_attention: bool = True,
        dropout: float = 0.0,
        encoder: nn.Module | None = None,
    ) -> None:
        super().__init__()
        _check_positive(
            num_diagnosis=num_diagnosis, num_quality=num_quality, aux_per_class=aux_per_class, feature_dim=feature_dim
        )
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        self.num_diagnosis = int(num_diagnosis)
        self.num_quality = int(num_quality)
        self.aux_per_class = int(aux_per_class)
        self.pool_before_attention = pool_before_attention

        if encoder is None:
            encoder = VGGEncoder(2, in_channels, width=width, pool_output=pool_before_attention)
        enc_channels = getattr(encoder, "out_channels", None)
        if not isinstance(enc_channels, int):
            raise ValueError("encoder must expose an integer attribute `out_channels`.")
        self.encoder = encoder
        self.pool = Pool[Pool.ADAPTIVEAVG, 2](1)
        feat = max(1, int(round(feature_dim * width)))
        self.feature_dim = feat

        self.attention_diagnosis = GlobalAttentionBlock(enc_channels, feat, reduction)
        self.attention_auxiliary = GlobalAttentionBlock(enc_channels, feat, reduction)
        self.attention_quality = GlobalAttentionBlock(enc_channels, feat, reduction)
        self.assistance = MetaKnowledgeAssistanceBlock(feat, reduction)
        self.diagnosis_head = _mlp_head(2 * feat, self.num_diagnosis, dropout)
        self.auxiliary_head = _mlp_head(feat, self.aux_classes, dropout)
        self.quality_head = _mlp_head(feat, self.num_quality, dropout)

    @property
    def aux_classes(self) -> int:
        """Number of auxiliary classes ``num_diagnosis * num_quality * aux_per_class``."""
        return self.num_diagnosis * self.num_quality * self.aux_per_class

    def forward(self, x: torch.Tensor, official_meta_forward: bool = False) -> dict[str, torch.Tensor]:
        """
        Args:
            x: ``(batch, in_channels, H, W)`` images (256×256 in the paper; sides divisible by 32).
            official_meta_forward: use the official functional-path quirks of G and C (meta step only).

        Returns:
            dict of logits: ``diagnosis`` ``(batch, num_diagnosis)``, ``quality`` ``(batch, num_quality)``,
            ``auxiliary`` ``(batch, num_diagnosis * num_quality * aux_per_class)``.
        """
        features = self.encoder(x)
        if self.pool_before_attention and features.ndim > 2:
            features = torch.flatten(self.pool(features), 1)
        f_d = self.attention_diagnosis(features, official_meta_forward)
        f_w = self.attention_auxiliary(features, official_meta_forward)
        f_q = self.attention_quality(features, official_meta_forward)
        f_d_star = torch.cat((f_d, self.assistance(f_w, official_meta_forward)), dim=1)
        return {
            "diagnosis": self.diagnosis_head(f_d_star),
            "quality": self.quality_head(f_q),
            "auxiliary": self.auxiliary_head(f_w),
        }


class MKCNetInference(nn.Module):
    """
    Export/inference wrapper of a dict-returning network (:py:class:`MKCNet`, :py:class:`VanillaNet`): returns one
    tensor, the per-head softmax probabilities (or logits) of the requested heads, concatenated in order. Works with
    ``torch.jit.trace`` and ``torch.jit.script``.

    Args:
        net: network returning a dict of logits.
        outputs: heads to return, in order. Defaults to ``("diagnosis", "quality")``, giving
            ``(B, num_diagnosis + num_quality)``.
        softmax: apply a softmax to each head. Defaults to True.

    ``load_state_dict`` accepts both this wrapper's state dict and the bare network's (the ``models/model.pt`` that
    training writes), so bundles and MONAI Label load trained weights into the wrapper directly.

    Raises:
        ValueError: When ``outputs`` is empty.
    """

    def __init__(self, net: nn.Module, outputs: Sequence[str] = ("diagnosis", "quality"), softmax: bool = True) -> None:
        super().__init__()
        if isinstance(outputs, str):
            outputs = (outputs,)
        if len(outputs) == 0:
            raise ValueError("outputs must name at least one head.")
        self.net = net
        self.outputs = [str(o) for o in outputs]
        self.softmax = softmax
        self._register_load_state_dict_pre_hook(self._accept_unwrapped_state_dict)

    @staticmethod
    def _accept_unwrapped_state_dict(state_dict: dict, prefix: str, *args: Any) -> None:
        """Let ``load_state_dict`` take the wrapped network's own state dict (``models/model.pt`` as saved by
        training) as well as the wrapper's: keys without the ``net.`` prefix get it."""
        inner = prefix + "net."
        for key in [k for k in state_dict if k.startswith(prefix) and not k.startswith(inner)]:
            state_dict[inner + key[len(prefix) :]] = state_dict.pop(key)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: ``(batch, in_channels, H, W)`` images.

        Returns:
            ``(batch, sum of the requested heads' classes)`` probabilities (each head's block sums to 1).
        """
        out: dict[str, torch.Tensor] = self.net(x)
        heads: list[torch.Tensor] = []
        for name in self.outputs:
            logits = out[name]
            heads.append(torch.softmax(logits, dim=1) if self.softmax else logits)
        return torch.cat(heads, dim=1)


class VanillaNet(nn.Module):
    """
    Vanilla diagnosis baseline of MKCNet: VGG16-BN encoder with global average pooling and an MLP head
    ``Linear(512, 512) → ReLU → Linear(512, num_diagnosis)``.

    Re-implementation based on: "Che, Chen, Chen, Image Quality-aware Diagnosis via Meta-knowledge Co-embedding,
    CVPR 2023, https://arxiv.org/abs/2303.15038" (official ``model/models.py: VanillaNet``).

    The forward returns ``{"diagnosis": logits}`` (a dict, like :py:class:`MKCNet`) so that trainers, evaluators and
    :py:class:`MKCNetInference` treat both networks the same way.

    Args:
        num_diagnosis: number of diagnosis classes.
        in_channels: image channels. Defaults to 3.
        width: channel multiplier of the encoder and of the hidden layer (1.0 = paper). Defaults to 1.0.
        dropout: dropout probability before the last layer (0 = official). Defaults to 0.0.

    Raises:
        ValueError: When ``num_diagnosis`` is not positive or ``dropout`` is outside ``[0, 1)``.
    """

    def __init__(self, num_diagnosis: int, in_channels: int = 3, width: float = 1.0, dropout: float = 0.0) -> None:
        super().__init__()
        _check_positive(num_diagnosis=num_diagnosis)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        self.num_diagnosis = int(num_diagnosis)
        self.encoder = VGGEncoder(2, in_channels, width=width, pool_output=True)
        self.diagnosis_head = _mlp_head(self.encoder.out_channels, self.num_diagnosis, dropout)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """
        Args:
            x: ``(batch, in_channels, H, W)`` images.

        Returns:
            ``{"diagnosis": (batch, num_diagnosis) logits}``.
        """
        return {"diagnosis": self.diagnosis_head(self.encoder(x))}
