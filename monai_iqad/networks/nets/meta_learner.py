"""MKCNet meta learner M_φ, the joint-encoding mask and a numerically stable masked softmax."""

from __future__ import annotations

import torch
import torch.nn as nn

from monai_iqad.networks.nets.vgg import VGGEncoder

__all__ = ["MetaLearner", "joint_encoding_mask", "masked_softmax"]


def joint_encoding_mask(
    num_diagnosis: int,
    num_quality: int,
    k: int,
    eps: float = 1e-8,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """
    Joint-encoding mask of MKCNet: row ``M`` selects the ``k`` auxiliary classes of the joint label ``M``.

    The joint label is quality-major, ``M = quality * num_diagnosis + diagnosis`` (``NUM_M = num_diagnosis *
    num_quality`` rows). Row ``i`` is 1 on columns ``[i*k, (i+1)*k)`` and ``eps`` elsewhere (the official 1e-8, which
    lets a tiny probability leak out of the block; ``eps=0`` gives a hard mask).

    Args:
        num_diagnosis: number of diagnosis classes ``NUM_T``.
        num_quality: number of quality classes ``NUM_IQ``.
        k: auxiliary classes per joint class (official ``META_LENGTH``).
        eps: value outside the block. Defaults to 1e-8.
        device: device of the mask. Defaults to None (the default device).
        dtype: dtype of the mask. Defaults to None (the default dtype).

    Returns:
        ``(NUM_M, NUM_M * k)`` mask.

    Raises:
        ValueError: When a count is not positive or ``eps`` is outside ``[0, 1]``.
    """
    for name, value in (("num_diagnosis", num_diagnosis), ("num_quality", num_quality), ("k", k)):
        if int(value) < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}.")
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"eps must be in [0, 1], got {eps}.")
    num_joint = num_diagnosis * num_quality
    mask = torch.full((num_joint, num_joint * k), float(eps), device=device, dtype=dtype)
    block = torch.eye(num_joint, device=device, dtype=torch.bool).repeat_interleave(k, dim=1)
    return mask.masked_fill(block, 1.0)


def masked_softmax(logits: torch.Tensor, mask_rows: torch.Tensor) -> torch.Tensor:
    """
    Numerically stable masked softmax ``y_j = exp(z_j) m_j / sum_l exp(z_l) m_l``, computed as
    ``softmax(z + log m)`` (log-space, with max-subtraction), so logits of 1e4 do not overflow. Entries with
    ``m_j = 0`` get probability exactly 0. The official ``exp(z) * m / sum(exp(z) * m)`` overflows for large logits.

    The computation runs in at least float32 (float64 stays float64) and the result is cast back to
    ``logits.dtype``.

    Args:
        logits: ``(B, K)`` logits.
        mask_rows: ``(B, K)`` (or broadcastable) non-negative mask, e.g. ``joint_encoding_mask(...)[joint_label]``.

    Returns:
        ``(B, K)`` probabilities, each row summing to 1 (NaN for an all-zero mask row).
    """
    dtype = torch.promote_types(logits.dtype, torch.float32)
    log_mask = torch.log(mask_rows.to(device=logits.device, dtype=dtype))
    return torch.softmax(logits.to(dtype) + log_mask, dim=-1).to(logits.dtype)


def _check_labels(labels: torch.Tensor, num_classes: int, name: str) -> None:
    if labels.ndim != 1:
        raise ValueError(f"{name} labels must have shape (batch,), got {tuple(labels.shape)}.")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(f"{name} labels must be integers, got dtype {labels.dtype}.")
    if labels.numel():
        low, high = int(labels.min()), int(labels.max())
        bad = low if low < 0 else high
        if low < 0 or high >= num_classes:
            raise ValueError(f"{name} label {bad} is out of range [0, {num_classes - 1}].")


