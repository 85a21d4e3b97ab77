"""Forward-mode (JVP) pass that reuses the activations of an earlier forward at the same parameters."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.pooling import _MaxPoolNd

__all__ = ["TangentReplay"]

#: leaf layers whose tangent :class:`TangentReplay` computes from recorded activations
REPLAYABLE = (_ConvNd, _BatchNorm, nn.ReLU, _MaxPoolNd)
_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


def _leaves(module: nn.Module) -> list[nn.Module]:
    """The leaf layers of nested plain ``nn.Sequential`` containers, in call order."""
    out: list[nn.Module] = []
    for child in module.children():
        out += _leaves(child) if type(child) is nn.Sequential else [child]
    return out


def _replayable(module: nn.Module) -> bool:
    leaves = _leaves(module) if type(module) is nn.Sequential else []
    supported = all(isinstance(m, REPLAYABLE) and not getattr(m, "return_indices", False) for m in leaves)
    return bool(leaves) and supported and any(isinstance(m, _ConvNd) for m in leaves)


def _batch_stats(bn: _BatchNorm) -> bool:
    """True when ``bn``'s forward normalises with the batch statistics (as ``F.batch_norm`` decides)."""
    return bn.training or bn.running_mean is None


@dataclass
class _Record:
    """Activations of one call of a replayable sequence: every convolution's output (the input of the layer after
    it), every max pooling's indices and the sequence's output, with their version counters."""

    conv_outputs: list[torch.Tensor] = field(default_factory=list)
    pool_indices: list[_PoolIndices] = field(default_factory=list)
    output: torch.Tensor | None = None
    versions: list[int] = field(default_factory=list)

    def tensors(self) -> list[torch.Tensor]:
        pools = [p.compact for p in self.pool_indices]
        return [*self.conv_outputs, *pools, *([] if self.output is None else [self.output])]

    def intact(self) -> bool:
        """No recorded tensor was modified in place after the forward (e.g. by an in-place ReLU on a conv output)."""
        return [t._version for t in self.tensors()] == self.versions


