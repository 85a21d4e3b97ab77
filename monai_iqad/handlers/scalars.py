"""Turn trainer outputs into named scalars for MONAI's ``StatsHandler`` / ``TensorBoardStatsHandler``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.utils import CommonKeys

#: output entries that are data, not scalars to log
_DATA_KEYS = (CommonKeys.IMAGE, CommonKeys.LABEL, CommonKeys.PRED)

__all__ = ["output_scalars"]


def output_scalars(keys: Sequence[str] | None = None, prefix: str = "") -> Callable[[Any], dict[str, float]]:
    """Return an ``output_transform`` that picks scalar ``keys`` of the first decollated output item.

    MONAI's stats handlers log every entry of a returned dict, so one handler logs all loss terms, lambda and gamma::

        TensorBoardStatsHandler(output_transform=output_scalars(["loss", "loss_reg", "grl_lambda"], "train/"))

    Keys missing from the output are skipped (e.g. ``loss_dom`` in a target-only run). With ``keys=None`` every
    floating-point scalar entry is logged (Python floats and one-element floating-point tensors, except
    ``image``/``label``/``pred``; integers such as labels or the stage are not): the trainers put all their loss terms
    in the output, so no key list is needed.

    Args:
        keys: output keys to log; None logs every scalar entry. Defaults to None.
        prefix: prepended to each tag (e.g. ``"train/"``).
    """
    chosen = None if keys is None else list(keys)

    def _scalar(v: Any) -> bool:
        if isinstance(v, torch.Tensor):
            return v.numel() == 1 and v.is_floating_point()
        return isinstance(v, float)  # ints are labels or counters (decollation turns 0-d tensors into numbers)

    def _transform(output: Any) -> dict[str, float]:
        item = output[0] if isinstance(output, (list, tuple)) else output
        out = {}
        if chosen is None:
            names = [k for k, v in item.items() if k not in _DATA_KEYS and _scalar(v)] if isinstance(item, dict) else []
        else:
            names = chosen
        for k in names:
            if isinstance(item, dict) and k in item and item[k] is not None:
                v = item[k]
                if isinstance(v, torch.Tensor):
                    if v.numel() != 1:
                        continue
                    v = v.detach().float().item()
                out[f"{prefix}{k}"] = float(v)
        return out

    return _transform
