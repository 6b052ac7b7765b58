"""Where this process sits in a torchrun job (:class:`DistEnv`); built by
:func:`libmtl_repmtl.training.distributed.init_from_env` and read by the collectives, the shards and the strategy."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job.

    Attributes:
        rank: global rank (0 .. world_size - 1).
        local_rank: rank on this machine (selects the CUDA device).
        world_size: number of processes (1: not distributed).
        device: the device this process trains on.
        backend: ``"nccl"``/``"gloo"`` when a process group is in use, else ``None``.
    """

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process, with an initialised process group."""
        return self.world_size > 1 and dist.is_available() and dist.is_initialized()


__all__ = ["DistEnv"]
