"""Global CSA negatives across data-parallel ranks.

Distributed objective (documented in ``docs/distributed.md``): every rank ``r`` evaluates

    L_r = sum_t l_t^(r) + lambda_tsr L_tsr^(r) + lambda_csa L_csa^(r)

on its own shard, where, with global negatives, ``L_csa^(r)`` contrasts each local anchor against the
anchors of EVERY other sample of the global batch (all ranks); DistributedDataParallel averages the
parameter gradients, so the step follows the gradient of ``(1/W) sum_r L_r``.

The gather below is differentiable: its backward sums, over ranks, the gradient each rank's objective sends
to every anchor (a reduce-scatter), so the gradient of a remote sample's anchor reaches the rank that owns
it. Shards may have different batch sizes.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, local: Tensor, sizes: list[int], rank: int) -> Tensor:  # type: ignore[override]
        ctx.sizes, ctx.rank = sizes, rank
        longest = max(sizes)
        padded = local.new_zeros((longest, *local.shape[1:]))
        padded[: local.shape[0]] = local
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded.contiguous())
        return torch.cat([p[:n] for p, n in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad)  # sum of every rank's gradient w.r.t. every global row
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start: start + ctx.sizes[ctx.rank]], None, None


def gather_with_grad(local: Tensor) -> tuple[Tensor, int]:
    """All-gather ``local`` ``(B_r, ...)`` from every rank into ``(sum_r B_r, ...)``, differentiably.

    Returns the global tensor and the row offset of this rank's slice. Without an initialised process
    group (or with one process) it returns ``(local, 0)``. Use as the ``gather`` argument of
    :func:`libmtl_repmtl.core.csa.csa_loss` (``RepMTL.repmtl_gather``).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local, 0
    world, rank = dist.get_world_size(), dist.get_rank()
    size = torch.tensor([local.shape[0]], device=local.device)
    sizes_t = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes_t, size)
    sizes = [int(s.item()) for s in sizes_t]
    return _GatherWithGrad.apply(local, sizes, rank), sum(sizes[:rank])


__all__ = ["gather_with_grad"]