class MetaLearner(nn.Module):
    """
    Meta learner ``M_φ`` of MKCNet: generates the soft auxiliary label ``y_ω`` of each training sample.

    Re-implementation based on: "Che, Chen, Chen, Image Quality-aware Diagnosis via Meta-knowledge Co-embedding,
    CVPR 2023, https://arxiv.org/abs/2303.15038" (official ``model/MKCNet.py: MetaLearner``; the design comes from
    MAXL, "Liu, Davison, Johns, Self-Supervised Generalisation with Meta Auxiliary Learning, NeurIPS 2019").

    Own VGG16-BN encoder with global average pooling, then ``Linear(C, C) → ReLU → Linear(C, NUM_M * k)``, then the
    masked softmax of the joint-encoding mask row of each sample's joint label
    ``M = quality * num_diagnosis + diagnosis``. The mask is built on the labels' device (the official code built it
    on the CPU and indexed it with CUDA labels) and the softmax is the stable log-space form.
    Used only during training.

    Args:
        num_diagnosis: number of diagnosis classes ``NUM_T``.
        num_quality: number of quality classes ``NUM_IQ``.
        k: auxiliary classes per joint class (official ``META_LENGTH``).
        in_channels: image channels. Defaults to 3.
        width: channel multiplier of the encoder (1.0 = paper). Defaults to 1.0.
        eps: mask value outside the sample's block. Defaults to 1e-8 (official).

    Raises:
        ValueError: When a count is not positive.
    """

    def __init__(
        self,
        num_diagnosis: int,
        num_quality: int,
        k: int,
        in_channels: int = 3,
        width: float = 1.0,
        eps: float = 1e-8,
    ) -> None:
        super().__init__()
        for name, value in (("num_diagnosis", num_diagnosis), ("num_quality", num_quality), ("k", k)):
            if int(value) < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}.")
        self.num_diagnosis = int(num_diagnosis)
        self.num_quality = int(num_quality)
        self.k = int(k)
        self.eps = float(eps)
        self.encoder = VGGEncoder(spatial_dims=2, in_channels=in_channels, width=width, pool_output=True)
        features = self.encoder.out_channels
        self.head = nn.Sequential(
            nn.Linear(features, features), nn.ReLU(inplace=True), nn.Linear(features, self.aux_classes)
        )

    @property
    def num_joint(self) -> int:
        """Number of joint (diagnosis, quality) classes ``NUM_M``."""
        return self.num_diagnosis * self.num_quality

    @property
    def aux_classes(self) -> int:
        """Size of ``y_ω``: ``num_diagnosis * num_quality * k``."""
        return self.num_joint * self.k

    def joint_label(self, diagnosis: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
        """
        Validate the labels and return ``quality * num_diagnosis + diagnosis``.

        Raises:
            ValueError: When a label is not a 1-d integer tensor or is out of range (the message names the value).
        """
        _check_labels(diagnosis, self.num_diagnosis, "diagnosis")
        _check_labels(quality, self.num_quality, "quality")
        if diagnosis.shape != quality.shape:
            raise ValueError(
                f"diagnosis and quality shapes differ: {tuple(diagnosis.shape)} vs {tuple(quality.shape)}."
            )
        return quality.long() * self.num_diagnosis + diagnosis.long()

    def forward(self, x: torch.Tensor, diagnosis: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: ``(batch, in_channels, H, W)`` images.
            diagnosis: ``(batch,)`` diagnosis labels in ``[0, num_diagnosis)``.
            quality: ``(batch,)`` quality labels in ``[0, num_quality)``.

        Returns:
            ``y_ω``, ``(batch, num_diagnosis * num_quality * k)`` probabilities; row ``b`` puts all but
            ``~eps``-sized mass on the ``k`` columns of its joint label.

        Raises:
            ValueError: When a label is out of range.
        """
        joint = self.joint_label(diagnosis, quality)
        logits = self.head(self.encoder(x))
        mask = joint_encoding_mask(
            self.num_diagnosis,
            self.num_quality,
            self.k,
            self.eps,
            device=joint.device,
            dtype=torch.promote_types(logits.dtype, torch.float32),
        )
        return masked_softmax(logits, mask[joint].to(logits.device))
