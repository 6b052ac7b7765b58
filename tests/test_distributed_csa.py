"""Global CSA negatives on 2 gloo processes equal the documented objective computed in one process."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from libmtl_repmtl.core.csa import csa_loss
from libmtl_repmtl.core.distributed import gather_with_grad

TAU = 0.2


def _shards():
    g = torch.Generator().manual_seed(0)
    # two ranks, unequal shard sizes, T=3 tasks, C=4, 2x3 positions
    return [torch.randn(3, b, 4, 2, 3, generator=g, dtype=torch.float64) for b in (3, 2)]


def _reference_rank_loss(shards, r):
    """L_csa^(r): local positives, negatives over every other sample of the global batch (C x C formed)."""
    def a_hat(s):  # s: (T, B, C, N) -> (B, C*C) normalised
        anchors = s.flatten(3).mean(-1).permute(1, 2, 0)
        a = (anchors @ anchors.transpose(1, 2)).flatten(1)
        return a / a.norm(dim=1, keepdim=True)

    all_a = torch.cat([a_hat(s) for s in shards])
    offset = sum(s.shape[1] for s in shards[:r])
    s = shards[r].flatten(3)
    m = (s @ s.transpose(2, 3)).flatten(2)
    m = m / m.norm(dim=2, keepdim=True)
    local_a = all_a[offset: offset + s.shape[1]]
    pos = (local_a.unsqueeze(0) * m).sum(-1)
    neg = local_a @ all_a.T
    mask = torch.zeros_like(neg, dtype=torch.bool)
    mask[torch.arange(s.shape[1]), torch.arange(s.shape[1]) + offset] = True
    return (-pos / TAU + torch.logsumexp((neg / TAU).masked_fill(mask, float("-inf")), 1).unsqueeze(0)).mean()


def _worker(rank, world, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        shard = _shards()[rank].clone().requires_grad_()
        loss = csa_loss(shard.flatten(3), TAU, gather=gather_with_grad)
        loss.backward()
        # DDP averages gradients over ranks: the step's gradient of (1/W) sum_r L_r
        torch.save({"loss": loss.detach(), "grad": shard.grad / world}, os.path.join(out_dir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.dist
def test_two_process_global_negatives_match_reference():
    shards = [s.clone().requires_grad_() for s in _shards()]
    objective = sum(_reference_rank_loss([x.reshape(*x.shape[:3], -1) for x in shards], r) for r in range(2)) / 2
    objective.backward()
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(2, os.path.join(tmp, "init"), tmp), nprocs=2, join=True)
        results = [torch.load(os.path.join(tmp, f"{r}.pt")) for r in range(2)]
    for r in range(2):
        ref_loss = _reference_rank_loss([x.detach().reshape(*x.shape[:3], -1) for x in shards], r)
        assert results[r]["loss"].item() == pytest.approx(ref_loss.item(), rel=1e-10)
        torch.testing.assert_close(results[r]["grad"], shards[r].grad, rtol=1e-9, atol=1e-12)


def test_gather_without_process_group_is_identity():
    x = torch.randn(3, 2)
    out, offset = gather_with_grad(x)
    assert out is x and offset == 0
