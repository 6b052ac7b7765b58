"""``libmtl-repmtl bench``: the comparison harness (benchmark x method x seed grid).

Each run goes through the trainer's ``run_experiment(benchmark, weighting, arch, dataset_path, save_path,
**options)`` into its own folder ``OUT/<benchmark>/<method>/seed<k>/`` (single-task runs:
``OUT/<benchmark>/STL/seed<k>/<task>/``, one run per task). The grid is resumable: a run whose
``results.json`` is complete (all requested epochs) is skipped, and the command says so.

Methods: any LibMTL weighting (``EW``, ``UW``, ``MGDA``, ...; architecture ``HPS``), ``RepMTL`` (architecture
``RepHPS``), its ablations ``RepMTL-CSA`` (``RepMTL_lambda_tsr=0``) and ``RepMTL-TSR`` (``RepMTL_lambda_csa=0``),
``RepMTL-small`` (both lambdas 0.1, ``tau = 1``: the setting that trains small models from scratch, see
``docs/method.md``, "Behaviour on small CPU benchmarks") and ``STL`` (single-task runs).

Outputs (written atomically): ``OUT/summary.md``, ``OUT/summary.csv`` (per benchmark and method: mean +- std
over seeds of every test metric at the best epoch, Δp_task, Δp_metric, seconds per epoch, peak memory,
number of seeds; the paper's published Δp_task rows beside ours, marked ``published``), and PNG plots
``OUT/delta_p.png`` (Δp_task with error bars) and ``OUT/delta_p_vs_time.png``.

Δp baselines (``--baseline``): ``spec`` (the spec's single-task numbers, as computed by the trainer),
``stl`` (our own single-task runs' mean over seeds), ``auto`` (default: ``spec`` where the spec has a
baseline for the benchmark, else ``stl``).
"""

from __future__ import annotations

import argparse
import csv
import inspect
import io
import json
import math
import re
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from libmtl_repmtl.training.io import atomic_write, atomic_write_text

Runner = Callable[..., Mapping[str, Any]]

#: Methods of the full CPU suite (the brief's list).
CPU_METHODS = ("EW", "UW", "DWA", "MGDA", "PCGrad", "CAGrad", "IMTL", "GradVac", "RepMTL", "STL")


# ---------------------------------------------------------------------------------------------- methods
@dataclass(frozen=True)
class MethodSpec:
    """How a method name maps onto a trainer run.

    Attributes:
        name: the method's name in the grid (folder name).
        weighting: LibMTL weighting name.
        arch: architecture name.
        weight_args: extra weighting options (e.g. ``{"RepMTL_lambda_tsr": 0.0}``).
        single_task: one run per task, each with only that task.
    """

    name: str
    weighting: str
    arch: str
    weight_args: dict[str, Any] = field(default_factory=dict)
    single_task: bool = False


def method_spec(name: str) -> MethodSpec:
    """The :class:`MethodSpec` of a method name (``RepMTL``, ``RepMTL-CSA``, ``RepMTL-TSR``, ``STL`` or a
    LibMTL weighting)."""
    if name == "RepMTL":
        return MethodSpec(name, "RepMTL", "RepHPS")
    if name == "RepMTL-CSA":
        return MethodSpec(name, "RepMTL", "RepHPS", {"RepMTL_lambda_tsr": 0.0})
    if name == "RepMTL-TSR":
        return MethodSpec(name, "RepMTL", "RepHPS", {"RepMTL_lambda_csa": 0.0})
    if name == "RepMTL-small":
        return MethodSpec(name, "RepMTL", "RepHPS",
                          {"RepMTL_lambda_tsr": 0.1, "RepMTL_lambda_csa": 0.1, "RepMTL_tau": 1.0})
    if name == "STL":
        return MethodSpec(name, "EW", "HPS", single_task=True)
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
        raise ValueError(f"bad method name {name!r}")
    return MethodSpec(name, name, "HPS")


# ---------------------------------------------------------------------------------------------- suites
@dataclass(frozen=True)
class Suite:
    """A named grid: benchmarks, methods, seeds and per-benchmark options (e.g. ``epochs``)."""

    benchmarks: tuple[str, ...]
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    options: dict[str, dict[str, Any]] = field(default_factory=dict)


