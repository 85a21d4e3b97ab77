"""A prediction ensemble of SAQM networks (a deep ensemble)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn

from .saqm import SAQM

__all__ = ["SAQMEnsemble"]


class SAQMEnsemble(nn.Module):
    """
    ``members`` SAQM networks of one architecture whose patch scores are averaged: the image score is the uniform mean
    of the members' image scores (equivalently, the mean over patches of the members' mean patch score).

    A deep ensemble (Lakshminarayanan, Pritzel, Blundell, "Simple and scalable predictive uncertainty estimation using
    deep ensembles", NeurIPS 2017) of independently trained SAQM models, e.g. the seeds of one training recipe: it
    averages the members' predictions, which removes part of their seed-to-seed variance, where averaging their
    weights (:func:`monai_iqad.networks.average_state_dicts`, a model soup) interpolates one model. Scoring costs
    ``members`` SAQM forwards. The weights of member ``k`` are the keys ``members.k.*`` of the state dict
    (:meth:`from_state_dicts` builds one from SAQM state dicts).

    This is an inference model: it has no ``patch_level`` / ``return_features`` outputs, so it is not a drop-in
    network for the domain-adaptation trainer (train the members as SAQM, then ensemble them).
    """

    def __init__(self, members: int = 3, **saqm_kwargs) -> None:
        """
        Args:
            members: number of SAQM members (at least 1). Defaults to 3.
            saqm_kwargs: arguments of every member's :class:`SAQM` (``in_channels``, ``width``, ``patch_size``, ...).

        Raises:
            ValueError: When ``members < 1``, or as :class:`SAQM`.
        """
        super().__init__()
        if members < 1:
            raise ValueError(f"SAQMEnsemble needs at least 1 member, got members={members}.")
        self.members = nn.ModuleList(SAQM(**saqm_kwargs) for _ in range(members))
        first = self.members[0]
        self.in_channels, self.patch_size, self.stride = first.in_channels, first.patch_size, first.stride

    @staticmethod
    def members_of(state: Mapping[str, torch.Tensor]) -> int:
        """Members of the SAQMEnsemble state dict ``state`` (keys ``members.k.*``); 0 for another (e.g. a SAQM's)."""
        return len({str(key).split(".")[1] for key in state if str(key).startswith("members.")})

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor], **saqm_kwargs) -> SAQMEnsemble:
        """The ensemble saved in ``state`` (a SAQMEnsemble state dict): its member count and input channels are read
        from the keys.

        Args:
            state: keys ``members.k.*``.
            saqm_kwargs: as :meth:`__init__` (``width``, ...).

        Raises:
            ValueError: When ``state`` is not a SAQMEnsemble state dict, or does not fit the architecture.
        """
        n = cls.members_of(state)
        if n == 0:
            raise ValueError("not a SAQMEnsemble state dict: expected the keys 'members.0.*', 'members.1.*'...")
        prefixes = [f"members.{k}." for k in range(n)]
        return cls.from_state_dicts(
            [{key[len(p) :]: v for key, v in state.items() if key.startswith(p)} for p in prefixes], **saqm_kwargs
        )

    @classmethod
    def from_state_dicts(cls, states: Sequence[Mapping[str, torch.Tensor]], **saqm_kwargs) -> SAQMEnsemble:
        """An ensemble whose member ``k`` has the SAQM weights ``states[k]``.

        Args:
            states: one SAQM state dict per member (all of the architecture given by ``saqm_kwargs``).
            saqm_kwargs: as :meth:`__init__`; ``in_channels`` defaults to that of ``states[0]``.

        Raises:
            ValueError: When ``states`` is empty, or a state dict does not fit the members' architecture (the message
                names its index).
        """
        if not states:
            raise ValueError("SAQMEnsemble.from_state_dicts: no state dict given.")
        saqm_kwargs.setdefault("in_channels", int(states[0]["attention.query.0.weight"].shape[1]))
        net = cls(members=len(states), **saqm_kwargs)
        for k, (member, state) in enumerate(zip(net.members, states)):
            try:
                member.load_state_dict(state)
            except RuntimeError as e:
                raise ValueError(
                    f"SAQMEnsemble member {k}: the state dict does not fit the SAQM architecture: {e}"
                ) from e
        return net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: images in shape (B, in_channels, H, W), H and W at least ``patch_size``.

        Returns:
            Image scores (B, 1) in [0, 1]: the mean of the members' scores (the mean of :meth:`score_map`).
        """
        return self.score_map(x).mean(dim=(2, 3))

    @torch.jit.export
    def score_map(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: images in shape (B, in_channels, H, W).

        Returns:
            (B, 1, nh, nw) patch scores: the mean of the members' :meth:`SAQM.score_map`; their mean over (nh, nw) is
            ``forward(x)``.
        """
        maps = [m.score_map(x) for m in self.members]
        return torch.stack(maps).mean(dim=0)
