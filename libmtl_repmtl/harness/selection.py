"""Scoring a grid on the validation splits and choosing a Rep-MTL setting by the pre-registered rule
(docs/method.md, "Choosing the defaults").

Score of a run: the best validation Δp_task over its epochs, against the benchmark's single-task (STL)
validation scores of the same grid (each STL run's validation scores at its best epoch, mean over the grid's
seeds). A method's score on a benchmark is the mean over seeds, its spread the standard deviation over seeds.
The test splits are never read here.

Rule (:func:`choose`), over the Rep-MTL settings of the grid (the methods run as the ``RepMTL`` weighting):

1. eligible: both lambdas > 0;
2. rank every setting on each benchmark by score (1 = best; equal scores share the better rank); the best
   eligible setting has the lowest mean rank over the benchmarks (ties: the higher mean score);
3. tie band: every eligible setting whose score is, on every benchmark, at least the best's score minus the
   best's spread there;
4. chosen: the tied setting closest to the paper's numbers (:func:`paper_distance`), then the lower mean rank.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from libmtl_repmtl.core.config import RepMTLConfig
from libmtl_repmtl.core.presets import REPMTL_WEIGHTING, parse_method
from libmtl_repmtl.harness.methods import STL
from libmtl_repmtl.harness.plan import RunSpec
from libmtl_repmtl.harness.runs import read_complete
from libmtl_repmtl.training.deltap import partial_delta_p
from libmtl_repmtl.training.results import RunResults, Scores

#: The paper's numbers, the reference of :func:`paper_distance`.
PAPER_LAMBDA, PAPER_TAU = 0.9, 0.1


@dataclass(frozen=True)
class Score:
    """Mean and standard deviation (over seeds; 0 with one seed) of a method's validation Δp_task on one
    benchmark, from ``n`` seeds."""

    mean: float
    std: float
    n: int


@dataclass(frozen=True)
class Choice:
    """The rule's outcome.

    Attributes:
        chosen: the chosen setting's method label.
        best: the eligible setting with the lowest mean rank.
        tied: the settings in the tie band of ``best`` (``best`` included), in rule order.
        mean_rank: method -> mean rank over the benchmarks (every Rep-MTL setting of the grid).
        order: the eligible settings, best first (mean rank, then mean score).
    """

    chosen: str
    best: str
    tied: tuple[str, ...]
    mean_rank: dict[str, float]
    order: tuple[str, ...]


def repmtl_config(method: str) -> RepMTLConfig | None:
    """The Rep-MTL config a grid method runs, or None for another method (EW, STL, ...)."""
    if method == STL:
        return None
    spec = parse_method(method)
    return spec.config if spec.weighting == REPMTL_WEIGHTING else None


def paper_distance(config: RepMTLConfig) -> float:
    """``|log10(lambda_tsr / 0.9)| + |log10(lambda_csa / 0.9)| + |log10(tau / 0.1)| + (1 if infonce)``;
    infinite when a lambda is 0."""
    if config.lambda_tsr <= 0 or config.lambda_csa <= 0:
        return math.inf
    return (abs(math.log10(config.lambda_tsr / PAPER_LAMBDA)) + abs(math.log10(config.lambda_csa / PAPER_LAMBDA))
            + abs(math.log10(config.tau / PAPER_TAU)) + (1.0 if config.csa_form == "infonce" else 0.0))


def _val(record_val: Scores | None, tasks: Sequence[str], metric_names: Mapping[str, Sequence[str]]
         ) -> dict[str, list[float | None]] | None:
    if record_val is None:
        return None
    return {t: [record_val.get(t, {}).get(m) for m in metric_names[t]] for t in tasks}


def _read(run: RunSpec) -> RunResults | None:
    return read_complete(run.save_path, run.options.get("epochs"))


def stl_val_baseline(grid: Sequence[RunSpec], benchmark: str) -> dict[str, list[float]] | None:
    """Task -> validation scores (the task's metric order) of the benchmark's STL runs at their best epoch,
    mean over the grid's seeds; None without complete STL runs with a val split."""
    per_task: dict[str, list[list[float]]] = {}
    for run in grid:
        if run.benchmark != benchmark or run.method != STL or run.task is None:
            continue
        res = _read(run)
        rec = res.best_record() if res else None
        vals = _val(rec.val if rec else None, [run.task], res.metric_names) if res else None
        if vals is None or any(v is None for v in vals[run.task]):
            continue
        per_task.setdefault(run.task, []).append([float(v) for v in vals[run.task] if v is not None])
    if not per_task:
        return None
    return {t: list(np.mean(np.asarray(v), axis=0)) for t, v in per_task.items()}


def run_val_score(res: RunResults, baseline: Mapping[str, Sequence[float]]) -> float | None:
    """The best validation Δp_task over the run's epochs against ``baseline``; None without val records."""
    higher = {t: [res.higher_better[t][m] for m in res.metric_names[t]] for t in res.tasks}
    best = None
    for rec in res.epochs:
        vals = _val(rec.val, res.tasks, res.metric_names)
        dp = partial_delta_p(vals, baseline, higher) if vals is not None else None
        if dp is not None and math.isfinite(dp.task) and (best is None or dp.task > best):
            best = dp.task
    return best


def score_grid(grid: Sequence[RunSpec]) -> tuple[dict[str, dict[str, Score]], list[str]]:
    """method -> benchmark -> :class:`Score` for every multi-task method of the grid with complete runs; plus
    the problems met (a missing STL baseline, runs without results)."""
    problems: list[str] = []
    baselines = {}
    for b in dict.fromkeys(r.benchmark for r in grid):
        baselines[b] = stl_val_baseline(grid, b)
        if baselines[b] is None:
            problems.append(f"{b}: no complete STL runs with validation scores; its methods are not scored")
    per_seed: dict[tuple[str, str], list[float]] = {}
    for run in grid:
        if run.method == STL or baselines.get(run.benchmark) is None:
            continue
        res = _read(run)
        score = run_val_score(res, baselines[run.benchmark]) if res else None
        if score is None:
            problems.append(f"{run.label}: no complete results with validation scores")
            continue
        per_seed.setdefault((run.method, run.benchmark), []).append(score)
    out: dict[str, dict[str, Score]] = {}
    for (m, b), vals in per_seed.items():
        std = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
        out.setdefault(m, {})[b] = Score(float(np.mean(vals)), std, len(vals))
    return out, problems


def _ranks(scores: Mapping[str, Mapping[str, Score]], benchmarks: Sequence[str]) -> dict[str, float]:
    """Mean over ``benchmarks`` of each method's rank there (1 + the number of methods scoring strictly
    higher)."""
    ranks: dict[str, list[int]] = {m: [] for m in scores}
    for b in benchmarks:
        for m in scores:
            mine = scores[m][b].mean
            ranks[m].append(1 + sum(scores[o][b].mean > mine for o in scores))
    return {m: float(np.mean(r)) for m, r in ranks.items()}


def choose(scores: Mapping[str, Mapping[str, Score]]) -> Choice:
    """Apply the rule (module docstring) to the Rep-MTL settings of ``scores``.

    Raises:
        ValueError: no Rep-MTL setting is scored on every benchmark, or none has both lambdas > 0.
    """
    benchmarks = sorted({b for per in scores.values() for b in per})
    settings = {m: per for m, per in scores.items()
                if repmtl_config(m) is not None and all(b in per for b in benchmarks)}
    if not settings:
        raise ValueError(f"no Rep-MTL setting is scored on every benchmark ({benchmarks}); run the grid first")
    mean_rank = _ranks(settings, benchmarks)
    eligible = [m for m in settings if (c := repmtl_config(m)) is not None and c.lambda_tsr > 0 and c.lambda_csa > 0]
    if not eligible:
        raise ValueError("no Rep-MTL setting with both lambdas > 0 in the grid; the rule chooses only among those")

    def mean_score(m: str) -> float:
        return float(np.mean([settings[m][b].mean for b in benchmarks]))

    order = sorted(eligible, key=lambda m: (mean_rank[m], -mean_score(m)))
    best = order[0]
    tied = [m for m in order
            if all(settings[m][b].mean >= settings[best][b].mean - settings[best][b].std for b in benchmarks)]

    def distance(m: str) -> float:
        config = repmtl_config(m)
        return paper_distance(config) if config is not None else math.inf

    chosen = min(tied, key=lambda m: (distance(m), mean_rank[m]))
    return Choice(chosen, best, tuple(tied), mean_rank, tuple(order))


__all__ = ["PAPER_LAMBDA", "PAPER_TAU", "Choice", "Score", "choose", "paper_distance", "repmtl_config",
           "run_val_score", "score_grid", "stl_val_baseline"]
