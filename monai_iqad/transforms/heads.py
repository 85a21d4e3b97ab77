"""Named heads of a multi-head network output (MKCNet: ``diagnosis``, ``quality``, ``auxiliary``), for postprocessing.

A network with several heads returns a dict of tensors (``MKCNet``) or, for export, one tensor with the heads' channels
concatenated (``MKCNetInference``). :class:`SplitHeadsd` puts each head under its own key, so that MONAI's
``Activationsd``/``AsDiscreted``, the metrics and the writers address the heads by name instead of by index slices::

    Compose([
        SplitHeadsd(keys="pred", heads=["diagnosis", "quality"]),             # -> diagnosis_pred, quality_pred
        Activationsd(keys=["diagnosis_pred", "quality_pred"], softmax=True),
        CopyItemsd(keys=["diagnosis_pred", "quality_pred"], names=["diagnosis_class", "quality_class"]),
        AsDiscreted(keys=["diagnosis_class", "quality_class"], argmax=True),
    ])
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform

__all__ = ["SplitHeads", "SplitHeadsd"]


class SplitHeads(Transform):
    """Split a multi-head network output into ``{head name: tensor}``.

    Args:
        heads: the heads to keep, in order: their names (for a dict output), or ``{name: channels}`` (also splits a
            packed tensor whose channels are the heads' channels concatenated in this order, e.g. the
            ``(num_diagnosis + num_quality,)`` probabilities of ``MKCNetInference``).
        dim: channel dimension of a packed tensor: 0 for a decollated item ``(C, ...)`` (MONAI postprocessing), 1 for
            a batch ``(B, C, ...)``. Defaults to 0.
        allow_missing_heads: leave out the heads a dict output does not have (e.g. the quality head of the
            diagnosis-only ``VanillaNet``) instead of raising. Defaults to False.

    Raises:
        ValueError: when ``heads`` is empty.
    """

    def __init__(
        self, heads: Sequence[str] | Mapping[str, int], dim: int = 0, allow_missing_heads: bool = False
    ) -> None:
        if isinstance(heads, str):
            heads = [heads]
        if len(heads) == 0:
            raise ValueError("heads must name at least one head.")
        self.heads = [str(h) for h in heads]
        self.sizes = [int(heads[h]) for h in heads] if isinstance(heads, Mapping) else None
        self.dim = dim
        self.allow_missing_heads = allow_missing_heads

    def __call__(self, out: Mapping[str, torch.Tensor] | torch.Tensor) -> dict[str, torch.Tensor]:
        """
        Args:
            out: a dict of head tensors, or one tensor with the heads' channels concatenated along ``dim``.

        Returns:
            ``{head: tensor}`` for the requested heads, in order (a packed tensor is split into views).

        Raises:
            KeyError: a requested head is missing from a dict output (and ``allow_missing_heads`` is False).
            ValueError: a packed tensor when the heads' sizes are unknown, or whose channels do not add up.
        """
        if isinstance(out, Mapping):
            missing = [h for h in self.heads if h not in out]
            if missing and not self.allow_missing_heads:
                raise KeyError(f"network output has no head {missing} (heads: {sorted(out)}).")
            return {h: out[h] for h in self.heads if h in out}
        if self.sizes is None:
            raise ValueError(f"a packed tensor needs the heads' sizes ({{name: channels}}), got names {self.heads}.")
        out = torch.as_tensor(out)
        if out.shape[self.dim] != sum(self.sizes):
            raise ValueError(
                f"packed output has {out.shape[self.dim]} channels along dim {self.dim}, heads "
                f"{dict(zip(self.heads, self.sizes))} need {sum(self.sizes)}."
            )
        return dict(zip(self.heads, torch.split(out, self.sizes, dim=self.dim)))


class SplitHeadsd(MapTransform):
    """Dictionary version of :class:`SplitHeads`: each head of ``data[key]`` goes to ``data[head + postfix]``.

    Args:
        keys: keys of the network outputs to split (usually ``"pred"``); they are kept.
        heads: see :class:`SplitHeads`.
        postfix: appended to a head's name to form its key. Defaults to ``"_pred"`` (``diagnosis_pred``...), so that
            a head's key does not collide with the label of the same name (``diagnosis``, ``quality``).
        dim: see :class:`SplitHeads`.
        allow_missing_heads: see :class:`SplitHeads`.
        allow_missing_keys: don't raise if a key is missing.
    """

    def __init__(
        self,
        keys: KeysCollection,
        heads: Sequence[str] | Mapping[str, int],
        postfix: str = "_pred",
        dim: int = 0,
        allow_missing_heads: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.splitter = SplitHeads(heads, dim=dim, allow_missing_heads=allow_missing_heads)
        self.postfix = postfix

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            for head, value in self.splitter(d[key]).items():
                d[f"{head}{self.postfix}"] = value
        return d