SUITES: dict[str, Suite] = {
    "cpu": Suite(("multimnist", "digits"), CPU_METHODS, (0, 1, 2),
                 {"multimnist": {"epochs": 8}, "digits": {"epochs": 8}}),
    "cpu-quick": Suite(("multimnist", "digits"), ("EW", "MGDA", "RepMTL", "RepMTL-small", "STL"), (0,),
                       {"multimnist": {"epochs": 4}, "digits": {"epochs": 3}}),
    "ablation-cpu": Suite(("multimnist",), ("EW", "RepMTL", "RepMTL-CSA", "RepMTL-TSR", "STL"), (0, 1, 2),
                          {"multimnist": {"epochs": 8}}),
    # The paper's benchmarks with every method LibMTL 1.1.5 ships (it has no Nash-MTL, DB-MTL, FairGrad or
    # Aligned-MTL), Rep-MTL and its ablations; Δp against the spec's single-task rows.
    "paper": Suite(("nyuv2", "cityscapes", "office-31", "office-home"),
                   ("EW", "UW", "DWA", "GLS", "RLW", "MGDA", "GradNorm", "PCGrad", "GradDrop", "GradVac", "IMTL",
                    "CAGrad", "RepMTL", "RepMTL-CSA", "RepMTL-TSR"), (0, 1, 2)),
}


# ---------------------------------------------------------------------------------------------- grid
@dataclass(frozen=True)
class RunSpec:
    """One trainer run of the grid."""

    benchmark: str
    method: str
    seed: int
    save_path: Path
    weighting: str
    arch: str
    options: dict[str, Any]
    task: str | None = None  # single-task runs

    @property
    def label(self) -> str:
        """``benchmark/method/seed<k>[/task]``."""
        return f"{self.benchmark}/{self.method}/seed{self.seed}" + (f"/{self.task}" if self.task else "")


def benchmark_tasks(benchmark: str) -> list[str]:
    """Task names of a benchmark (CPU benchmarks, then the trainer's registry, then the spec's lists)."""
    from libmtl_repmtl.bench.cpu_suite import CPU_BENCHMARKS

    if benchmark in CPU_BENCHMARKS:
        return list(CPU_BENCHMARKS[benchmark].tasks)
    try:
        from libmtl_repmtl.training import registry  # type: ignore[attr-defined]

        return list(registry.get_benchmark(benchmark).tasks)
    except (ImportError, AttributeError, KeyError):
        pass
    known = {"nyuv2": ["segmentation", "depth", "normal"], "cityscapes": ["segmentation", "depth"],
             "office31": ["amazon", "dslr", "webcam"], "officehome": ["Art", "Clipart", "Product", "Real_World"]}
    key = _norm(benchmark)
    if key in known:
        return known[key]
    raise ValueError(f"unknown benchmark {benchmark!r}: not a CPU benchmark and not in the trainer's registry")


def plan_grid(benchmarks: Sequence[str], methods: Sequence[str], seeds: Sequence[int], out: Path,
              options: Mapping[str, Mapping[str, Any]] | None = None,
              tasks_of: Callable[[str], list[str]] = benchmark_tasks) -> list[RunSpec]:
    """All runs of the grid, in execution order (benchmark, method, seed, task)."""
    grid = []
    for b in benchmarks:
        opts = dict((options or {}).get(b, {}))
        for m in methods:
            spec = method_spec(m)
            for s in seeds:
                base = {**opts, "seed": int(s)}
                if spec.weight_args:
                    base["weight_args"] = dict(spec.weight_args)
                folder = out / b / m / f"seed{s}"
                if spec.single_task:
                    for t in tasks_of(b):
                        grid.append(RunSpec(b, m, int(s), folder / t, spec.weighting, spec.arch,
                                            {**base, "tasks": [t]}, task=t))
                else:
                    grid.append(RunSpec(b, m, int(s), folder, spec.weighting, spec.arch, base))
    return grid


def is_complete(save_path: Path, epochs: int | None = None) -> bool:
    """Whether ``save_path/results.json`` holds a finished run (all ``epochs`` epochs, when given)."""
    path = save_path / "results.json"
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(results, dict):
        return False
    if results.get("complete") is False or results.get("status") in {"running", "failed"}:
        return False
    done = _epochs_done(results)
    if epochs is not None and done is not None and done < epochs:
        return False
    return results.get("best_epoch") is not None or bool(results.get("complete"))


# ---------------------------------------------------------------------------------------------- results.json
def _epochs_done(results: Mapping[str, Any]) -> int | None:
    per_epoch = results.get("epochs") if isinstance(results.get("epochs"), list) else results.get("history")
    if isinstance(per_epoch, list):
        return len(per_epoch)
    if isinstance(results.get("epochs_done"), int):
        return int(results["epochs_done"])
    return None


