"""Distribution strategies of the training loop: one process, or data-parallel ranks under ``torchrun``.

The trainer holds one :class:`Strategy` and asks it, at named points of the loop, for what distribution
changes (everything else is the same code on every rank):

=========================  ====================================  =============================================
point                      :class:`Strategy` (one process)       :class:`DataParallel` (torchrun + DDP)
=========================  ====================================  =============================================
``setup(...)``             the model itself                      checks the weighting and devices, CSA global
                                                                 negatives, returns the :class:`DDPModel`
``shard(loader, train)``   the loader                            ``DistributedSampler`` / ``ShardSampler``
``before_train_iterator``  nothing                               ``sampler.set_epoch(pass index)``
``reduce_split(...)``      nothing                               merge metric/loss accumulators and step
                                                                 diagnostics; after training broadcast rank
                                                                 0's buffers (BatchNorm statistics)
``agree(fn, ...)``         ``fn(...)``                           an error on any rank is raised on every rank
``after_epoch(fn)``        ``fn()``                              a failure on one rank stops every rank
``is_main``                True                                  rank 0: it alone prints and writes files
=========================  ====================================  =============================================

:func:`strategy_for` picks the strategy of a :class:`~libmtl_repmtl.training.distributed.DistEnv`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import torch
from torch import nn

from libmtl_repmtl.core.distributed import gather_with_grad
from libmtl_repmtl.training.checks import BatchDataError
from libmtl_repmtl.training.collectives import all_reduce_metric_state, any_rank, gather_objects, reduce_sums
from libmtl_repmtl.training.distributed import (
    DistEnv,
    broadcast_buffers,
    check_weighting_supports_ddp,
    wrap_model,
)
from libmtl_repmtl.training.recorder import StepStats
from libmtl_repmtl.training.sharding import set_sampler_epoch, shard_loader

T = TypeVar("T")


class Strategy:
    """One process: every point of the loop is the identity (see the module docstring)."""

    def __init__(self, env: DistEnv | None = None) -> None:
        self.env = env if env is not None else DistEnv()

    @property
    def is_main(self) -> bool:
        """This process prints and writes the run's files."""
        return True

    @property
    def distributed(self) -> bool:
        """Several processes in a process group."""
        return False

    def setup(self, model: nn.Module, device: torch.device, weighting: type,
              weight_args: Mapping[str, Any]) -> nn.Module:
        """Prepare ``model`` (on ``device``) for training; returns the module training forwards go through."""
        return model

    def shard(self, loader: Any, *, train: bool) -> Any:
        """This rank's share of ``loader`` (a DataLoader, a task -> DataLoader dict, or ``None``)."""
        return loader

    def before_train_iterator(self, loader: Any, iteration: int) -> None:
        """Before the ``iteration``-th pass over a training loader (also when a resumed run recreates it)."""

    def reduce_split(self, meter: Any, stats: StepStats | None, model: nn.Module) -> None:
        """After the last batch of a split, before the meter scores it (``stats``: the training diagnostics,
        ``None`` for an evaluation split)."""

    def agree(self, fn: Callable[..., T], *args: Any, where: str = "a training step",
              elsewhere: Callable[[], BaseException] | None = None) -> T:
        """``fn(*args)`` inside a training step."""
        return fn(*args)

    def after_epoch(self, epoch: int, fn: Callable[[], None]) -> None:
        """The end of an epoch (``fn``: Δp, best epoch, files)."""
        fn()


