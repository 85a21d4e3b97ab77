"""Network utilities."""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
import torch.nn as nn

__all__ = ["frozen_copy", "load_with_added_input_channels"]


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
