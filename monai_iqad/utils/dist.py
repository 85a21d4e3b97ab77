"""Thin helpers over ``torch.distributed`` that are no-ops in a single process."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist

__all__ = [
    "is_dist",
    "get_rank",
    "get_world_size",
    "is_rank0",
    "unwrap_module",
    "all_reduce_gradients",
    "average_buffers",
    "broadcast_parameters",
]


def is_dist() -> bool:
    """True when ``torch.distributed`` is initialised with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """Rank of this process (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    """Number of processes (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_rank0() -> bool:
    """True on the process that logs and saves."""
    return get_rank() == 0


def unwrap_module(module: torch.nn.Module) -> torch.nn.Module:
    """The module inside a ``DistributedDataParallel``/``DataParallel`` wrapper, else ``module`` itself."""
    if isinstance(module, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
        return module.module
    return module


def all_reduce_gradients(parameters: Iterable[torch.nn.Parameter]) -> None:
    """Average ``.grad`` of ``parameters`` over all processes (used where DDP cannot be, e.g. second-order steps).

    A parameter without a gradient on this rank contributes zeros, so every rank issues the same collectives.
    """
    if not is_dist():
        return
    world = get_world_size()
    for p in parameters:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
        p.grad.div_(world)


def average_buffers(module: torch.nn.Module) -> None:
    """Average the floating-point buffers of ``module`` over all processes (e.g. BatchNorm running statistics of a
    network that is not wrapped in DDP) and take rank 0's integer buffers, so every rank holds the same state."""
    if not is_dist():
        return
    world = get_world_size()
    with torch.no_grad():
        for b in module.buffers():
            if b.is_floating_point():
                dist.all_reduce(b, op=dist.ReduceOp.SUM)
                b.div_(world)
            else:
                dist.broadcast(b, src=0)


def broadcast_parameters(module: torch.nn.Module, src: int = 0) -> None:
    """Copy parameters and buffers of ``module`` from rank ``src`` to all ranks."""
    if not is_dist():
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=src)