class DataParallel(Strategy):
    """Ranks of a ``torchrun`` job with ``DistributedDataParallel`` (``docs/distributed.md``).

    Args:
        env: this rank's :class:`~libmtl_repmtl.training.distributed.DistEnv` (a process group is up).
        sync_bn: convert BatchNorm layers to ``SyncBatchNorm`` (CUDA).
        sampler_seed: seed of the training ``DistributedSampler`` (the run's seed, the same on every rank).
    """

    def __init__(self, env: DistEnv, *, sync_bn: bool = False, sampler_seed: int = 0) -> None:
        super().__init__(env)
        self.sync_bn = bool(sync_bn)
        self.sampler_seed = int(sampler_seed)

    @property
    def is_main(self) -> bool:
        return self.env.is_main

    @property
    def distributed(self) -> bool:
        return True

    def setup(self, model: nn.Module, device: torch.device, weighting: type,
              weight_args: Mapping[str, Any]) -> nn.Module:
        """Check the weighting (:func:`check_weighting_supports_ddp`) and the device, let RepMTL draw CSA
        negatives from the global batch when ``RepMTL_global_negatives`` is set, and wrap the model.

        Raises:
            ValueError: a weighting DDP cannot synchronise, or this rank's device is not the trainer's.
        """
        if torch.device(self.env.device) != device:
            raise ValueError(f"the trainer runs on {device} but this rank's device is {self.env.device}: pass "
                             "device=dist_env.device")
        check_weighting_supports_ddp(weighting)
        if weight_args.get("RepMTL_global_negatives"):
            model.repmtl_gather = gather_with_grad
        return wrap_model(model, self.env, sync_bn=self.sync_bn)

    def shard(self, loader: Any, *, train: bool) -> Any:
        return shard_loader(loader, self.env, train=train, seed=self.sampler_seed)

    def before_train_iterator(self, loader: Any, iteration: int) -> None:
        set_sampler_epoch(loader, iteration)

    def reduce_split(self, meter: Any, stats: StepStats | None, model: nn.Module) -> None:
        all_reduce_metric_state(meter, self.env)
        if stats is not None:
            stats.sums = reduce_sums(stats.sums, self.env)
            stats.counts = reduce_sums(stats.counts, self.env)
            broadcast_buffers(model, self.env)

    def agree(self, fn: Callable[..., T], *args: Any, where: str = "a training step",
              elsewhere: Callable[[], BaseException] | None = None) -> T:
        """``fn(*args)``; an exception on any rank is raised on every rank (the failing rank's own; on the
        others ``elsewhere()``, by default a :class:`~libmtl_repmtl.training.checks.BatchDataError` saying so)
        instead of leaving the others waiting in a collective."""
        error: BaseException | None = None
        out: Any = None
        try:
            out = fn(*args)
        except Exception as exc:  # noqa: BLE001 - re-raised below, after every rank has agreed
            error = exc
        if any_rank(error is not None, self.env):
            if error is not None:
                raise error
            if elsewhere is not None:
                raise elsewhere()
            raise BatchDataError(f"a training batch failed on another rank at {where}; every rank stops. That "
                                 "rank's error names the file, task or value.")
        return out

    def after_epoch(self, epoch: int, fn: Callable[[], None]) -> None:
        """``fn()`` (rank 0 writes); then every rank learns whether any rank failed, and all stop together."""
        error: Exception | None = None
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - shared with the other ranks, then re-raised
            error = exc
        messages = gather_objects(None if error is None else f"{type(error).__name__}: {error}", self.env)
        if error is not None:
            raise error
        failed = [f"rank {r}: {m}" for r, m in enumerate(messages) if m]
        if failed:
            raise RuntimeError(f"epoch {epoch} failed on another rank ({'; '.join(failed)}); every rank stops")


def strategy_for(env: DistEnv | None, *, sync_bn: bool = False, sampler_seed: int = 0) -> Strategy:
    """:class:`DataParallel` for a rank of a job with a process group, else :class:`Strategy`.

    Raises:
        ValueError: ``sync_bn`` in a single process.
    """
    if env is not None and env.distributed:
        return DataParallel(env, sync_bn=sync_bn, sampler_seed=sampler_seed)
    if sync_bn:
        raise ValueError("--sync_bn needs several processes (torchrun --nproc_per_node N, N > 1)")
    return Strategy(env)


__all__ = ["DataParallel", "Strategy", "strategy_for"]
