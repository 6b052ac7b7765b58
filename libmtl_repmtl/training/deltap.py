"""Δp, the paper's figure of merit: one formula, and the reading and checking of baseline tables.

For a method m and single-task baseline b, with metric k of task t (value ``M``), and ``σ = 1`` for
lower-is-better metrics (``0`` otherwise)::

    change(t, k)  = (-1)^σ (M_m,tk - M_b,tk) / M_b,tk x 100                 (percent)
    Δp_task       = mean over tasks t of ( mean over the task's metrics k of change(t, k) )
    Δp_metric     = mean over all metrics (t, k) of change(t, k)

The baselines themselves belong to their benchmarks (``libmtl_repmtl.benchmarks.<name>``: the paper's
printed row and its units, :class:`~libmtl_repmtl.benchmarks.base.Baseline`; the published rows,
:class:`~libmtl_repmtl.benchmarks.base.Published`). Units: the metric objects report mIoU, pixAcc, the
within-angle ratios and accuracy as **fractions** (LibMTL's convention), the paper prints percent. Δp is
unit-free per metric (a relative change), so it is the same whichever consistent units are used; only mixing
the two breaks it, and :func:`validate_baseline` refuses percent values for fraction metrics of a benchmark
that declares its units. :func:`resolve_baseline` is the one reader of a run's ``--baseline`` (the spec row, a
file or a mapping).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from libmtl_repmtl.benchmarks import Benchmark, canonical_name, find


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

def _declared(benchmark: str | None) -> Benchmark | None:
    """The registered benchmark ``benchmark`` when it declares a baseline (and so its units), else None."""
    bench = find(benchmark) if benchmark is not None else None
    return bench if bench is not None and bench.baseline is not None else None


def validate_baseline(table: Any, benchmark: str | None = None, source: str = "baseline",
                      metric_names: Mapping[str, Sequence[str]] | None = None) -> dict[str, list[float]]:
    """Check and normalise a baseline table: ``{task: [values...]}`` or ``{task: {metric: value}}``.

    For a registered benchmark that declares a baseline (the paper's four) task names must be the benchmark's,
    each task needs exactly its metrics (a ``{metric: value}`` mapping is put in metric order), and fraction
    metrics (mIoU, pixAcc, within-angle ratios, accuracy) must be fractions (<= 1), not percent. Other
    benchmarks: the same checks of task and metric names against ``metric_names`` (task -> metric names, e.g. a
    run's task dict) when given, else any task names; always non-empty lists of finite non-zero numbers.

    Returns:
        task -> list of float.

    Raises:
        ValueError: what is wrong and how to fix it, naming ``source``.
    """
    bench = _declared(benchmark)
    b = bench.name if bench is not None else None
    if not isinstance(table, Mapping) or not table:
        raise ValueError(f"{source}: expected a non-empty JSON object {{task: [values...]}}, got "
                         f"{type(table).__name__}")
    names = bench.metric_names() if bench is not None else (
        {t: list(ms) for t, ms in metric_names.items()} if metric_names is not None else None)
    percent = bench.baseline.percent if bench is not None and bench.baseline is not None else None
    out: dict[str, list[float]] = {}
    for task, vals in table.items():
        if names is not None and task not in names:
            raise ValueError(f"{source}: unknown task {task!r}{f' for {b}' if b else ''}; tasks are {list(names)}")
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
            raise ValueError(f"{source}: task {task!r} has {len(vals)} values but {b or 'the task'} has "
                             f"{len(names[task])} metrics {names[task]} (in this order)")
        row = []
        for k, v in enumerate(vals):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)) or v == 0:
                raise ValueError(f"{source}: task {task!r} value #{k} ({v!r}) must be a finite non-zero number")
            if percent is not None and percent[task][k] and float(v) > 1.0:
                raise ValueError(f"{source}: task {task!r} metric {names[task][k]!r} = {v} looks like percent; "
                                 "baselines use the metrics' fraction units (divide by 100, e.g. 53.50 -> 0.5350)")
            row.append(float(v))
        out[task] = row
    return out


def _metric_names(task_dict: Mapping[str, Mapping[str, Any]]) -> dict[str, list[str]]:
    return {t: list(d["metrics"]) for t, d in task_dict.items()}


def resolve_baseline(spec: Benchmark, baseline: str | os.PathLike[str] | Mapping[str, Any] | None,
                     task_dict: Mapping[str, Mapping[str, Any]]) -> tuple[dict[str, list[Any]] | None, str | None]:
    """The Δp baseline (task -> values in metric order) and a description of its source.

    ``baseline``: ``"spec"`` (the benchmark's own single-task row, :attr:`~Benchmark.baseline`, in metric
    units; none for benchmarks without one), ``"none"`` /
    ``None`` (no Δp), a JSON file (``{task: {metric: value}}`` or ``{task: [values]}``, metric units; a file
    ``{benchmark: {...}}`` is accepted) or such a mapping. Every key must be a task of the benchmark (tasks this
    run does not train are skipped); the run's tasks are checked by
    :func:`libmtl_repmtl.training.deltap.validate_baseline` against the run's metrics (exact metric names, finite
    non-zero numbers; fractions, not percent, for the paper's benchmarks).

    Raises:
        ValueError: unreadable file, a key that is no task of the benchmark, or values that do not match the
            tasks' metrics (the message names the file, the task and what to fix).
    """
    names = _metric_names(task_dict)
    if baseline is None or (isinstance(baseline, str) and baseline.lower() == "none"):
        return None, None
    if isinstance(baseline, str) and baseline.lower() == "spec":
        if spec.baseline is None:
            return None, None
        raw: Any = spec.baseline.values
        source = f"spec ({spec.name})"
    elif isinstance(baseline, Mapping):
        raw, source = baseline, "mapping"
    else:
        raw, source = _read_baseline_file(Path(os.fspath(baseline)).expanduser())
    if not isinstance(raw, Mapping):
        raise ValueError(f"--baseline {source}: expected a JSON object task -> {{metric: value}}")
    own = canonical_name(spec.name)  # a file {benchmark: {...}, ...} holding several benchmarks: this one's part
    raw = next((v for k, v in raw.items() if isinstance(v, Mapping) and canonical_name(str(k)) == own), raw)
    unknown = [t for t in raw if t not in spec.tasks]
    if unknown:
        raise ValueError(f"--baseline {source}: unknown task(s) {unknown} for {spec.name}; its tasks are "
                         f"{list(spec.tasks)} (a file for several benchmarks: {{benchmark: {{task: ...}}}})")
    table = {t: v for t, v in raw.items() if t in names}  # the benchmark's tasks that this run trains
    if not table:
        if source.startswith("spec"):
            return None, source
        raise ValueError(f"--baseline {source}: no entry for the tasks {list(names)}")
    return validate_baseline(table, spec.name, source=source, metric_names=names), source


def _read_baseline_file(path: Path) -> tuple[Any, str]:
    """The JSON of a ``--baseline`` file and its name (errors name the file and the expected contents)."""
    try:
        return json.loads(path.read_text(encoding="utf-8")), str(path)
    except OSError as exc:
        raise ValueError(f"--baseline {path}: cannot read the file ({exc}); pass a JSON file "
                         "{task: {metric: value}}, 'spec' or 'none'") from None
    except ValueError as exc:
        raise ValueError(f"--baseline {path}: not valid JSON ({exc})") from None


__all__ = ["DeltaP", "delta_p", "partial_delta_p", "relative_changes", "resolve_baseline", "validate_baseline"]