def _number(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


@dataclass
class RunRecord:
    """What the summary needs from one run's ``results.json``.

    Attributes:
        metrics: task -> metric -> test value at the best epoch.
        higher_better: task -> metric -> True when higher is better.
        delta_p_task, delta_p_metric: the trainer's Δp (spec baseline), if any.
        seconds_per_epoch: mean training seconds per epoch.
        peak_memory_mb: peak memory in MiB, if recorded.
    """

    metrics: dict[str, dict[str, float]]
    higher_better: dict[str, dict[str, bool]]
    delta_p_task: float | None = None
    delta_p_metric: float | None = None
    seconds_per_epoch: float | None = None
    peak_memory_mb: float | None = None


def read_run(save_path: Path) -> RunRecord:
    """Parse ``save_path/results.json`` into a :class:`RunRecord`.

    Expected keys: ``best_epoch``, per-epoch entries under ``epochs`` (each with ``test`` = task -> metric ->
    value), or ``best`` / ``test_at_best`` (task -> metric -> value); ``higher_better`` (task -> metric ->
    bool) or ``metric_weights`` (task -> list of 0/1, with ``metric_names``); ``delta_p_task``,
    ``delta_p_metric``, ``seconds_per_epoch`` and ``peak_memory_mb`` (or ``peak_memory`` in bytes).
    """
    results = json.loads((save_path / "results.json").read_text())
    metrics = _best_metrics(results)
    higher = _higher_better(results, metrics)
    spe = _number(results.get("seconds_per_epoch"))
    if spe is None and isinstance(results.get("epochs"), list):
        secs = [_number(e.get("train_seconds", e.get("seconds"))) for e in results["epochs"] if isinstance(e, dict)]
        secs = [s for s in secs if s is not None]
        spe = float(np.mean(secs)) if secs else None
    mem = _number(results.get("peak_memory_mb"))
    if mem is None and _number(results.get("peak_memory")) is not None:
        mem = float(results["peak_memory"]) / 2**20
    return RunRecord(metrics, higher, _number(results.get("delta_p_task")), _number(results.get("delta_p_metric")),
                     spe, mem)


def _best_metrics(results: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    for key in ("test_at_best", "best_test", "best"):
        block = results.get(key)
        if isinstance(block, dict) and isinstance(block.get("test"), dict):
            block = block["test"]
        if isinstance(block, dict) and block and all(isinstance(v, dict) for v in block.values()):
            return {t: {m: float(v) for m, v in ms.items() if _number(v) is not None} for t, ms in block.items()}
    epochs = results.get("epochs")
    best = results.get("best_epoch")
    if isinstance(epochs, list) and isinstance(best, int):
        entry = next((e for e in epochs if isinstance(e, dict) and e.get("epoch") == best), None)
        if entry is None and 0 <= best < len(epochs):
            entry = epochs[best]
        if isinstance(entry, dict) and isinstance(entry.get("test"), dict):
            return {t: {m: float(v) for m, v in ms.items() if _number(v) is not None}
                    for t, ms in entry["test"].items() if isinstance(ms, dict)}
    raise ValueError("results.json: no test metrics at the best epoch found")


def _higher_better(results: Mapping[str, Any],
                   metrics: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, bool]]:
    hb = results.get("higher_better")
    if isinstance(hb, dict):
        out = {}
        for t, ms in metrics.items():
            v = hb.get(t)
            if isinstance(v, dict):
                out[t] = {m: bool(v.get(m, True)) for m in ms}
            elif isinstance(v, list):
                out[t] = {m: bool(f) for m, f in zip(ms, v)}
            else:
                out[t] = {m: True for m in ms}
        return out
    # Unknown: assume accuracy-like names are higher-better, error-like lower-better.
    low = re.compile(r"err|loss|mean|median|abs|rel", re.I)
    return {t: {m: not low.search(m) for m in ms} for t, ms in metrics.items()}


# ---------------------------------------------------------------------------------------------- Δp
def delta_p(metrics: Mapping[str, Mapping[str, float]], baseline: Mapping[str, Mapping[str, float]],
            higher_better: Mapping[str, Mapping[str, bool]]) -> tuple[float, float]:
    """Δp_task and Δp_metric (percent) of ``metrics`` against ``baseline`` (the spec's definition).

    Δp_task = mean over tasks of (mean over the task's metrics of (-1)^σ (M - M_b) / M_b) x 100, σ = 1 for
    lower-is-better metrics; Δp_metric = the same signed change averaged over all metrics.
    """
    from libmtl_repmtl.training.deltap import partial_delta_p

    names = {t: list(ms) for t, ms in metrics.items()}
    r = partial_delta_p({t: [metrics[t][m] for m in ns] for t, ns in names.items()},
                        {t: [baseline[t].get(m) for m in ns] for t, ns in names.items() if t in baseline},
                        {t: [higher_better.get(t, {}).get(m, True) for m in ns] for t, ns in names.items()})
    if r is None:
        raise ValueError("no metric in common with the baseline")
    return r.task, r.metric


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def published_rows() -> dict[str, dict[str, float]]:
    """The paper's published Δp_task rows (benchmark -> method -> value), from ``training.deltap`` when
    available; empty otherwise."""
    try:
        from libmtl_repmtl.training import deltap  # type: ignore[attr-defined]
    except ImportError:
        return {}
    for attr in ("PUBLISHED_DELTA_P_TASK", "PUBLISHED_ROWS", "PUBLISHED"):
        table = getattr(deltap, attr, None)
        if isinstance(table, Mapping):
            return {str(b): {str(m): float(v) for m, v in rows.items() if _number(v) is not None}
                    for b, rows in table.items() if isinstance(rows, Mapping)}
    return {}


def spec_has_baseline(benchmark: str) -> bool:
    """Whether the spec defines a single-task baseline for ``benchmark`` (the four paper benchmarks)."""
    return _norm(benchmark) in {"nyuv2", "cityscapes", "office31", "officehome"}


# ---------------------------------------------------------------------------------------------- summary
@dataclass
class SummaryRow:
    """One (benchmark, method) line of the summary (``source`` is ``ours`` or ``published``)."""

    benchmark: str
    method: str
    source: str
    n_seeds: int
    metrics: dict[str, tuple[float, float]]  # "task/metric" -> (mean, std)
    delta_p_task: tuple[float, float] | None
    delta_p_metric: tuple[float, float] | None
    seconds_per_epoch: tuple[float, float] | None
    peak_memory_mb: tuple[float, float] | None
    baseline: str = ""
    note: str = ""


def _mean_std(values: Iterable[float | None]) -> tuple[float, float] | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0


def _merge_single_task(records: Sequence[RunRecord]) -> RunRecord:
    """Combine one seed's single-task runs into one record (cost: sum of the runs' time per epoch)."""
    metrics: dict[str, dict[str, float]] = {}
    higher: dict[str, dict[str, bool]] = {}
    for r in records:
        metrics.update(r.metrics)
        higher.update(r.higher_better)
    secs = [r.seconds_per_epoch for r in records]
    mems = [r.peak_memory_mb for r in records if r.peak_memory_mb is not None]
    return RunRecord(metrics, higher, None, None,
                     float(sum(secs)) if all(s is not None for s in secs) else None, max(mems) if mems else None)


def collect(grid: Sequence[RunSpec]) -> tuple[dict[tuple[str, str], dict[int, RunRecord]], list[str]]:
    """Read every complete run of the grid: (benchmark, method) -> seed -> record; plus problems found."""
    by_seed: dict[tuple[str, str, int], list[RunRecord]] = {}
    expected: dict[tuple[str, str, int], int] = {}
    problems = []
    for run in grid:
        key = (run.benchmark, run.method, run.seed)
        expected[key] = expected.get(key, 0) + 1
        if not is_complete(run.save_path, run.options.get("epochs")):
            problems.append(f"{run.label}: no complete results.json")
            continue
        try:
            by_seed.setdefault(key, []).append(read_run(run.save_path))
        except (OSError, ValueError) as exc:
            problems.append(f"{run.label}: unreadable results.json ({exc})")
    out: dict[tuple[str, str], dict[int, RunRecord]] = {}
    for (b, m, s), recs in by_seed.items():
        if len(recs) != expected[(b, m, s)]:
            continue  # a single-task seed with a missing task
        out.setdefault((b, m), {})[s] = _merge_single_task(recs) if method_spec(m).single_task else recs[0]
    return out, problems


def summarise(records: Mapping[tuple[str, str], Mapping[int, RunRecord]], baseline: str = "auto",
              published: Mapping[str, Mapping[str, float]] | None = None) -> list[SummaryRow]:
    """Summary rows: ours (mean +- std over seeds), then the published rows of the same benchmarks.

    Args:
        records: (benchmark, method) -> seed -> record (see :func:`collect`).
        baseline: ``spec`` (Δp from the runs' results.json), ``stl`` (against our single-task runs' mean
            over seeds) or ``auto`` (``spec`` where the spec has a baseline for the benchmark, else ``stl``).
        published: benchmark -> method -> published Δp_task.
    """
    if baseline not in {"auto", "spec", "stl"}:
        raise ValueError(f"baseline must be auto, spec or stl, got {baseline!r}")
    rows: list[SummaryRow] = []
    benchmarks = list(dict.fromkeys(b for b, _ in records))
    for b in benchmarks:
        mode = baseline if baseline != "auto" else ("spec" if spec_has_baseline(b) else "stl")
        stl_base: dict[str, dict[str, float]] | None = None
        note = ""
        if mode == "stl":
            stl = records.get((b, "STL"), {})
            if stl:
                first = next(iter(stl.values())).metrics
                stl_base = {t: {m: float(np.mean([r.metrics[t][m] for r in stl.values() if m in r.metrics.get(t, {})]))
                                for m in ms} for t, ms in first.items()}
            else:
                note = "no STL runs: Δp not available"
        for (bb, m), seeds in records.items():
            if bb != b:
                continue
            recs = [seeds[s] for s in sorted(seeds)]
            keys = list(dict.fromkeys(f"{t}/{k}" for r in recs for t, ms in r.metrics.items() for k in ms))
            metrics = {}
            for key in keys:
                t, k = key.split("/", 1)
                ms = _mean_std(r.metrics.get(t, {}).get(k) for r in recs)
                if ms is not None:
                    metrics[key] = ms
            if mode == "stl":
                dps = [delta_p(r.metrics, stl_base, r.higher_better) for r in recs] if stl_base else []
                dpt = _mean_std(d[0] for d in dps)
                dpm = _mean_std(d[1] for d in dps)
            else:
                dpt = _mean_std(r.delta_p_task for r in recs)
                dpm = _mean_std(r.delta_p_metric for r in recs)
            rows.append(SummaryRow(b, m, "ours", len(recs), metrics, dpt, dpm,
                                   _mean_std(r.seconds_per_epoch for r in recs),
                                   _mean_std(r.peak_memory_mb for r in recs),
                                   baseline="spec STL" if mode == "spec" else "our STL (mean over seeds)", note=note))
        pub = {_norm(k): v for k, v in (published or {}).items()}.get(_norm(b), {})
        for m, v in pub.items():
            rows.append(SummaryRow(b, m, "published", 3, {}, (v, float("nan")), None, None, None,
                                   baseline="paper's STL", note="Rep-MTL paper, mean of 3 runs"))
    return rows


def _fmt(ms: tuple[float, float] | None, digits: int = 2) -> str:
    if ms is None:
        return "–"
    mean, std = ms
    if math.isnan(std):
        return f"{mean:+.{digits}f}" if digits == 2 else f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _fmt_dp(ms: tuple[float, float] | None) -> str:
    if ms is None:
        return "–"
    mean, std = ms
    return f"{mean:+.2f}" if math.isnan(std) else f"{mean:+.2f} ± {std:.2f}"


def render_markdown(rows: Sequence[SummaryRow], header: str = "", problems: Sequence[str] = ()) -> str:
    """The summary as Markdown: one table per benchmark, published rows marked."""
    out = io.StringIO()
    out.write("# Benchmark summary\n\n")
    if header:
        out.write(header.rstrip() + "\n\n")
    out.write("Test metrics at the best epoch (chosen on validation), mean ± std over seeds. "
              "Δp in percent against the single-task baseline named per table. Rows marked *published* are "
              "the Rep-MTL paper's Δp_task (mean of 3 runs), not ours.\n\n")
    for b in dict.fromkeys(r.benchmark for r in rows):
        brows = [r for r in rows if r.benchmark == b]
        ours = [r for r in brows if r.source == "ours"]
        keys = list(dict.fromkeys(k for r in ours for k in r.metrics))
        base = next((r.baseline for r in ours), "")
        out.write(f"## {b}\n\nΔp baseline: {base}.\n\n")
        notes = {r.note for r in ours if r.note}
        for n in notes:
            out.write(f"Note: {n}.\n\n")
        head = ["method", "source", "seeds", *keys, "Δp_task", "Δp_metric", "s / epoch", "peak MiB"]
        out.write("| " + " | ".join(head) + " |\n")
        out.write("|" + "|".join("---" for _ in head) + "|\n")
        for r in brows:
            cells = [r.method if r.source == "ours" else f"{r.method} (published)", r.source, str(r.n_seeds)]
            cells += [_fmt(r.metrics.get(k), 4 if abs(r.metrics.get(k, (1, 0))[0]) < 1 else 2) for k in keys]
            cells += [_fmt_dp(r.delta_p_task), _fmt_dp(r.delta_p_metric), _fmt(r.seconds_per_epoch),
                      _fmt(r.peak_memory_mb, 1)]
            out.write("| " + " | ".join(cells) + " |\n")
        out.write("\n")
    if problems:
        out.write("## Missing or failed runs\n\n")
        for p in problems:
            out.write(f"- {p}\n")
        out.write("\n")
    return out.getvalue()


def render_csv(rows: Sequence[SummaryRow]) -> str:
    """The summary as CSV: one line per (benchmark, method, source); ``<quantity>_mean`` / ``_std`` columns."""
    keys = list(dict.fromkeys(k for r in rows for k in r.metrics))
    fields = ["benchmark", "method", "source", "n_seeds", "baseline"]
    quantities = [*keys, "delta_p_task", "delta_p_metric", "seconds_per_epoch", "peak_memory_mb"]
    for q in quantities:
        fields += [f"{q}_mean", f"{q}_std"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in rows:
        line: dict[str, Any] = {"benchmark": r.benchmark, "method": r.method, "source": r.source,
                                "n_seeds": r.n_seeds, "baseline": r.baseline}
        values = {**r.metrics, "delta_p_task": r.delta_p_task, "delta_p_metric": r.delta_p_metric,
                  "seconds_per_epoch": r.seconds_per_epoch, "peak_memory_mb": r.peak_memory_mb}
        for q in quantities:
            v = values.get(q)
            line[f"{q}_mean"] = "" if v is None else f"{v[0]:.6g}"
            line[f"{q}_std"] = "" if v is None or math.isnan(v[1]) else f"{v[1]:.6g}"
        w.writerow(line)
    return buf.getvalue()


def plot_summary(rows: Sequence[SummaryRow], out: Path) -> list[Path]:
    """``delta_p.png`` (Δp_task per method, error bars = std over seeds; published as hollow markers) and
    ``delta_p_vs_time.png`` (Δp_task against seconds per epoch), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    benchmarks = list(dict.fromkeys(r.benchmark for r in rows if r.source == "ours"))
    if not benchmarks:
        return []
    written = []

    def save(fig: Any, name: str) -> None:
        path = atomic_write(out / name, lambda f: fig.savefig(f, format="png", dpi=110))
        plt.close(fig)
        written.append(path)

    fig, axes = plt.subplots(1, len(benchmarks), figsize=(5.5 * len(benchmarks), 4), squeeze=False)
    for ax, b in zip(axes[0], benchmarks):
        ours = [r for r in rows if r.benchmark == b and r.source == "ours" and r.delta_p_task is not None]
        pub = {_norm(r.method): r.delta_p_task[0] for r in rows
               if r.benchmark == b and r.source == "published" and r.delta_p_task}
        names = [r.method for r in ours]
        x = np.arange(len(names))
        means = [r.delta_p_task[0] for r in ours]
        stds = [r.delta_p_task[1] for r in ours]
        colors = ["tab:red" if n.startswith("RepMTL") else "tab:blue" for n in names]
        ax.bar(x, means, yerr=stds, color=colors, capsize=3, label="ours (mean ± std)")
        px = [i for i, n in enumerate(names) if _norm(n) in pub]
        if px:
            ax.scatter(px, [pub[_norm(names[i])] for i in px], facecolors="none", edgecolors="k", zorder=3,
                       label="published (paper)")
        ax.axhline(0.0, color="gray", lw=0.8)
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=45, ha="right")
        ax.set_ylabel("Δp_task (%)")
        ax.set_title(b)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save(fig, "delta_p.png")

    fig, axes = plt.subplots(1, len(benchmarks), figsize=(5.5 * len(benchmarks), 4), squeeze=False)
    for ax, b in zip(axes[0], benchmarks):
        ours = [r for r in rows if r.benchmark == b and r.source == "ours" and r.delta_p_task is not None
                and r.seconds_per_epoch is not None]
        for r in ours:
            color = "tab:red" if r.method.startswith("RepMTL") else "tab:blue"
            ax.errorbar(r.seconds_per_epoch[0], r.delta_p_task[0], xerr=r.seconds_per_epoch[1],
                        yerr=r.delta_p_task[1], fmt="o", color=color, capsize=2)
            ax.annotate(r.method, (r.seconds_per_epoch[0], r.delta_p_task[0]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
        ax.axhline(0.0, color="gray", lw=0.8)
        ax.set_xlabel("seconds per training epoch")
        ax.set_ylabel("Δp_task (%)")
        ax.set_title(b)
    fig.tight_layout()
    save(fig, "delta_p_vs_time.png")
    return written


# ---------------------------------------------------------------------------------------------- execution
def trainer_runner() -> Runner | None:
    """The trainer's ``run_experiment`` if it is importable, else ``None``."""
    try:
        from libmtl_repmtl.training import run_experiment  # type: ignore[attr-defined]
    except ImportError:
        return None
    return run_experiment


def _trainer_knows(benchmark: str) -> bool:
    try:
        from libmtl_repmtl.bench.registration import register_cpu_benchmarks

        return benchmark in register_cpu_benchmarks()
    except (ImportError, RuntimeError):
        return False


def select_runner(kind: str, benchmarks: Sequence[str]) -> tuple[Runner, str]:
    """The runner for ``kind`` (``trainer``, ``cpu`` or ``auto``) and a description of it.

    ``auto``: the trainer's ``run_experiment`` when it is available and knows every benchmark of the grid
    (the CPU benchmarks are registered into the trainer's registry), else the CPU fallback runner
    (:func:`libmtl_repmtl.bench.cpu_runner.run_cpu_experiment`) when every benchmark is a CPU benchmark.

    Raises:
        RuntimeError: no runner can run the grid (the message says why).
    """
    from libmtl_repmtl.bench.cpu_suite import CPU_BENCHMARKS

    trainer = trainer_runner()
    all_cpu = all(b in CPU_BENCHMARKS for b in benchmarks)
    if kind == "trainer" or (kind == "auto" and trainer is not None
                             and all(b not in CPU_BENCHMARKS or _trainer_knows(b) for b in benchmarks)):
        if trainer is None:
            raise RuntimeError("the trainer's run_experiment is not available (libmtl_repmtl.training)")
        if any(b in CPU_BENCHMARKS for b in benchmarks):
            from libmtl_repmtl.bench.registration import register_cpu_benchmarks

            register_cpu_benchmarks()
        return trainer, "libmtl_repmtl.training.run_experiment"
    if all_cpu:
        from libmtl_repmtl.bench.cpu_runner import run_cpu_experiment

        return run_cpu_experiment, "libmtl_repmtl.bench.cpu_runner.run_cpu_experiment (CPU fallback)"
    raise RuntimeError("the trainer's run_experiment is not available and the grid has non-CPU benchmarks "
                       f"({[b for b in benchmarks if b not in CPU_BENCHMARKS]})")


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def reset_peak_rss() -> bool:
    """Reset the process's peak-RSS mark (Linux ``/proc/self/clear_refs``; also what ``getrusage`` reports
    as ``ru_maxrss``). Returns False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@dataclass
class Outcome:
    """What happened to one run: ``ran``, ``skipped`` (already complete) or ``failed``."""

    run: RunSpec
    status: str
    seconds: float = 0.0
    error: str = ""


def execute(grid: Sequence[RunSpec], runner: Runner, dataset_paths: Mapping[str, str | None] | None = None,
            device: str = "cpu", log: Callable[[str], None] = print) -> list[Outcome]:
    """Run every incomplete run of the grid (sequentially); a failing run is recorded, not fatal."""
    outcomes = []
    for i, run in enumerate(grid, 1):
        epochs = run.options.get("epochs")
        if is_complete(run.save_path, epochs):
            log(f"[{i}/{len(grid)}] skip {run.label}: already complete")
            outcomes.append(Outcome(run, "skipped"))
            continue
        log(f"[{i}/{len(grid)}] run  {run.label} ({run.weighting}, {run.arch})")
        run.save_path.mkdir(parents=True, exist_ok=True)
        extra: dict[str, Any] = {}
        if (run.save_path / "last.pt").exists() and _accepts(runner, "resume"):
            extra["resume"] = True  # an interrupted trainer run continues from its last epoch
            log("    resuming from last.pt")
        reset_peak_rss()  # so that a CPU run's "peak RSS" is this run's, not the process's so far
        t0 = time.perf_counter()
        try:
            runner(run.benchmark, run.weighting, run.arch, (dataset_paths or {}).get(run.benchmark),
                   str(run.save_path), device=device, **run.options, **extra)
        except Exception as exc:  # noqa: BLE001 - one failing method must not stop the grid
            err = f"{type(exc).__name__}: {exc}"
            atomic_write_text(run.save_path / "error.txt", traceback.format_exc())
            log(f"    FAILED {run.label}: {err}")
            outcomes.append(Outcome(run, "failed", time.perf_counter() - t0, err))
            continue
        dt = time.perf_counter() - t0
        if not is_complete(run.save_path, epochs):
            outcomes.append(Outcome(run, "failed", dt, "run returned but results.json is not complete"))
            log(f"    FAILED {run.label}: results.json not complete")
            continue
        err_file = run.save_path / "error.txt"
        if err_file.exists():
            err_file.unlink()
        log(f"    done in {dt:.1f}s")
        outcomes.append(Outcome(run, "ran", dt))
    return outcomes


def write_summary(grid: Sequence[RunSpec], out: Path, baseline: str = "auto", header: str = "",
                  outcomes: Sequence[Outcome] = ()) -> list[SummaryRow]:
    """Collect the grid's results and write ``summary.md``, ``summary.csv`` and the plots into ``out``."""
    records, problems = collect(grid)
    failed = {o.run.label: o.error for o in outcomes if o.status == "failed"}
    problems = [p + (f" — {failed[p.split(':')[0]]}" if p.split(":")[0] in failed else "") for p in problems]
    rows = summarise(records, baseline, published_rows())
    atomic_write_text(out / "summary.md", render_markdown(rows, header, problems))
    atomic_write_text(out / "summary.csv", render_csv(rows))
    plot_summary(rows, out)
    return rows


def _parse_kv(items: Sequence[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"error: {what} must be BENCHMARK=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k] = v
    return out


def build_parser() -> argparse.ArgumentParser:
    """The ``bench`` command's argument parser."""
    p = argparse.ArgumentParser(prog="libmtl-repmtl bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=sorted(SUITES), help="a predefined grid (flags below override its parts)")
    p.add_argument("--benchmarks", nargs="+", help="benchmark names (e.g. multimnist digits nyuv2)")
    p.add_argument("--methods", nargs="+",
                   help="LibMTL weightings, RepMTL, RepMTL-CSA, RepMTL-TSR, RepMTL-small, STL (single-task runs)")
    p.add_argument("--seeds", nargs="+", type=int, help="training seeds")
    p.add_argument("--epochs", type=int, help="epochs for every benchmark (default: the suite's / trainer's)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--out", default="bench_out", help="output folder (default ./bench_out)")
    p.add_argument("--dataset_path", "--dataset-path", nargs="*", default=[], metavar="BENCHMARK=PATH",
                   help="dataset root per benchmark")
    p.add_argument("--baseline", choices=["auto", "spec", "stl"], default="auto",
                   help="Δp baseline: spec's single-task numbers, our STL runs, or auto (spec if defined, else stl)")
    p.add_argument("--option", nargs="*", default=[], metavar="KEY=VALUE",
                   help="extra run_experiment options for every run (JSON values, e.g. batch_size=32)")
    p.add_argument("--runner", choices=["auto", "trainer", "cpu"], default="auto",
                   help="trainer: the trainer's run_experiment; cpu: the stand-alone CPU runner (CPU benchmarks "
                        "only); auto (default): the trainer when it knows every benchmark, else the CPU runner")
    p.add_argument("--dry-run", action="store_true", help="list the grid (and what is already done) and exit")
    p.add_argument("--summary-only", action="store_true", help="only (re)write the summary from existing runs")
    return p


def resolve_grid(args: argparse.Namespace) -> tuple[list[RunSpec], dict[str, Any]]:
    """The grid the parsed flags describe, plus a description of it."""
    suite = SUITES[args.suite] if args.suite else None
    benchmarks = args.benchmarks or (list(suite.benchmarks) if suite else None)
    methods = args.methods or (list(suite.methods) if suite else None)
    seeds = args.seeds or (list(suite.seeds) if suite else [0])
    if not benchmarks or not methods:
        raise SystemExit("error: give --suite, or --benchmarks and --methods")
    for m in methods:
        try:
            method_spec(m)
        except ValueError as exc:
            raise SystemExit(f"error: {exc}") from None
    extra = {}
    for k, v in _parse_kv(args.option, "--option").items():
        try:
            extra[k] = json.loads(v)
        except ValueError:
            extra[k] = v
    options: dict[str, dict[str, Any]] = {}
    for b in benchmarks:
        o = dict(suite.options.get(b, {})) if suite else {}
        o.update(extra)
        if args.epochs is not None:
            o["epochs"] = args.epochs
        options[b] = o
    out = Path(args.out)
    grid = plan_grid(benchmarks, methods, seeds, out, options)
    return grid, {"benchmarks": benchmarks, "methods": methods, "seeds": seeds, "options": options}


def main(argv: Sequence[str] | None = None, runner: Runner | None = None) -> int:
    """``libmtl-repmtl bench [--suite NAME] [--benchmarks ...] [--methods ...] [--seeds ...] [--out DIR] ...``."""
    args = build_parser().parse_args(argv)
    grid, desc = resolve_grid(args)
    out = Path(args.out)
    paths = _parse_kv(args.dataset_path, "--dataset_path")
    done = [r for r in grid if is_complete(r.save_path, r.options.get("epochs"))]
    if args.dry_run:
        print(f"grid: {len(grid)} runs ({len(done)} already complete) -> {out}")
        for r in grid:
            state = "done" if r in done else "todo"
            print(f"  [{state}] {r.label:<40} weighting={r.weighting} arch={r.arch} options={r.options}")
        return 0
    t0 = time.perf_counter()
    outcomes: list[Outcome] = []
    runner_name = ""
    if not args.summary_only:
        if done:
            print(f"resuming: {len(done)} of {len(grid)} runs already complete, skipping them")
        runner_name = "given runner"
        try:
            if runner is None:
                runner, runner_name = select_runner(args.runner, desc["benchmarks"])
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"runner: {runner_name}")
        outcomes = execute(grid, runner, paths, args.device)
    wall = time.perf_counter() - t0
    ran = sum(o.status == "ran" for o in outcomes)
    skipped = sum(o.status == "skipped" for o in outcomes)
    failed = [o for o in outcomes if o.status == "failed"]
    header = (f"Grid: benchmarks {desc['benchmarks']}, methods {desc['methods']}, seeds {desc['seeds']}, "
              f"options {desc['options']}, device {args.device}, baseline {args.baseline}"
              + ("." if args.summary_only else f", runner {runner_name}, wall clock {wall:.0f} s."))
    write_summary(grid, out, args.baseline, header, outcomes)
    print(f"ran {ran}, skipped {skipped} (already complete), failed {len(failed)} in {wall:.1f}s; "
          f"wrote {out / 'summary.md'}, {out / 'summary.csv'}, {out / 'delta_p.png'}, {out / 'delta_p_vs_time.png'}")
    for o in failed:
        print(f"  failed: {o.run.label}: {o.error}")
    return 1 if failed else 0


__all__ = [
    "CPU_METHODS",
    "SUITES",
    "MethodSpec",
    "Outcome",
    "RunRecord",
    "RunSpec",
    "Suite",
    "SummaryRow",
    "atomic_write_text",
    "select_runner",
    "collect",
    "delta_p",
    "execute",
    "is_complete",
    "main",
    "method_spec",
    "plan_grid",
    "plot_summary",
    "read_run",
    "render_csv",
    "render_markdown",
    "summarise",
    "write_summary",
]


if __name__ == "__main__":
    sys.exit(main())
