"""Turn trainer outputs into named scalars for MONAI's ``StatsHandler`` / ``TensorBoardStatsHandler``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = ["output_scalars"]


def output_scalars(keys: Sequence[str], prefix: str = "") -> Callable[[Any], dict[str, float]]:
    """Return an ``output_transform`` that picks scalar ``keys`` of the first decollated output item.

    MONAI's stats handlers log every entry of a returned dict, so one handler logs all loss terms, lambda and gamma::

        TensorBoardStatsHandler(output_transform=output_scalars(["loss", "loss_reg", "grl_lambda"], "train/"))

    Keys missing from the output are skipped (e.g. ``loss_dom`` in a target-only run).

    Args:
        keys: output keys to log.
        prefix: prepended to each tag (e.g. ``"train/"``).
    """
    keys = list(keys)

    def _transform(output: Any) -> dict[str, float]:
        item = output[0] if isinstance(output, (list, tuple)) else output
        out = {}
        for k in keys:
            if isinstance(item, dict) and k in item and item[k] is not None:
                v = item[k]
                if isinstance(v, torch.Tensor):
                    if v.numel() != 1:
                        continue
                    v = v.detach().float().item()
                out[f"{prefix}{k}"] = float(v)
        return out

    return _transform
