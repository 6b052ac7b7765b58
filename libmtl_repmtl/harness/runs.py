"""Reading a grid's runs: each run's ``results.json`` through the results contract
(:func:`libmtl_repmtl.training.results.read_results`), reduced to what the report needs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from libmtl_repmtl.harness.methods import method_spec
from libmtl_repmtl.harness.plan import RunSpec
from libmtl_repmtl.training.results import ResultsFileError, RunResults, read_results

Records = dict[tuple[str, str], dict[int, "RunRecord"]]  # (benchmark, method) -> seed -> record


@dataclass
class RunRecord:
    """What the summary needs from one run.

    Attributes:
        metrics: task -> metric -> test value at the best epoch (finite values only).
        higher_better: task -> metric -> True when higher is better.
        delta_p_task, delta_p_metric: the trainer's Δp against the benchmark's baseline, if any.
        seconds_per_epoch: mean training seconds per epoch.
        peak_memory_mb: the run's own peak memory in MiB (as the trainer measured it).
        peak_memory_kind: what ``peak_memory_mb`` measures (results.json's ``peak_memory_kind``).
    """

    metrics: dict[str, dict[str, float]]
    higher_better: dict[str, dict[str, bool]]
    delta_p_task: float | None = None
    delta_p_metric: float | None = None
    seconds_per_epoch: float | None = None
    peak_memory_mb: float | None = None
    peak_memory_kind: str = ""


def read_complete(save_path: Path, epochs: int | None = None) -> RunResults | None:
    """The results in ``save_path/results.json`` when it is a valid results file of a finished run (all ``epochs``
    epochs, when given), else None. What "finished" means for the harness (summary, selection, skipping)."""
    try:
        res = read_results(save_path / "results.json")
    except ResultsFileError:
        return None
    return res if res.complete and (epochs is None or res.epochs_done >= epochs) else None


def is_complete(save_path: Path, epochs: int | None = None) -> bool:
    """Whether ``save_path`` holds a finished run (:func:`read_complete`)."""
    return read_complete(save_path, epochs) is not None


def read_run(save_path: Path) -> RunRecord:
    """The :class:`RunRecord` of ``save_path/results.json``.

    Raises:
        ResultsFileError: the file does not follow the results contract (the message names it).
    """
    return record_of(read_results(save_path / "results.json"))


def record_of(res: RunResults) -> RunRecord:
    """The summary's view of one run's results."""
    test = res.test_at_best or {}
    metrics = {t: {m: float(v) for m, v in ms.items() if v is not None and math.isfinite(v)}
               for t, ms in test.items()}
    dp = res.delta_p_best
    return RunRecord(metrics, {t: dict(ms) for t, ms in res.higher_better.items()},
                     dp.task if dp else None, dp.metric if dp else None, res.seconds_per_epoch, res.peak_memory_mb,
                     res.peak_memory_kind)


def _merge_single_task(records: Sequence[RunRecord]) -> RunRecord:
    """Combine one seed's single-task runs into one record (cost: sum of the runs' time per epoch, the largest
    of their peak memories)."""
    metrics: dict[str, dict[str, float]] = {}
    higher: dict[str, dict[str, bool]] = {}
    for r in records:
        metrics.update(r.metrics)
        higher.update(r.higher_better)
    secs = [r.seconds_per_epoch for r in records]
    mems = [r.peak_memory_mb for r in records if r.peak_memory_mb is not None]
    return RunRecord(metrics, higher, None, None,
                     float(sum(s for s in secs if s is not None)) if all(s is not None for s in secs) else None,
                     max(mems) if mems else None, next((r.peak_memory_kind for r in records), ""))


def collect(grid: Sequence[RunSpec]) -> tuple[Records, list[str]]:
    """Read every complete run of the grid: (benchmark, method) -> seed -> record; plus problems found."""
    by_seed: dict[tuple[str, str, int], list[RunRecord]] = {}
    expected: dict[tuple[str, str, int], int] = {}
    problems = []
    for run in grid:
        key = (run.benchmark, run.method, run.seed)
        expected[key] = expected.get(key, 0) + 1
        res = read_complete(run.save_path, run.options.get("epochs"))
        if res is None:
            problems.append(f"{run.label}: no complete results.json")
            continue
        by_seed.setdefault(key, []).append(record_of(res))
    out: Records = {}
    for (b, m, s), recs in by_seed.items():
        if len(recs) != expected[(b, m, s)]:
            continue  # a single-task seed with a missing task
        out.setdefault((b, m), {})[s] = _merge_single_task(recs) if method_spec(m).single_task else recs[0]
    return out, problems


__all__ = ["Records", "RunRecord", "collect", "is_complete", "read_complete", "read_run", "record_of"]
