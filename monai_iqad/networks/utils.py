"""Network utilities."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn

__all__ = ["average_state_dicts", "frozen_copy", "load_with_added_input_channels"]


def load_with_added_input_channels(network: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """
    Warm-start ``network`` from the weights of the same architecture built with fewer input channels (e.g. SAQM
    with modality planes appended, from a plain 3-channel SAQM): every weight whose shape differs from the
    network's only by a smaller dim 1 (a convolution's input channels) is copied into the first channels and the
    added channels get **zero** weights, so the warm-started network computes exactly what the old one did while
    the added inputs start without effect. Everything else is loaded strictly.

    Args:
        network: the network with the added input channels; modified in place.
        state_dict: the old weights (a ``{"model": state_dict}`` checkpoint is unwrapped).

    Returns:
        ``network``.

    Raises:
        RuntimeError: when a weight differs in any other way, or keys are missing or unexpected (PyTorch's strict
            loading message).
    """
    if "model" in state_dict and isinstance(state_dict["model"], Mapping):
        state_dict = state_dict["model"]
    target = network.state_dict()
    padded: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new = target.get(key)
        if (
            new is not None
            and value.ndim >= 2
            and value.ndim == new.ndim
            and value.shape[1] < new.shape[1]
            and value.shape[0] == new.shape[0]
            and value.shape[2:] == new.shape[2:]
        ):
            full = torch.zeros_like(new)
            full[:, : value.shape[1]] = value.to(new.dtype)
            value = full
        padded[key] = value
    network.load_state_dict(padded)
    return network


def frozen_copy(network: nn.Module) -> nn.Module:
    """
    A frozen snapshot of ``network`` as it is now: a deep copy in eval mode with ``requires_grad=False`` on every
    parameter, e.g. the teacher of a distillation that anchors a fine-tune to its starting weights
    (``DomainAdaptationTrainer(teacher=...)``). Later changes to ``network`` do not reach the copy; take it after
    the starting weights are loaded (a loader that runs when the engine starts would come too late).

    Args:
        network: the module to snapshot (a ``DistributedDataParallel``/``DataParallel`` wrapper is unwrapped).
    """
    wrappers = (nn.DataParallel, nn.parallel.DistributedDataParallel)
    module = network.module if isinstance(network, wrappers) else network
    snapshot = copy.deepcopy(module).eval()
    snapshot.requires_grad_(False)
    return snapshot


def average_state_dicts(
    state_dicts: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float] | None = None
) -> dict[str, torch.Tensor]:
    """
    Weighted average of the weights of one architecture: a *model soup* (Wortsman et al., ICML 2022), meaningful for
    fine-tunes of one pretrained model, which stay in one basin of the loss. Floating-point tensors are averaged in
    float64 and cast back to their dtype; any other tensor (e.g. an integer counter) must be equal in every input.

    Args:
        state_dicts: the weights to average (``{"model": state_dict}`` checkpoints are unwrapped).
        weights: one non-negative weight per state dict, normalised to sum 1; default uniform.

    Returns:
        A new state dict with the keys of the first one.

    Raises:
        ValueError: no state dict, a weight count or value that does not fit, keys or shapes that differ, or
            non-float tensors that differ.
    """
    sds = [sd["model"] if "model" in sd and isinstance(sd["model"], Mapping) else sd for sd in state_dicts]
    if not sds:
        raise ValueError("average_state_dicts needs at least one state dict.")
    w = torch.ones(len(sds), dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
    if w.shape != (len(sds),) or not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be {len(sds)} non-negative finite numbers with a positive sum, got {weights}.")
    w = w / w.sum()
    keys = list(sds[0])
    out: dict[str, torch.Tensor] = {}
    for i, sd in enumerate(sds[1:], 1):
        if set(sd) != set(keys):
            diff = sorted(set(sd) ^ set(keys))[:5]
            raise ValueError(f"state dict {i} has other keys than state dict 0 (e.g. {diff}).")
    for key in keys:
        first = sds[0][key]
        for i, sd in enumerate(sds[1:], 1):
            if sd[key].shape != first.shape:
                raise ValueError(f"{key}: shape {tuple(sd[key].shape)} in state dict {i}, {tuple(first.shape)} in 0.")
        if first.is_floating_point():
            acc = sum(wi * sd[key].double() for wi, sd in zip(w.tolist(), sds))
            out[key] = acc.to(first.dtype)
        else:
            if any(not torch.equal(sd[key], first) for sd in sds[1:]):
                raise ValueError(f"{key}: a non-float tensor differs between the state dicts; it cannot be averaged.")
            out[key] = first.clone()
    return out
