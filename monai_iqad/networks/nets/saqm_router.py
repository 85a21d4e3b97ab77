"""A modality router of SAQM networks: each image is scored by the expert of its modality."""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn

from monai_iqad.transforms.conditioning import SAQM_MODALITIES, modality_index

from .saqm import SAQM
from .saqm_ensemble import SAQMEnsemble

__all__ = ["SAQMRouter"]


def _single_if_one_member(state: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    """A one-member SAQMEnsemble state dict as the plain SAQM state dict it is (prefix ``members.0.`` removed)."""
    if SAQMEnsemble.members_of(state) == 1:
        return {key[len("members.0.") :]: v for key, v in state.items() if key.startswith("members.0.")}
    return state


def _expert_ids(state: Mapping[str, torch.Tensor]) -> list[int]:
    """The expert indices ``k`` of a router state dict's keys ``experts.k.*``, sorted."""
    return sorted({int(str(key).split(".")[1]) for key in state if str(key).startswith("experts.")})


def _expert_layout(state: Mapping[str, torch.Tensor]) -> tuple[int, int]:
    """``(input channels, members)`` of one expert's state dict: an SAQM's (1 member) or an SAQMEnsemble's."""
    members = max(SAQMEnsemble.members_of(state), 1)
    key = "members.0.attention.query.0.weight" if members > 1 else "attention.query.0.weight"
    if key not in state:
        raise ValueError(f"not an SAQM or SAQMEnsemble state dict: no key {key!r}.")
    return int(state[key].shape[1]), members


def _graph_capture() -> bool:
    """Whether a graph without data-dependent branches is being captured: ``torch.jit.trace`` or ``torch.export``
    (both ONNX exporters). Eager and TorchScript run return False."""
    if torch.jit.is_scripting():
        return False
    return torch.jit.is_tracing() or torch.compiler.is_exporting()


class SAQMRouter(nn.Module):
    """
    SAQM experts chosen per image by its modality: the input is a modality-conditioned SAQM input, ``image_channels``
    image channels followed by the ``len(modalities)`` one-hot modality planes of
    :class:`monai_iqad.transforms.ModalityChannels` (all zero: unknown modality). Image ``b`` is scored by expert
    ``routes[modality of b]``, or by expert ``default`` when its modality is unknown or not in ``routes``.

    An expert with ``image_channels + len(modalities)`` input channels (a modality-conditioned SAQM) gets the whole
    input; an expert with at most ``image_channels`` channels gets the first ones of the image part only (e.g. an
    unconditioned SAQM, 3 channels, without the modality planes and contrast-context planes). The route is a buffer of
    the state dict (``route``: expert per modality plane, the last entry for "unknown"), so a saved router scores as it
    was built; the weights of expert ``k`` are the keys ``experts.k.*`` (:meth:`expert_state_dict` extracts them as a
    plain SAQM state dict, e.g. to fine-tune one expert).

    An expert may be a prediction ensemble (:class:`SAQMEnsemble`, ``expert_members[k] > 1``): its score is the mean of
    its members' scores, e.g. the seeds of one recipe for one modality, at the cost of one forward per member for that
    modality's images only. Its weights are the keys ``experts.k.members.j.*``.

    Why (issue 11, ``docs/saqm.md``): the shipped SAQM keeps ultrasound families that every retrained, conditioned
    model lost on the test scanner, while those models gain on radiographs (CR) and MR k-space undersampling; a router
    scores each modality with the model that holds it, at the cost of one expert's forward per image.
    This is an inference model (no ``patch_level`` / ``return_features`` outputs): train the experts as SAQM, then
    route them. It scripts (TorchScript) as is; a traced graph (``torch.onnx.export``, ``use_trace``) runs every
    expert on every image and selects, so that batches without some modality also run.
    """

    def __init__(
        self,
        expert_channels: Sequence[int] = (3, 3 + len(SAQM_MODALITIES)),
        routes: Mapping[str, int] | None = None,
        default: int = 0,
        modalities: Sequence[str] = SAQM_MODALITIES,
        image_channels: int = 3,
        strict: bool = True,
        expert_members: Sequence[int] | None = None,
        **saqm_kwargs,
    ) -> None:
        """
        Args:
            expert_channels: input channels of each expert (one :class:`SAQM` per entry): ``image_channels +
                len(modalities)`` (gets the whole input) or at most ``image_channels`` (gets that many leading image
                channels). Defaults to an unconditioned and a conditioned expert, ``(3, 9)``.
            routes: expert index per modality name (case-insensitive; DICOM codes such as ``DX`` read as in
                :func:`monai_iqad.transforms.conditioning.modality_index`). Modalities not listed, and unknown ones,
                go to ``default``. Defaults to none (every image to ``default``).
            default: expert of unknown and unrouted modalities. Defaults to 0.
            modalities: plane order of the input's modality planes. Defaults to :data:`SAQM_MODALITIES`.
            image_channels: channels before the modality planes (3, or 5 with the contrast-context planes).
            strict: refuse modality planes that are not constant one-hot planes (a wrong input layout). With
                ``False`` each image's modality is the plane of largest mean if that mean exceeds 0.5, else unknown,
                so that any tensor of the right shape runs (the model zoo's ``verify_net_in_out`` feeds uniform noise;
                :class:`~monai_iqad.transforms.ModalityChannels` always writes exact one-hot planes). Defaults to True.
            expert_members: members of each expert (one entry per ``expert_channels`` entry): 1 for a single
                :class:`SAQM`, ``n > 1`` for an :class:`SAQMEnsemble` of ``n`` members. Defaults to 1 for every expert.
            saqm_kwargs: arguments of every expert's :class:`SAQM` (``width``, ``patch_size``, ...).

        Raises:
            ValueError: When there is no expert, an expert's channel count fits neither input form, ``default`` or a
                route is not an expert index, a routed modality is not one of ``modalities``, or ``expert_members``
                does not give a positive count per expert.
        """
        super().__init__()
        if not expert_channels:
            raise ValueError("SAQMRouter needs at least one expert.")
        if not modalities:
            raise ValueError("SAQMRouter needs at least one modality plane.")
        self.modalities = tuple(str(m) for m in modalities)
        self.image_channels = int(image_channels)
        self.in_channels = self.image_channels + len(self.modalities)
        self.strict = bool(strict)
        n = len(expert_channels)
        for k, c in enumerate(expert_channels):
            if not (1 <= int(c) <= self.image_channels or int(c) == self.in_channels):
                raise ValueError(
                    f"SAQMRouter expert {k}: {c} input channels fits neither the whole input ({self.in_channels} = "
                    f"{self.image_channels} image channels + {len(self.modalities)} modality planes) nor at most the "
                    f"{self.image_channels} image channels."
                )
        if not 0 <= default < n:
            raise ValueError(f"SAQMRouter: default expert {default} is not in [0, {n - 1}].")
        table = [int(default)] * (len(self.modalities) + 1)  # the last entry: unknown modality
        for name, k in (routes or {}).items():
            i = modality_index(name, self.modalities)
            if i is None:
                raise ValueError(f"SAQMRouter: routed modality {name!r} is not one of {list(self.modalities)}.")
            if not 0 <= int(k) < n:
                raise ValueError(f"SAQMRouter: modality {name!r} is routed to expert {k}, not in [0, {n - 1}].")
            table[i] = int(k)
        members = [1] * n if expert_members is None else [int(m) for m in expert_members]
        if len(members) != n or min(members) < 1:
            raise ValueError(
                f"SAQMRouter: expert_members {list(expert_members or [])} must give a count >= 1 for each of the {n} "
                "experts."
            )
        self.register_buffer("route", torch.tensor(table, dtype=torch.long))
        self.experts = nn.ModuleList(
            SAQM(in_channels=int(c), **saqm_kwargs)
            if m == 1
            else SAQMEnsemble(members=m, in_channels=int(c), **saqm_kwargs)
            for c, m in zip(expert_channels, members)
        )
        first = self.experts[0]
        self.patch_size, self.stride = first.patch_size, first.stride

    @classmethod
    def from_state_dicts(
        cls, states: Sequence[Mapping[str, torch.Tensor]], routes: Mapping[str, int] | None = None, **kwargs
    ) -> SAQMRouter:
        """A router whose expert ``k`` has the weights ``states[k]``.

        The experts' input channels and members are read from their weights (an :class:`SAQMEnsemble` state dict,
        keys ``members.j.*``, makes an ensemble expert; one of a single member, a plain SAQM); ``image_channels``
        defaults to those of a conditioned expert (more input channels than modality planes) minus
        ``len(modalities)``, else 3.

        Args:
            states: one SAQM or SAQMEnsemble state dict per expert.
            routes: as :meth:`__init__`.
            kwargs: the other arguments of :meth:`__init__` (``default``, ``width``...), except ``expert_channels``.

        Raises:
            ValueError: When ``states`` is empty, or a state dict does not fit its expert (the message names its index).
        """
        if not states:
            raise ValueError("SAQMRouter.from_state_dicts: no state dict given.")
        states = [_single_if_one_member(s) for s in states]
        channels, members = (list(t) for t in zip(*(_expert_layout(s) for s in states)))
        kwargs.setdefault("expert_members", members)
        n_planes = len(kwargs.get("modalities", SAQM_MODALITIES))
        conditioned = [c - n_planes for c in channels if c > n_planes]
        kwargs.setdefault("image_channels", conditioned[0] if conditioned else 3)
        net = cls(expert_channels=channels, routes=routes, **kwargs)
        for k, (expert, state) in enumerate(zip(net.experts, states)):
            try:
                expert.load_state_dict(state)
            except RuntimeError as e:
                raise ValueError(
                    f"SAQMRouter expert {k}: the state dict does not fit its {type(expert).__name__}: {e}"
                ) from e
        return net

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor], **kwargs) -> SAQMRouter:
        """The router saved in ``state`` (a :class:`SAQMRouter` state dict): its experts and route.

        Args:
            state: a router state dict (keys ``route`` and ``experts.k.*``).
            kwargs: the other arguments of :meth:`__init__` (``width``, ``modalities``...).

        Raises:
            ValueError: When ``state`` is not a router state dict, or does not fit the architecture.
        """
        ids = _expert_ids(state)
        if not cls.is_state_dict(state) or ids != list(range(len(ids))):
            raise ValueError("not a SAQMRouter state dict: expected the keys 'route', 'experts.0.*', 'experts.1.*'...")
        net = cls.from_state_dicts([cls.expert_state_dict(state, k) for k in ids], **kwargs)
        route = state["route"]
        if route.shape != net.route.shape or bool(((route < 0) | (route >= len(ids))).any()):
            raise ValueError(
                f"the SAQMRouter state dict's route {route.tolist()} does not fit {len(net.modalities)} modality "
                f"planes (+ unknown) and {len(ids)} experts."
            )
        net.route.copy_(route)
        return net

    @staticmethod
    def is_state_dict(state: object) -> bool:
        """Whether ``state`` is a router state dict (a mapping with ``route`` and ``experts.<k>.*`` keys), as opposed
        to one SAQM's."""
        return isinstance(state, Mapping) and "route" in state and any(str(k).startswith("experts.") for k in state)

    @classmethod
    def architecture_of(cls, state: Mapping[str, torch.Tensor] | str | os.PathLike) -> dict[str, list[int]] | None:
        """The ``expert_channels`` and ``expert_members`` of a saved router, read from its keys and shapes, e.g. to
        build the network of a bundle config for whatever router its ``model.pt`` holds (more experts, an ensemble
        expert) before the weights are loaded.

        Args:
            state: a router state dict, a checkpoint holding one under ``"model"``, or the path of either (loaded with
                ``weights_only=True``).

        Returns:
            ``{"expert_channels": [...], "expert_members": [...]}`` (one entry per expert), or None when ``state`` is
            not a router's (e.g. one SAQM's weights) or the path is not a file: the weights loader that follows reports
            the mismatch or the missing file with its name.
        """
        if isinstance(state, (str, os.PathLike)):
            if not os.path.isfile(state):
                return None
            try:
                state = torch.load(state, map_location="cpu", weights_only=True)
            except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError):
                return None  # a damaged file: the weights loader names it and says what is wrong
        if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):
            state = state["model"]
        if not cls.is_state_dict(state):
            return None
        experts = [_expert_layout(_single_if_one_member(cls.expert_state_dict(state, k))) for k in _expert_ids(state)]
        return {"expert_channels": [c for c, _ in experts], "expert_members": [m for _, m in experts]}

    @staticmethod
    def expert_state_dict(state: Mapping[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
        """The state dict of expert ``k`` in a router's ``state`` (keys ``experts.k.*``, prefix removed): a plain SAQM
        state dict, or an SAQMEnsemble one (keys ``members.j.*``) for an ensemble expert.

        Raises:
            KeyError: When ``state`` has no expert ``k``.
        """
        prefix = f"experts.{k}."
        out = {key[len(prefix) :]: v for key, v in state.items() if key.startswith(prefix)}
        if not out:
            raise KeyError(f"the router state dict has no expert {k} (no key starts with {prefix!r}).")
        return out

    def expert_of(self, modality: str | None) -> int:
        """The expert that scores images of ``modality`` (``None`` or unlisted: the default one)."""
        i = modality_index(modality, self.modalities)
        return int(self.route[len(self.modalities) if i is None else i])

    @torch.jit.export
    def plane_index(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: inputs (B, in_channels, H, W).

        Returns:
            (B,) plane index of each image's modality, ``len(modalities)`` for unknown (all planes 0).

        Raises:
            ValueError: When ``x`` has the wrong shape, or (``strict``) its modality planes are not constant one-hot
                planes.
        """
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"SAQMRouter expects (B, {self.in_channels}, H, W) inputs ({self.image_channels} image channels + "
                f"{len(self.modalities)} modality planes), got shape {list(x.shape)}."
            )
        planes = x[:, self.image_channels :].float()
        flat = planes.flatten(2)
        level = flat.mean(dim=2)  # (B, M)
        if self.strict and not _graph_capture():  # a data-dependent check: a captured graph keeps the routing only
            not_constant = bool(((flat - level[..., None]).abs() > 1e-3).any())
            not_binary = bool(((level - level.round()).abs() > 1e-3).any())
            if not_constant or not_binary or bool((level.round().sum(dim=1) > 1).any()):
                raise ValueError(
                    "SAQMRouter: the modality planes are not constant one-hot planes (0 or 1, at most one 1)."
                )
        value, index = level.max(dim=1)
        return torch.where(value > 0.5, index, torch.full_like(index, len(self.modalities)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: inputs (B, in_channels, H, W), H and W at least ``patch_size``.

        Returns:
            Image scores (B, 1) in [0, 1], each from its modality's expert (the mean of :meth:`score_map`).
        """
        return self.score_map(x).mean(dim=(2, 3))

    @torch.jit.export
    def score_map(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: inputs (B, in_channels, H, W).

        Returns:
            (B, 1, nh, nw) patch scores, each image's from its expert's :meth:`SAQM.score_map`.
        """
        chosen = self.route[self.plane_index(x)]  # (B,) expert per image
        out = torch.empty(0, device=x.device)
        started = False
        for k, expert in enumerate(self.experts):  # (no `continue`: TorchScript unrolls loops over a ModuleList)
            c = expert.in_channels
            if _graph_capture():
                # a traced or exported graph (both ONNX exporters) cannot skip an expert whose sub-batch is empty: every
                # expert scores every image and each image keeps its own expert's map (one forward per expert)
                maps = expert.score_map(x if c == self.in_channels else x[:, :c])
                out = torch.where((chosen == k).view(-1, 1, 1, 1), maps, out) if started else maps
                started = True
            else:
                idx = (chosen == k).nonzero().view(-1)
                if idx.numel() > 0:
                    xk = x.index_select(0, idx)
                    maps = expert.score_map(xk if c == self.in_channels else xk[:, :c])
                    if not started:
                        out = maps.new_zeros([x.shape[0], maps.shape[1], maps.shape[2], maps.shape[3]])
                        started = True
                    out = out.index_copy(0, idx, maps)
        return out
