"""LibMTL task dicts of the four benchmarks.

:func:`task_dict` returns LibMTL's format, one entry per task::

    {'segmentation': {'metrics': ['mIoU', 'pixAcc'], 'metrics_fn': SegMetric(13), 'loss_fn': SegLoss(),
                      'weight': [1, 1]},
     ...}

``weight`` is LibMTL's higher-is-better flag per metric (1 = higher is better, 0 = lower is better). Every
call builds fresh loss/metric objects (they hold per-epoch state). Metric units: see
:mod:`libmtl_repmtl.tasks.metrics` (fractions for mIoU / pixAcc / the within-angle ratios / accuracy).

=============  ==========================================================================================
benchmark      tasks (metrics)
=============  ==========================================================================================
nyuv2          segmentation (mIoU, pixAcc), depth (abs_err, rel_err),
               normal (mean, median, <11.25, <22.5, <30)
cityscapes     segmentation (mIoU, pixAcc), depth (abs_err, rel_err)
office-31      amazon, dslr, webcam (Acc each)
office-home    Art, Clipart, Product, Real_World (Acc each)
=============  ==========================================================================================
"""

from __future__ import annotations

import re
from typing import Any

from libmtl_repmtl.tasks.losses import ClsLoss, DepthLoss, NormalLoss, SegLoss
from libmtl_repmtl.tasks.metrics import AccMetric, DepthMetric, NormalMetric, SegMetric

#: Canonical benchmark names.
BENCHMARKS: tuple[str, ...] = ("nyuv2", "cityscapes", "office-31", "office-home")

#: Task -> metric names, per benchmark (score order of the metric classes).
METRIC_NAMES: dict[str, dict[str, list[str]]] = {
    "nyuv2": {"segmentation": ["mIoU", "pixAcc"], "depth": ["abs_err", "rel_err"],
              "normal": ["mean", "median", "<11.25", "<22.5", "<30"]},
    "cityscapes": {"segmentation": ["mIoU", "pixAcc"], "depth": ["abs_err", "rel_err"]},
    "office-31": {d: ["Acc"] for d in ("amazon", "dslr", "webcam")},
    "office-home": {d: ["Acc"] for d in ("Art", "Clipart", "Product", "Real_World")},
}

#: Task -> higher-is-better flags (1 / 0) per metric, per benchmark.
HIGHER_BETTER: dict[str, dict[str, list[int]]] = {
    "nyuv2": {"segmentation": [1, 1], "depth": [0, 0], "normal": [0, 0, 1, 1, 1]},
    "cityscapes": {"segmentation": [1, 1], "depth": [0, 0]},
    "office-31": {d: [1] for d in METRIC_NAMES["office-31"]},
    "office-home": {d: [1] for d in METRIC_NAMES["office-home"]},
}

#: Output channels of each dense task's head, per benchmark (classification: number of classes).
NUM_OUTPUTS: dict[str, dict[str, int]] = {
    "nyuv2": {"segmentation": 13, "depth": 1, "normal": 3},
    "cityscapes": {"segmentation": 7, "depth": 1},
    "office-31": {d: 31 for d in METRIC_NAMES["office-31"]},
    "office-home": {d: 65 for d in METRIC_NAMES["office-home"]},
}


def canonical_benchmark(name: str) -> str:
    """The canonical name of a benchmark (case, ``-`` and ``_`` ignored: ``Office_31`` -> ``office-31``).

    Raises:
        ValueError: unknown benchmark (the message lists the known ones).
    """
    key = re.sub(r"[^a-z0-9]", "", str(name).lower())
    for b in BENCHMARKS:
        if re.sub(r"[^a-z0-9]", "", b) == key:
            return b
    raise ValueError(f"unknown benchmark {name!r}; known: {list(BENCHMARKS)}")


def benchmark_tasks(benchmark: str) -> list[str]:
    """Task names of ``benchmark``, in order."""
    return list(METRIC_NAMES[canonical_benchmark(benchmark)])


def metric_names(benchmark: str) -> dict[str, list[str]]:
    """Task -> metric names of ``benchmark`` (a copy)."""
    return {t: list(v) for t, v in METRIC_NAMES[canonical_benchmark(benchmark)].items()}


def higher_better(benchmark: str) -> dict[str, list[int]]:
    """Task -> higher-is-better flags (1 / 0) of ``benchmark`` (a copy)."""
    return {t: list(v) for t, v in HIGHER_BETTER[canonical_benchmark(benchmark)].items()}


def _entry(metrics: list[str], metric_fn: Any, loss_fn: Any, weight: list[int]) -> dict[str, Any]:
    return {"metrics": list(metrics), "metrics_fn": metric_fn, "loss_fn": loss_fn, "weight": list(weight)}


def task_dict(benchmark: str) -> dict[str, dict[str, Any]]:
    """LibMTL's ``task_dict`` for ``benchmark`` (``nyuv2``, ``cityscapes``, ``office-31``, ``office-home``),
    with fresh loss and metric objects.

    Raises:
        ValueError: unknown benchmark.
    """
    b = canonical_benchmark(benchmark)
    names, hb, outs = METRIC_NAMES[b], HIGHER_BETTER[b], NUM_OUTPUTS[b]
    out: dict[str, dict[str, Any]] = {}
    for task in names:
        if task == "segmentation":
            out[task] = _entry(names[task], SegMetric(outs[task]), SegLoss(), hb[task])
        elif task == "depth":
            out[task] = _entry(names[task], DepthMetric(), DepthLoss(), hb[task])
        elif task == "normal":
            out[task] = _entry(names[task], NormalMetric(), NormalLoss(), hb[task])
        else:
            out[task] = _entry(names[task], AccMetric(), ClsLoss(), hb[task])
    return out


__all__ = ["BENCHMARKS", "HIGHER_BETTER", "METRIC_NAMES", "NUM_OUTPUTS", "benchmark_tasks", "canonical_benchmark",
           "higher_better", "metric_names", "task_dict"]