class TangentReplay:
    """
    Jacobian-vector products ``J u`` of a network at parameters θ without recomputing its primal forward at θ.

    ``with replay.record(): out = network(x)`` (any forward at θ, e.g. the one whose graph gives ``∇_θ ℓ``) keeps,
    for every *replayable sequence* of ``network`` — a plain (nested) ``nn.Sequential`` of convolutions, batch norms
    in batch-statistics mode, ReLUs and max poolings, such as a VGG encoder — each convolution's output and each max
    pooling's argmax (the values are those the forward computed; the argmax is stored as the position inside its
    pooling window, ``uint8``: 1/8 of PyTorch's ``int64`` indices). A later forward-mode pass
    ``with fwAD.dual_level(), replay.replay(): functional_call(network, {θ or duals of θ with tangents u}, (x,))`` at
    the *same* θ and input then computes, inside each recorded sequence, only the tangents::

        conv:  ẏ = conv(ẋ, W) + conv(x, Ẇ) + ḃ
        BN:    ẏ = γ σ⁻¹ (ẋ - mean(ẋ) - x̂ mean(x̂ ẋ)) + γ̇ x̂ + β̇   (the BN backward kernel: J is symmetric)
        ReLU:  ẏ = ẋ ⊙ [y > 0]        max pool: ẏ = ẋ[argmax]

    with the primal activations read from the record (batch-norm outputs and ReLUs are recomputed elementwise from
    the stored convolution outputs, which costs no convolution), and hands the sequence's recorded output, dual with
    its tangent, to the rest of the network, which runs as a normal forward-mode pass. Per sequence this saves the
    primal convolutions, batch-norm statistics and max poolings of the pass: one forward of FLOPs for a VGG encoder.

    The ``recompute_layers`` leading leaf layers of each sequence are not recorded: the replay recomputes their
    primal on the same tangent-only path (a convolution's output ``conv(x, W) + b`` next to its tangent, the batch
    norm and ReLU elementwise, a max pooling's argmax by pooling), so the rest of the pass is unchanged. The default,
    1, recomputes a VGG encoder's first convolution: its input is the image (1-3 channels), so it costs ~2 % of a
    forward's FLOPs, yet its output is one of the two largest activations the record would keep alive between the
    two passes.

    The result equals the forward-mode pass through the network up to floating-point rounding. Nothing is recorded
    for a sequence whose batch norms use running statistics or that runs under autocast (its activations would not
    be the full-precision ones of the replay); a sequence whose record is missing or was modified in place afterwards
    is recomputed (exact, no saving). Records are consumed by
    the replay (first in, first out per sequence) and dropped by :meth:`clear` and by the next :meth:`record`.

    Args:
        network: the network (not DDP-wrapped).
        recompute_layers: leading leaf layers of every replayable sequence that the replay recomputes instead of
            reading from the record. Defaults to 1.

    Raises:
        ValueError: When ``recompute_layers`` is negative.
    """

    def __init__(self, network: nn.Module, recompute_layers: int = 1) -> None:
        if recompute_layers < 0:
            raise ValueError(f"recompute_layers must be non-negative, got {recompute_layers}.")
        self.recompute_layers = int(recompute_layers)
        self.sequences: list[nn.Sequential] = []
        stack = [network]
        while stack:  # top-most replayable sequences, in module order
            module = stack.pop(0)
            if _replayable(module):
                self.sequences.append(module)  # type: ignore[arg-type]
            else:
                stack = list(module.children()) + stack
        self._leaves = {id(s): _leaves(s) for s in self.sequences}
        self._records: dict[int, list[_Record]] = {}

    def clear(self) -> None:
        """Drop every record (frees the activations it holds)."""
        self._records.clear()

    @contextlib.contextmanager
    def _patched(self, forward: str) -> Iterator[None]:
        """Route every replayable sequence's ``forward`` to ``self.<forward>`` for the duration of the block."""
        method = getattr(self, forward)
        for seq in self.sequences:
            seq.forward = lambda x, _seq=seq: method(_seq, x)  # type: ignore[method-assign]
        try:
            yield
        finally:
            for seq in self.sequences:
                del seq.forward

    def record(self) -> contextlib.AbstractContextManager:
        """Context: forwards inside it record the activations of the replayable sequences (earlier records are
        dropped first, so a replay never reads a record of another batch)."""
        self.clear()
        return self._patched("_record_forward")

    def replay(self) -> contextlib.AbstractContextManager:
        """Context (inside ``fwAD.dual_level()``): forwards inside it take the tangents from the records."""
        return self._patched("_replay_forward")

    # ------------------------------------------------------------------------------------------------------------
    def _record_forward(self, seq: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        """The sequence's forward (same calls and results), keeping what the replay needs."""
        leaves = self._leaves[id(seq)]
        running_stats = not all(_batch_stats(m) for m in leaves if isinstance(m, _BatchNorm))
        device_type = x.device.type
        autocast = torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)
        if running_stats or autocast:
            return nn.Sequential.forward(seq, x)  # nothing recorded: the replay recomputes this sequence
        record = _Record()
        for i, m in enumerate(leaves):
            keep = i >= self.recompute_layers
            if isinstance(m, _MaxPoolNd) and keep:
                pool, in_shape = _MAX_POOL[x.ndim - 2], x.shape[2:]
                x, indices = pool(x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, return_indices=True)
                record.pool_indices.append(_compact_indices(m, indices, in_shape))
                continue
            x = m(x)
            if isinstance(m, _ConvNd) and keep:
                record.conv_outputs.append(x.detach())  # same storage and version counter, no graph
        record.output = x.detach()
        record.versions = [t._version for t in record.tensors()]
        self._records.setdefault(id(seq), []).append(record)
        return x

    def _replay_forward(self, seq: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        """Tangent-only pass through the sequence from its record (or the normal forward without a usable one)."""
        records = self._records.get(id(seq), [])
        record = records.pop(0) if records else None
        if record is None or not record.intact():
            return nn.Sequential.forward(seq, x)
        primal, tangent = fwAD.unpack_dual(x)
        convs, pools = iter(record.conv_outputs), iter(record.pool_indices)
        fresh = False  # whether ``primal`` is a temporary of this pass (not a recorded or caller's tensor)
        for i, m in enumerate(self._leaves[id(seq)]):
            kept = i >= self.recompute_layers
            if isinstance(m, _ConvNd):
                if kept:  # the primal output was recorded: only the tangent is computed
                    output = next(convs)
                    tangent = _conv_tangent(m, primal, tangent, output)
                else:  # recomputed leading convolution (cheap when its input has few channels, e.g. the image)
                    output, tangent = _conv_primal_tangent(m, primal, tangent)
                primal, fresh = output, not kept
            elif isinstance(m, _BatchNorm):
                primal, tangent = _batch_norm_tangent(m, primal, tangent)
                fresh = True
            elif isinstance(m, nn.ReLU):
                primal = primal.relu_() if fresh else torch.relu(primal)
                if tangent is not None:
                    tangent = torch.ops.aten.threshold_backward(tangent, primal, 0)
            else:  # max pooling: the recorded argmax picks both (recomputed in the leading layers)
                if kept:
                    indices = _expand_indices(m, next(pools))
                else:
                    pool = _MAX_POOL[primal.ndim - 2]
                    _, indices = pool(primal, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, True)
                primal, fresh = _gather(primal, indices), True
                if tangent is not None:
                    tangent = _gather(tangent, indices)
        out = record.output
        return out if tangent is None else fwAD.make_dual(out, tangent)


def _pool_geometry(m: _MaxPoolNd, n: int) -> tuple[tuple[int, ...], ...]:
    """Kernel size, stride, padding and dilation of an ``n``-d max pooling, one entry per spatial dimension."""

    def _n(v: int | tuple[int, ...]) -> tuple[int, ...]:
        return tuple(v) if isinstance(v, (tuple, list)) else (int(v),) * n

    return _n(m.kernel_size), _n(m.stride or m.kernel_size), _n(m.padding), _n(m.dilation)


def _window_corners(
    m: _MaxPoolNd, in_shape: Sequence[int], out_shape: Sequence[int], device: torch.device
) -> tuple[torch.Tensor, int]:
    """
    The flat input index of every pooling window's corner, ``Σ_d (o_d stride_d - padding_d) · S_d`` with ``S_d`` the
    flat stride of spatial dimension ``d``, shaped ``(1, 1, *out_shape)``, and the largest offset of an element of a
    window from its corner, ``Σ_d (kernel_d - 1) dilation_d S_d``.
    """
    n = len(in_shape)
    kernel, stride, padding, dilation = _pool_geometry(m, n)
    corners, largest = torch.zeros([1, 1] + [1] * n, dtype=torch.int64, device=device), 0
    for dim, size in enumerate(out_shape):
        flat_stride = math.prod(in_shape[dim + 1 :])
        shape = [1] * (2 + n)
        shape[2 + dim] = size
        origin = torch.arange(size, device=device) * stride[dim] - padding[dim]
        corners = corners + (origin * flat_stride).view(shape)
        largest += (kernel[dim] - 1) * dilation[dim] * flat_stride
    return corners, largest


@dataclass
class _PoolIndices:
    """A max pooling's argmax, stored compactly: its offset from the corner of its pooling window (``uint8`` when
    every offset is below 256, e.g. 2x2 windows on inputs up to 254 wide: 1/8 of the ``int64`` flat indices;
    else ``int16`` or ``int32``)."""

    compact: torch.Tensor
    in_shape: tuple[int, ...]  #: spatial shape of the pooling's input


def _compact_indices(m: _MaxPoolNd, indices: torch.Tensor, in_shape: Sequence[int]) -> _PoolIndices:
    """``indices`` (flat positions in the input plane, ``(B, C, *out)`` int64; left untouched: autograd saves them for
    the backward) as offsets from their windows' corners."""
    corners, largest = _window_corners(m, in_shape, indices.shape[2:], indices.device)
    for dtype in (torch.uint8, torch.int16, torch.int32):
        if largest <= torch.iinfo(dtype).max:
            return _PoolIndices((indices - corners).to(dtype), tuple(in_shape))
    return _PoolIndices(indices, tuple(in_shape))


def _expand_indices(m: _MaxPoolNd, pooled: _PoolIndices) -> torch.Tensor:
    """The flat ``int64`` indices back from :func:`_compact_indices` (exact)."""
    compact = pooled.compact
    corners, _ = _window_corners(m, pooled.in_shape, compact.shape[2:], compact.device)
    return torch.add(corners, compact)  # int64 (type promotion)


def _gather(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """``x[..., indices]`` over the flattened spatial dimensions (a max pooling with known argmax)."""
    return x.flatten(2).gather(2, indices.flatten(2)).view_as(indices)


def _conv_primal_tangent(
    m: _ConvNd, x: torch.Tensor, x_dot: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A recomputed convolution: its output ``conv(x, W) + b`` and tangent."""
    weight = fwAD.unpack_dual(m.weight)[0]
    bias = None if m.bias is None else fwAD.unpack_dual(m.bias)[0]
    output = m._conv_forward(x, weight, bias)
    return output, _conv_tangent(m, x, x_dot, output)


def _conv_tangent(m: _ConvNd, x: torch.Tensor, x_dot: torch.Tensor | None, output: torch.Tensor) -> torch.Tensor | None:
    """``conv(ẋ, W) + conv(x, Ẇ) + ḃ`` (None when nothing has a tangent); ``output`` is the primal ``conv(x, W)``."""
    weight, weight_dot = fwAD.unpack_dual(m.weight)
    bias_dot = None if m.bias is None else fwAD.unpack_dual(m.bias)[1]
    out = None
    if weight_dot is not None:
        out = m._conv_forward(x, weight_dot, bias_dot)
    elif bias_dot is not None:
        out = bias_dot.view([1, -1] + [1] * (x.ndim - 2)).expand_as(output).clone()
    if x_dot is not None:
        through_input = m._conv_forward(x_dot, weight, None)
        out = through_input if out is None else out.add_(through_input)
    return out


def _batch_norm_tangent(
    m: _BatchNorm, x: torch.Tensor, x_dot: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Batch-statistics batch norm: its output (recomputed from the input ``x``) and its tangent."""
    weight, weight_dot = (None, None) if m.weight is None else fwAD.unpack_dual(m.weight)
    bias, bias_dot = (None, None) if m.bias is None else fwAD.unpack_dual(m.bias)
    x_hat, mean, invstd = torch.ops.aten.native_batch_norm(x, None, None, None, None, True, 0.0, m.eps)
    shape = [1, -1] + [1] * (x.ndim - 2)
    if weight is not None and bias is not None:
        out = torch.addcmul(bias.view(shape), x_hat, weight.view(shape))
    elif weight is not None:
        out = x_hat * weight.view(shape)
    else:
        out = x_hat if bias is None else x_hat + bias.view(shape)
    tangent = None
    if x_dot is not None:  # train-mode BN has a symmetric Jacobian: its JVP is the backward kernel applied to ẋ
        tangent = torch.ops.aten.native_batch_norm_backward(
            x_dot, x, weight, None, None, mean, invstd, True, m.eps, [True, False, False]
        )[0]
    if weight_dot is not None:
        tangent = x_hat * weight_dot.view(shape) if tangent is None else tangent.addcmul_(x_hat, weight_dot.view(shape))
    if bias_dot is not None:
        tangent = bias_dot.view(shape).expand_as(x).clone() if tangent is None else tangent.add_(bias_dot.view(shape))
    return out, tangent
