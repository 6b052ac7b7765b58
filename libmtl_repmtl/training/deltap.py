"""Δp, the paper's figure of merit, and the single-task baselines it is measured against.

For a method m and single-task baseline b, with metric k of task t (value ``M``), and ``σ = 1`` for
lower-is-better metrics (``0`` otherwise)::

    change(t, k)  = (-1)^σ (M_m,tk - M_b,tk) / M_b,tk x 100                 (percent)
    Δp_task       = mean over tasks t of ( mean over the task's metrics k of change(t, k) )
    Δp_metric     = mean over all metrics (t, k) of change(t, k)

Units. The metrics of :mod:`libmtl_repmtl.tasks.metrics` report mIoU, pixAcc, the within-angle ratios and
accuracy as **fractions** (LibMTL's convention); the built-in baselines (:data:`BASELINES`,
:func:`builtin_baseline`) are in those same units: the spec's printed rows (:data:`SPEC_BASELINES_PRINTED`,
percent for those metrics: NYUv2 mIoU 53.50) divided by 100 where the spec prints percent. Angle errors
are in degrees, depth errors as printed. Δp itself is unit-free per metric (a relative change), so it is the
same whichever consistent units are used; only mixing the two breaks it, and :func:`load_baseline` refuses
fraction-metric values above 1 for the known benchmarks for that reason.

Published reference rows (:data:`PUBLISHED_DELTA_P_TASK`: the spec's Δp_task table; :data:`PUBLISHED_METRICS`:
a few per-metric mean rows of the Rep-MTL paper, arXiv 2507.21049, Tables 1, 2, 3 and 5, in the printed
units) let tests and the harness check the definition: Δp computed from a row's *mean* metrics is close to
but not exactly the published value, which is the mean of three runs' Δp.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from libmtl_repmtl.tasks.specs import HIGHER_BETTER, METRIC_NAMES, canonical_benchmark


class DeltaP(NamedTuple):
    """Δp in percent: ``task`` = Δp_task, ``metric`` = Δp_metric."""

    task: float
    metric: float


def relative_changes(results: Mapping[str, Sequence[float]], baseline: Mapping[str, Sequence[float]],
                     higher_better: Mapping[str, Sequence[int | bool]]) -> dict[str, list[float]]:
    """Task -> signed relative change (percent) of each metric, ``(-1)^σ (M - M_b) / M_b x 100``.

    Every task of ``results`` must be in ``baseline`` and ``higher_better`` with as many values.

    Raises:
        ValueError: a task missing from ``baseline`` / ``higher_better``, a length mismatch, a zero or
            non-finite baseline value, a non-finite result.
    """
    if not results:
        raise ValueError("delta_p: no results")
    out: dict[str, list[float]] = {}
    for task, values in results.items():
        if task not in baseline:
            raise ValueError(f"delta_p: task {task!r} has no baseline (baseline tasks: {list(baseline)})")
        if task not in higher_better:
            raise ValueError(f"delta_p: task {task!r} has no higher-is-better flags")
        vals, base, hb = list(values), list(baseline[task]), list(higher_better[task])
        if not (len(vals) == len(base) == len(hb)):
            raise ValueError(f"delta_p: task {task!r} has {len(vals)} results, {len(base)} baseline values and "
                             f"{len(hb)} higher-is-better flags; they must match")
        changes = []
        for k, (v, b, h) in enumerate(zip(vals, base, hb)):
            v, b = float(v), float(b)
            if not math.isfinite(b) or b == 0.0:
                raise ValueError(f"delta_p: task {task!r} metric #{k}: baseline value {b} must be finite and "
                                 "non-zero")
            if not math.isfinite(v):
                raise ValueError(f"delta_p: task {task!r} metric #{k}: result {v} is not finite")
            sign = 1.0 if h else -1.0
            changes.append(sign * (v - b) / b * 100.0)
        out[task] = changes
    return out


def delta_p(results: Mapping[str, Sequence[float]], baseline: Mapping[str, Sequence[float]],
            higher_better: Mapping[str, Sequence[int | bool]]) -> DeltaP:
    """Δp_task and Δp_metric (percent) of ``results`` against ``baseline``, over the tasks of ``results``.

    Args:
        results: task -> metric values (the order of the task dict's ``metrics``).
        baseline: task -> single-task values, same order and units (may hold more tasks than ``results``).
        higher_better: task -> 1/True for higher-is-better metrics, 0/False otherwise.

    Returns:
        :class:`DeltaP` ``(task, metric)``.

    Raises:
        ValueError: see :func:`relative_changes`.
    """
    ch = relative_changes(results, baseline, higher_better)
    per_task = [sum(c) / len(c) for c in ch.values() if c]
    flat = [x for c in ch.values() for x in c]
    if not flat:
        raise ValueError("delta_p: no metric values")
    return DeltaP(task=sum(per_task) / len(per_task), metric=sum(flat) / len(flat))



def partial_delta_p(results: Mapping[str, Sequence[float | None]], baseline: Mapping[str, Sequence[float | None]],
                    higher_better: Mapping[str, Sequence[int | bool]]) -> DeltaP | None:
    """Δp over the metrics that have a usable baseline value, for partial tables (a trainer's epoch record
    against a baseline that lacks some tasks or metrics).

    A metric counts when its baseline value is present, finite and non-zero and its result is present;
    tasks absent from ``baseline`` are skipped. A non-finite result is kept (the Δp is then NaN, not silently
    computed without it). Same formula as :func:`delta_p`, to which it is equal on complete tables.

    Returns:
        :class:`DeltaP`, or None when no metric counts.
    """
    ch: dict[str, list[float]] = {}
    for task, values in results.items():
        base = baseline.get(task)
        if base is None:
            continue
        changes = [(1.0 if h else -1.0) * (float(v) - float(b)) / float(b) * 100.0
                   for v, b, h in zip(values, base, higher_better[task])
                   if b is not None and math.isfinite(float(b)) and float(b) != 0.0 and v is not None]
        if changes:
            ch[task] = changes
    if not ch:
        return None
    flat = [x for c in ch.values() for x in c]
    return DeltaP(task=sum(sum(c) / len(c) for c in ch.values()) / len(ch), metric=sum(flat) / len(flat))

#: The spec's single-task rows, exactly as printed (percent for mIoU / pixAcc / within-angle / accuracy).
SPEC_BASELINES_PRINTED: dict[str, dict[str, list[float]]] = {
    "nyuv2": {"segmentation": [53.50, 75.39], "depth": [0.3926, 0.1605],
              "normal": [21.99, 15.16, 39.04, 65.00, 75.16]},
    "cityscapes": {"segmentation": [69.06, 91.54], "depth": [0.01282, 43.53]},
    "office-31": {"amazon": [86.61], "dslr": [95.63], "webcam": [96.85]},
    "office-home": {"Art": [65.59], "Clipart": [79.60], "Product": [90.47], "Real_World": [80.00]},
}

#: Which printed values are percent (converted to fractions in :data:`BASELINES`), per task and metric.
PERCENT_METRICS: dict[str, dict[str, list[bool]]] = {
    "nyuv2": {"segmentation": [True, True], "depth": [False, False],
              "normal": [False, False, True, True, True]},
    "cityscapes": {"segmentation": [True, True], "depth": [False, False]},
    "office-31": {d: [True] for d in METRIC_NAMES["office-31"]},
    "office-home": {d: [True] for d in METRIC_NAMES["office-home"]},
}


def printed_to_metric_units(benchmark: str, row: Mapping[str, Sequence[float]]) -> dict[str, list[float]]:
    """A row in the paper's printed units (percent) converted to the metric units (fractions)."""
    b = canonical_benchmark(benchmark)
    return {t: [v / 100.0 if pct else float(v) for v, pct in zip(vals, PERCENT_METRICS[b][t])]
            for t, vals in row.items()}


#: The spec's single-task baselines in the metric units of :mod:`libmtl_repmtl.tasks.metrics` (fractions).
BASELINES: dict[str, dict[str, list[float]]] = {
    b: printed_to_metric_units(b, row) for b, row in SPEC_BASELINES_PRINTED.items()}

#: The spec's published Δp_task rows (Rep-MTL paper, mean of 3 runs), benchmark -> method -> percent.
PUBLISHED_DELTA_P_TASK: dict[str, dict[str, float]] = {
    "nyuv2": {"EW": -1.78, "UW": -1.52, "DWA": -1.71, "GLS": 0.30, "RLW": -1.10, "MGDA": -0.64, "GradNorm": -1.24,
              "PCGrad": -1.57, "GradDrop": -1.85, "GradVac": -1.75, "IMTL": -0.57, "CAGrad": -0.27,
              "Nash-MTL": -1.01, "Aligned-MTL": -0.98, "FairGrad": -0.47, "DB-MTL": 1.15, "RepMTL": 1.70},
    "cityscapes": {"EW": -2.05, "UW": -2.45, "DWA": -2.24, "GLS": -0.39, "RLW": -1.91, "MGDA": -0.19,
                   "GradNorm": -1.55, "PCGrad": -2.36, "GradDrop": -2.02, "GradVac": -2.45, "IMTL": -0.32,
                   "CAGrad": -0.87, "Nash-MTL": -1.11, "DB-MTL": 0.20, "RepMTL": 0.62},
    "office-31": {"EW": -0.61, "UW": -0.56, "DWA": -0.70, "MGDA": -0.27, "PCGrad": -0.68, "CAGrad": -1.14,
                  "Nash-MTL": 0.24, "DB-MTL": 1.05, "RepMTL": 1.31},
    "office-home": {"EW": -0.92, "UW": -0.98, "DWA": -1.26, "MGDA": -1.61, "PCGrad": -1.04, "CAGrad": -1.50,
                    "Nash-MTL": -0.08, "DB-MTL": 0.17, "RepMTL": 0.41},
}

#: Published Δp_metric (NYUv2 only), method -> percent (Rep-MTL paper, Table 1).
PUBLISHED_DELTA_P_METRIC: dict[str, dict[str, float]] = {
    "nyuv2": {"EW": -3.85, "DB-MTL": 0.56, "RepMTL": 0.95},
}

#: Published mean metrics of some rows (Rep-MTL paper, arXiv 2507.21049: Table 1 NYUv2, Table 2 Cityscapes,
#: Table 3 Office-Home, Table 5 Office-31), in the printed units (percent like :data:`SPEC_BASELINES_PRINTED`).
PUBLISHED_METRICS: dict[str, dict[str, dict[str, list[float]]]] = {
    "nyuv2": {
        "EW": {"segmentation": [53.93, 75.53], "depth": [0.3825, 0.1577],
               "normal": [23.57, 17.01, 35.04, 60.99, 72.05]},
        "DB-MTL": {"segmentation": [53.92, 75.60], "depth": [0.3768, 0.1557],
                   "normal": [21.97, 15.37, 38.43, 64.81, 75.24]},
        "RepMTL": {"segmentation": [54.59, 76.04], "depth": [0.3750, 0.1542],
                   "normal": [21.91, 15.28, 38.37, 64.72, 75.05]},
    },
    "cityscapes": {
        "EW": {"segmentation": [68.93, 91.58], "depth": [0.01315, 45.90]},
        "DB-MTL": {"segmentation": [69.17, 91.56], "depth": [0.01280, 43.46]},
        "RepMTL": {"segmentation": [69.72, 91.85], "depth": [0.01270, 43.42]},
    },
    "office-31": {
        "EW": {"amazon": [83.53], "dslr": [97.27], "webcam": [96.85]},
        "DB-MTL": {"amazon": [85.12], "dslr": [98.63], "webcam": [98.51]},
        "RepMTL": {"amazon": [85.93], "dslr": [98.54], "webcam": [98.67]},
    },
    "office-home": {
        "EW": {"Art": [65.34], "Clipart": [78.04], "Product": [89.80], "Real_World": [79.50]},
        "DB-MTL": {"Art": [67.42], "Clipart": [77.89], "Product": [90.43], "Real_World": [80.07]},
        "RepMTL": {"Art": [67.40], "Clipart": [78.75], "Product": [90.37], "Real_World": [80.04]},
    },
}


def builtin_baseline(benchmark: str) -> dict[str, list[float]]:
    """The spec's single-task baseline of ``benchmark`` in metric units (fractions), task -> values.

    Raises:
        ValueError: unknown benchmark (none built in).
    """
    b = canonical_benchmark(benchmark)
    return {t: list(v) for t, v in BASELINES[b].items()}


def _known(benchmark: str | None) -> str | None:
    if benchmark is None:
        return None
    try:
        return canonical_benchmark(benchmark)
    except ValueError:
        return None


def validate_baseline(table: Any, benchmark: str | None = None, source: str = "baseline") -> dict[str, list[float]]:
    """Check and normalise a baseline table: ``{task: [values...]}`` or ``{task: {metric: value}}``.

    For a known benchmark (``nyuv2``, ``cityscapes``, ``office-31``, ``office-home``) task names must be the
    benchmark's, each task needs exactly its metrics (a ``{metric: value}`` mapping is put in metric order),
    and fraction metrics (mIoU, pixAcc, within-angle ratios, accuracy) must be fractions (<= 1), not percent.
    Other benchmarks: any task names, non-empty lists of finite non-zero numbers.

    Returns:
        task -> list of float.

    Raises:
        ValueError: what is wrong and how to fix it, naming ``source``.
    """
    b = _known(benchmark)
    if not isinstance(table, Mapping) or not table:
        raise ValueError(f"{source}: expected a non-empty JSON object {{task: [values...]}}, got "
                         f"{type(table).__name__}")
    names = METRIC_NAMES.get(b) if b else None
    out: dict[str, list[float]] = {}
    for task, vals in table.items():
        if names is not None and task not in names:
            raise ValueError(f"{source}: unknown task {task!r} for {b}; tasks are {list(names)}")
        if isinstance(vals, Mapping):
            if names is None:
                raise ValueError(f"{source}: task {task!r}: give a list of values in metric order "
                                 "(metric names are only known for the built-in benchmarks)")
            unknown = [m for m in vals if m not in names[task]]
            missing = [m for m in names[task] if m not in vals]
            if unknown or missing:
                raise ValueError(f"{source}: task {task!r}: metrics must be exactly {names[task]} "
                                 f"(unknown {unknown}, missing {missing})")
            vals = [vals[m] for m in names[task]]
        if not isinstance(vals, (list, tuple)) or not vals:
            raise ValueError(f"{source}: task {task!r}: expected a non-empty list of numbers, got {vals!r}")
        if names is not None and len(vals) != len(names[task]):
            raise ValueError(f"{source}: task {task!r} has {len(vals)} values but {b} has {len(names[task])} "
                             f"metrics {names[task]} (in this order)")
        row = []
        for k, v in enumerate(vals):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)) or v == 0:
                raise ValueError(f"{source}: task {task!r} value #{k} ({v!r}) must be a finite non-zero number")
            if b is not None and PERCENT_METRICS[b][task][k] and float(v) > 1.0:
                raise ValueError(f"{source}: task {task!r} metric {names[task][k]!r} = {v} looks like percent; "
                                 "baselines use the metrics' fraction units (divide by 100, e.g. 53.50 -> 0.5350)")
            row.append(float(v))
        out[task] = row
    return out


