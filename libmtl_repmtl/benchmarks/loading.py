"""Data-loading pieces every benchmark shares: the loader settings, single-task label subsets, the dataset
root check."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from libmtl_repmtl.benchmarks.base import BenchmarkSetupError, Options

#: The options :func:`make_loader` reads (part of every benchmark's :attr:`~Benchmark.options` that uses it).
LOADER_OPTIONS: dict[str, type] = {"num_workers": int, "pin_memory": bool}


def make_loader(ds: Dataset, batch_size: int, train: bool, opts: Options) -> DataLoader:
    """A DataLoader with the run's settings: training loaders shuffle with a generator seeded by
    ``opts["seed"]`` and drop the last incomplete batch; ``num_workers`` / ``pin_memory`` from ``opts``."""
    gen = torch.Generator().manual_seed(int(opts.get("seed", 0))) if train else None
    workers = int(opts.get("num_workers", 0) or 0)
    return DataLoader(ds, batch_size=int(batch_size), shuffle=train, drop_last=train, generator=gen,
                      num_workers=workers, pin_memory=bool(opts.get("pin_memory", False)),
                      persistent_workers=workers > 0)


class LabelSubset(Dataset):
    """A single-input dataset whose label dicts are restricted to some tasks (single-task runs).

    Items: ``(x, {task: y})`` for the tasks given, from a base dataset yielding ``(x, {task: y})``.
    """

    def __init__(self, base: Any, tasks: Sequence[str]) -> None:
        self.base, self.tasks = base, list(tasks)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> Any:
        x, y = self.base[i]
        return x, {t: y[t] for t in self.tasks}


def need_path(opts: Options, name: str) -> Path:
    """``opts["dataset_path"]`` as an existing folder.

    Raises:
        BenchmarkSetupError: no path given, or not a folder (the message says how to fix it).
    """
    path = opts.get("dataset_path")
    if not path:
        raise BenchmarkSetupError(f"{name}: no dataset path; pass --dataset_path ROOT (the spec's layout) or "
                                  f"generate small data with 'python -m libmtl_repmtl.data.synthetic {name} OUT'")
    root = Path(os.fspath(path)).expanduser()
    if not root.is_dir():
        raise BenchmarkSetupError(f"{name}: dataset path {str(root)!r} is not a folder")
    return root


__all__ = ["LOADER_OPTIONS", "LabelSubset", "make_loader", "need_path"]
