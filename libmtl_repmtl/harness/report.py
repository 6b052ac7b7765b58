"""The grid's report: summary rows (mean ± std over seeds, Δp against the chosen baseline, the paper's
published rows beside ours), rendered as ``summary.md`` and ``summary.csv``; plots in
:mod:`~libmtl_repmtl.harness.plots`."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from libmtl_repmtl.benchmarks import canonical_name, find, names
from libmtl_repmtl.harness.execute import Outcome
from libmtl_repmtl.harness.methods import method_spec
from libmtl_repmtl.harness.plan import RunSpec
from libmtl_repmtl.harness.plots import plot_summary
from libmtl_repmtl.harness.runs import Records, collect
from libmtl_repmtl.training.deltap import partial_delta_p
from libmtl_repmtl.training.io import atomic_write_text

MeanStd = tuple[float, float]


@dataclass
class SummaryRow:
    """One (benchmark, method) line of the summary (``source`` is ``ours`` or ``published``)."""

    benchmark: str
    method: str
    source: str
    n_seeds: int
    metrics: dict[str, MeanStd]  # "task/metric" -> (mean, std)
    delta_p_task: MeanStd | None
    delta_p_metric: MeanStd | None
    seconds_per_epoch: MeanStd | None
    peak_memory_mb: MeanStd | None
    baseline: str = ""
    note: str = ""
    peak_memory_kinds: tuple[str, ...] = ()  # what peak_memory_mb measures (the runs' results.json)


def delta_p(metrics: Mapping[str, Mapping[str, float]], baseline: Mapping[str, Mapping[str, float]],
            higher_better: Mapping[str, Mapping[str, bool]]) -> tuple[float, float]:
    """Δp_task and Δp_metric (percent) of ``metrics`` against ``baseline``, both task -> metric -> value
    (:mod:`libmtl_repmtl.training.deltap`'s formula over the metrics the baseline has).

    Raises:
        ValueError: no metric in common with the baseline.
    """
    cols = {t: list(ms) for t, ms in metrics.items()}
    r = partial_delta_p({t: [metrics[t][m] for m in ns] for t, ns in cols.items()},
                        {t: [baseline[t].get(m) for m in ns] for t, ns in cols.items() if t in baseline},
                        {t: [higher_better.get(t, {}).get(m, True) for m in ns] for t, ns in cols.items()})
    if r is None:
        raise ValueError("no metric in common with the baseline")
    return r.task, r.metric


def published_rows() -> dict[str, dict[str, float]]:
    """The paper's published Δp_task rows of every registered benchmark that has them (benchmark -> method ->
    percent)."""
    out = {}
    for name in names():
        bench = find(name)
        if bench is not None and bench.published is not None and bench.published.delta_p_task:
            out[name] = dict(bench.published.delta_p_task)
    return out


def has_baseline(benchmark: str) -> bool:
    """Whether the benchmark declares a single-task baseline (the paper's four do)."""
    bench = find(benchmark)
    return bench is not None and bench.baseline is not None


def _mean_std(values: Iterable[float | None]) -> MeanStd | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0


def _stl_baseline(records: Records, benchmark: str) -> dict[str, dict[str, float]] | None:
    stl = records.get((benchmark, "STL"), {})
    if not stl:
        return None
    first = next(iter(stl.values())).metrics
    return {t: {m: float(np.mean([r.metrics[t][m] for r in stl.values() if m in r.metrics.get(t, {})]))
                for m in ms} for t, ms in first.items()}


def _ours(benchmark: str, method: str, seeds: Mapping[int, Any], mode: str,
          stl_base: Mapping[str, Mapping[str, float]] | None, note: str) -> SummaryRow:
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
        dpt, dpm = _mean_std(d[0] for d in dps), _mean_std(d[1] for d in dps)
    else:
        dpt, dpm = _mean_std(r.delta_p_task for r in recs), _mean_std(r.delta_p_metric for r in recs)
    return SummaryRow(benchmark, method, "ours", len(recs), metrics, dpt, dpm,
                      _mean_std(r.seconds_per_epoch for r in recs), _mean_std(r.peak_memory_mb for r in recs),
                      baseline="spec STL" if mode == "spec" else "our STL (mean over seeds)", note=note,
                      peak_memory_kinds=tuple(sorted({r.peak_memory_kind for r in recs if r.peak_memory_kind})))


def summarise(records: Records, baseline: str = "auto",
              published: Mapping[str, Mapping[str, float]] | None = None) -> list[SummaryRow]:
    """Summary rows: ours (mean +- std over seeds), then the published rows of the same benchmarks.

    Args:
        records: (benchmark, method) -> seed -> record (see :func:`~libmtl_repmtl.harness.runs.collect`).
        baseline: ``spec`` (Δp from the runs' results), ``stl`` (against our single-task runs' mean over seeds)
            or ``auto`` (``spec`` where the benchmark declares a baseline, else ``stl``).
        published: benchmark -> method -> published Δp_task.
    """
    if baseline not in {"auto", "spec", "stl"}:
        raise ValueError(f"baseline must be auto, spec or stl, got {baseline!r}")
    rows: list[SummaryRow] = []
    pub_by_key = {canonical_name(k): v for k, v in (published or {}).items()}
    for b in dict.fromkeys(b for b, _ in records):
        mode = baseline if baseline != "auto" else ("spec" if has_baseline(b) else "stl")
        stl_base = _stl_baseline(records, b) if mode == "stl" else None
        note = "no STL runs: Δp not available" if mode == "stl" and stl_base is None else ""
        rows += [_ours(b, m, seeds, mode, stl_base, note) for (bb, m), seeds in records.items() if bb == b]
        for m, v in pub_by_key.get(canonical_name(b), {}).items():
            rows.append(SummaryRow(b, m, "published", 3, {}, (v, float("nan")), None, None, None,
                                   baseline="paper's STL", note="Rep-MTL paper, mean of 3 runs"))
    return rows


def _fmt(ms: MeanStd | None, digits: int = 2, seeds: int = 2) -> str:
    """``mean ± std``; the mean alone with fewer than 2 seeds or no std (published rows)."""
    if ms is None:
        return "–"
    mean, std = ms
    if math.isnan(std):
        return f"{mean:+.{digits}f}" if digits == 2 else f"{mean:.{digits}f}"
    if seeds < 2:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _fmt_dp(ms: MeanStd | None, seeds: int = 2) -> str:
    if ms is None:
        return "–"
    mean, std = ms
    return f"{mean:+.2f}" if math.isnan(std) or seeds < 2 else f"{mean:+.2f} ± {std:.2f}"


def method_settings(method: str) -> str:
    """One line saying what a grid method runs: weighting, architecture and, for Rep-MTL, every setting."""
    spec = method_spec(method)
    if spec.single_task:
        return f"one {spec.weighting} / {spec.arch} run per task, each training only that task"
    if spec.settings:
        return f"weighting {spec.weighting}, architecture {spec.arch}, {spec.settings}"
    rep = " with rep_grad (it reads the representation's gradients)" if spec.rep_grad else ""
    return f"weighting {spec.weighting}, architecture {spec.arch}{rep}, LibMTL's default settings"


def _table(out: io.StringIO, brows: Sequence[SummaryRow]) -> None:
    ours = [r for r in brows if r.source == "ours"]
    keys = list(dict.fromkeys(k for r in ours for k in r.metrics))
    head = ["method", "source", "seeds", *keys, "Δp_task", "Δp_metric", "s / epoch", "peak MiB"]
    out.write("| " + " | ".join(head) + " |\n")
    out.write("|" + "|".join("---" for _ in head) + "|\n")
    for r in brows:
        cells = [r.method if r.source == "ours" else f"{r.method} (published)", r.source, str(r.n_seeds)]
        n = r.n_seeds
        cells += [_fmt(r.metrics.get(k), 4 if abs(r.metrics.get(k, (1, 0))[0]) < 1 else 2, n) for k in keys]
        cells += [_fmt_dp(r.delta_p_task, n), _fmt_dp(r.delta_p_metric, n), _fmt(r.seconds_per_epoch, 2, n),
                  _fmt(r.peak_memory_mb, 1, n)]
        out.write("| " + " | ".join(cells) + " |\n")
    out.write("\n")


def _memory_note(ours: Sequence[SummaryRow]) -> str:
    kinds = sorted({k for r in ours for k in r.peak_memory_kinds})
    return ("Peak MiB: each run's own peak memory during its training over what was in memory when its training "
            "started (gradients, optimiser state, activations, the weighting's buffers, batches; not the model's "
            "parameters, the data already loaded or the process itself, the same for every method), measured in "
            "the run even where the runs share a process (on the CPU the first run of a process also counts the "
            "code and buffers first used then); STL: the largest of its per-task runs. Measured as "
            + ("; ".join(f"*{k}*" for k in kinds) if kinds else "*not recorded*") + ".")


def render_markdown(rows: Sequence[SummaryRow], header: str = "", problems: Sequence[str] = ()) -> str:
    """The summary as Markdown: one table per benchmark, published rows marked."""
    out = io.StringIO()
    out.write("# Benchmark summary\n\n")
    if header:
        out.write(header.rstrip() + "\n\n")
    ours = [r for r in rows if r.source == "ours"]
    spread = ("mean ± std over seeds" if any(r.n_seeds >= 2 for r in ours) else "one seed per method (no spread)")
    out.write(f"Test metrics at the best epoch (chosen on validation), {spread}. Δp in percent against the "
              "single-task baseline named per table; higher is better.")
    if any(r.source == "published" for r in rows):
        out.write(" Rows marked *published* are the Rep-MTL paper's Δp_task (mean of 3 runs), not ours.")
    out.write("\n\n" + _memory_note(ours))
    out.write("\n\n## Methods\n\n")
    for m in dict.fromkeys(r.method for r in ours):
        out.write(f"- `{m}`: {method_settings(m)}\n")
    out.write("\n")
    for b in dict.fromkeys(r.benchmark for r in rows):
        brows = [r for r in rows if r.benchmark == b]
        ours = [r for r in brows if r.source == "ours"]
        out.write(f"## {b}\n\nΔp baseline: {next((r.baseline for r in ours), '')}.\n\n")
        for n in {r.note for r in ours if r.note}:
            out.write(f"Note: {n}.\n\n")
        _table(out, brows)
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


def write_summary(grid: Sequence[RunSpec], out: Path, baseline: str = "auto", header: str = "",
                  outcomes: Sequence[Outcome] = ()) -> tuple[list[SummaryRow], list[Path]]:
    """Collect the grid's results and write ``summary.md``, ``summary.csv`` and the plots into ``out``.

    Returns:
        The summary rows and the paths of every file written (the plots only where there was something to plot).
    """
    records, problems = collect(grid)
    failed = {o.run.label: o.error for o in outcomes if o.status == "failed"}
    problems = [p + (f" — {failed[p.split(':')[0]]}" if p.split(":")[0] in failed else "") for p in problems]
    rows = summarise(records, baseline, published_rows())
    written = [atomic_write_text(out / "summary.md", render_markdown(rows, header, problems)),
               atomic_write_text(out / "summary.csv", render_csv(rows))]
    written += plot_summary(rows, out)
    return rows, written


__all__ = ["SummaryRow", "delta_p", "has_baseline", "method_settings", "published_rows", "render_csv",
           "render_markdown", "summarise", "write_summary"]
