"""This rank's share of the data under torchrun: samplers and ordinary loaders re-built on them.

* :func:`make_sampler` (training: one seeded permutation per pass, split by rank) and :func:`set_sampler_epoch`;
* :func:`make_eval_sampler` / :class:`ShardSampler` (evaluation: every sample scored once over all ranks);
* :func:`shard_loader`: a benchmark's ordinary loaders re-built on those samplers.

``env`` is a :class:`~libmtl_repmtl.training.dist_env.DistEnv`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from torch.utils.data import DataLoader, DistributedSampler, IterableDataset, RandomSampler, Sampler

from libmtl_repmtl.training.dist_env import DistEnv


def make_sampler(dataset: Any, env: DistEnv, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False) -> DistributedSampler:
    """Training sampler: rank ``r`` of ``W`` gets every ``W``-th index of one seeded permutation per epoch.

    The order depends only on ``(seed, epoch)`` (call :func:`set_sampler_epoch` every epoch), which also makes
    it resumable. Shards have equal length: ``drop_last=False`` repeats a few samples to pad, ``True`` drops
    the tail. Use it in a ``DataLoader(sampler=...)`` with ``shuffle=False`` and ``drop_last=True`` (equal batch
    counts on every rank, which DDP needs). Works with ``world_size = 1`` too.
    """
    if len(dataset) == 0:
        raise ValueError("the dataset is empty: no sample to train on (check the split's list/folder)")
    return DistributedSampler(dataset, num_replicas=env.world_size, rank=env.rank, shuffle=shuffle, seed=seed,
                              drop_last=drop_last)


class ShardSampler(Sampler[int]):
    """Evaluation sampler: rank ``r`` gets indices ``r, r + W, r + 2W, ...`` in order, nothing repeated or
    dropped (shards may differ by one), so reduced metrics equal the single-process ones."""

    def __init__(self, length: int, rank: int, world_size: int) -> None:
        self.length, self.rank, self.world_size = int(length), int(rank), int(world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return max(0, math.ceil((self.length - self.rank) / self.world_size))


def make_eval_sampler(dataset: Any, env: DistEnv) -> ShardSampler:
    """The :class:`ShardSampler` of ``dataset`` for this rank (use with ``shuffle=False``, ``drop_last=False``)."""
    return ShardSampler(len(dataset), env.rank, env.world_size)


def set_sampler_epoch(loaders: Any, epoch: int) -> None:
    """Call ``set_epoch(epoch)`` on the sampler of a ``DataLoader`` or of every loader in a dict/list."""
    if isinstance(loaders, Mapping):
        items = list(loaders.values())
    else:
        items = list(loaders) if isinstance(loaders, Sequence) else [loaders]
    for loader in items:
        sampler = getattr(loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)


def shard_loader(loader: Any, env: DistEnv, *, train: bool, seed: int = 0) -> Any:
    """Re-build an ordinary ``DataLoader`` (or a ``task -> DataLoader`` dict, or ``None``) on this rank's shard.

    Training (``train=True``): :func:`make_sampler` (a ``DistributedSampler``; shuffled when ``loader`` was,
    i.e. its sampler is a ``RandomSampler``; order set by ``seed`` and :func:`set_sampler_epoch`). Evaluation:
    :func:`make_eval_sampler` (every sample scored once over all ranks). Batch size, ``drop_last``, workers,
    ``collate_fn``, ``pin_memory`` and ``worker_init_fn`` are kept. Loaders that already use one of these
    samplers, and everything in a single process, are returned unchanged.

    Raises:
        TypeError: ``loader`` is not a ``DataLoader`` (nor a dict of them, nor ``None``).
        ValueError: an ``IterableDataset`` or a custom ``batch_sampler`` (they cannot be split by index: build
            the loader with ``sampler=make_sampler(dataset, env, ...)`` yourself).
    """
    if loader is None or not env.distributed:
        return loader
    if isinstance(loader, Mapping):
        return {k: shard_loader(v, env, train=train, seed=seed) for k, v in loader.items()}
    if not isinstance(loader, DataLoader):
        raise TypeError(f"shard_loader: expected a torch DataLoader (or a task -> DataLoader dict), got "
                        f"{type(loader).__name__}")
    if isinstance(loader.sampler, (DistributedSampler, ShardSampler)):
        return loader
    if isinstance(loader.dataset, IterableDataset):
        raise ValueError("a DataLoader over an IterableDataset cannot be split across ranks by index: shard the "
                         "stream per rank yourself (env.rank of env.world_size) and pass the per-rank loaders")
    if loader.batch_size is None:
        raise ValueError("a DataLoader with a custom batch_sampler cannot be split across ranks automatically: "
                         "build it with sampler=make_sampler(dataset, env, ...) (training) or "
                         "make_eval_sampler(dataset, env) (evaluation) and batch_size=...")
    if train:
        sampler: Sampler[int] = make_sampler(loader.dataset, env, shuffle=isinstance(loader.sampler, RandomSampler),
                                             seed=seed)
    else:
        sampler = make_eval_sampler(loader.dataset, env)
    workers = int(loader.num_workers)
    return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler, drop_last=loader.drop_last,
                      num_workers=workers, collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
                      timeout=loader.timeout, worker_init_fn=loader.worker_init_fn,
                      multiprocessing_context=loader.multiprocessing_context if workers > 0 else None,
                      prefetch_factor=loader.prefetch_factor if workers > 0 else None,
                      persistent_workers=bool(loader.persistent_workers) and workers > 0)


__all__ = ["ShardSampler", "make_eval_sampler", "make_sampler", "set_sampler_epoch", "shard_loader"]
