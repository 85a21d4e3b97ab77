"""Domain classifier head with a gradient reversal layer, for domain-adversarial training."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.nets import FullyConnectedNet

from monai_iqad.networks.blocks.gradient_reversal import GradientReversal

__all__ = ["DomainClassifier"]


class DomainClassifier(nn.Module):
    """
    Gradient reversal layer followed by an MLP that predicts the domain (source 0, target 1) of a feature vector.

    Re-implementation of the DANN domain classifier based on:
    "Ganin et al., Domain-Adversarial Training of Neural Networks, JMLR 17(59), 2016,
    https://jmlr.org/papers/v17/15-239.html" (the x→1024→1024→1 head of its image experiments), as the "small
    branch" of SAQM: "Tliba et al., Deep-based quality assessment of medical images through domain adaptation,
    ICIP 2022, https://arxiv.org/abs/2210.10533" (sec. 2.2).

    Layout: ``grl`` (:class:`GradientReversal`) → [Linear → ReLU → Dropout] per hidden layer → Linear(1).
    The head's own parameters get the ordinary gradient of the domain loss; only what lies *before* the GRL
    (the feature extractor) receives the reversed one. Outputs are logits, for ``BCEWithLogitsLoss``.
    """

    def __init__(
        self,
        in_features: int,
        hidden_channels: Sequence[int] = (1024, 1024),
        dropout: float | None = 0.5,
        grl_lambda: float = 1.0,
        act: tuple | str = ("relu", {"inplace": True}),
    ) -> None:
        """
        Args:
            in_features: feature size F (C of SAQM, 512 at full width).
            hidden_channels: hidden layer sizes. Defaults to ``(1024, 1024)`` (DANN's deep head);
                ``(256,)`` is a lighter ablation.
            dropout: dropout after each hidden activation. Defaults to 0.5 (DANN). ``None`` or 0 disables it.
            grl_lambda: initial gradient reversal coefficient (the trainer overwrites it every iteration with the
                DANN schedule). Defaults to 1.
            act: hidden activation, any MONAI ``Act`` name. Defaults to ReLU.

        Raises:
            ValueError: When ``in_features`` or a hidden size is not positive, or ``dropout`` is outside [0, 1).
        """
        super().__init__()
        if in_features < 1:
            raise ValueError(f"in_features must be positive, got {in_features}.")
        if any(int(c) < 1 for c in hidden_channels):
            raise ValueError(f"hidden_channels must all be positive, got {tuple(hidden_channels)}.")
        if dropout is not None and not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        self.in_features = in_features
        self.grl = GradientReversal(grl_lambda)
        self.mlp = FullyConnectedNet(
            in_channels=in_features,
            out_channels=1,
            hidden_channels=[int(c) for c in hidden_channels],
            dropout=dropout if dropout else None,
            act=act,
            adn_ordering="AD",
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: features in shape (N, F), or (B, Np, F) for per-patch features (any leading dimensions).

        Returns:
            domain logits in shape (..., 1), i.e. (N, 1) or (B, Np, 1).

        Raises:
            ValueError: When the last dimension of ``x`` is not ``in_features``.
        """
        if x.ndim < 2 or x.shape[-1] != self.in_features:
            raise ValueError(f"DomainClassifier expects (..., {self.in_features}) features, got {tuple(x.shape)}.")
        lead = x.shape[:-1]
        logits = self.mlp(self.grl(x.reshape(-1, self.in_features)))
        return logits.view(*lead, 1)