def load_baseline(path: str | os.PathLike[str], benchmark: str | None = None) -> dict[str, list[float]]:
    """Read a user baseline JSON file (``{task: [values...]}`` or ``{task: {metric: value}}``, metric units;
    a file ``{benchmark: {...}}`` holding several benchmarks is accepted too) and validate it with
    :func:`validate_baseline`.

    Raises:
        ValueError: unreadable file, invalid JSON, or an invalid table (the message names the file).
    """
    p = Path(os.fspath(path)).expanduser()
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"{p}: cannot read the baseline file ({exc.strerror or exc}); pass an existing JSON "
                         "file {task: [values...]}") from None
    except ValueError as exc:
        raise ValueError(f"{p}: not valid JSON ({exc}); expected {{task: [values...]}}") from None
    if isinstance(raw, Mapping) and benchmark is not None:
        for key, val in raw.items():
            if isinstance(val, Mapping) and _known(str(key)) is not None and _known(str(key)) == _known(benchmark):
                raw = val
                break
            if isinstance(val, Mapping) and str(key) == benchmark:
                raw = val
                break
    return validate_baseline(raw, benchmark, source=str(p))


__all__ = ["BASELINES", "DeltaP", "HIGHER_BETTER", "PERCENT_METRICS", "PUBLISHED_DELTA_P_METRIC",
           "PUBLISHED_DELTA_P_TASK", "PUBLISHED_METRICS", "SPEC_BASELINES_PRINTED", "builtin_baseline",
           "delta_p", "load_baseline", "partial_delta_p", "printed_to_metric_units", "relative_changes",
           "validate_baseline"]
