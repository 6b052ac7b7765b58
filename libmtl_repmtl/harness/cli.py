"""``libmtl-repmtl bench``: the comparison harness (benchmark x method x seed grid).

Each run goes through the trainer (``libmtl_repmtl.training.run_experiment``) into its own folder
``OUT/<benchmark>/<method>/seed<k>/`` (single-task runs: ``OUT/<benchmark>/STL/seed<k>/<task>/``, one run per
task). The grid is resumable: a run whose ``results.json`` is complete (all requested epochs) is skipped, and
the command says so; a folder whose run (finished, or to be resumed) was trained with other settings than the
grid asks for (another option, seed or method setting: :mod:`libmtl_repmtl.training.settings`) is refused before
anything runs, ``--dry-run`` too, listing each folder with its differing settings.

Methods: any LibMTL weighting (``EW``, ``UW``, ``MGDA``, ...; architecture ``HPS``), the Rep-MTL presets of
``libmtl_repmtl.core.presets`` (architecture ``RepHPS``): ``RepMTL`` (the defaults), ``RepMTL-paper`` (the
paper's literal numbers), the ablations ``RepMTL-CSA`` / ``RepMTL-TSR``, ``logEW`` (both terms off) and
``RepMTL-small`` (both lambdas 0.1, ``tau = 1``), each optionally with inline settings
(``"RepMTL[lambda_tsr=0.1,tau=1]"``: its own folder and table row, named by its canonical label), ``STL``
(single-task runs) and ``all``: every weighting the installed LibMTL and the plugins have (asked through the plugin
host; the git version's bilevel methods, which have no weighting class, are left out and the command says so).
The ``paper`` suite adds DB_MTL, Nash_MTL, FairGrad, Aligned_MTL and STCH where the installed LibMTL has them.
Every method is parsed and checked before anything runs, and so are ``--option``, ``--dataset_path`` and
``--seeds`` (:mod:`libmtl_repmtl.harness.flags`).

Outputs (written atomically): ``OUT/summary.md``, ``OUT/summary.csv`` (per benchmark and method: mean +- std
over seeds of every test metric at the best epoch, Δp_task, Δp_metric, seconds per epoch, peak memory,
number of seeds; ± only with 2 or more seeds; each method's settings; the paper's published Δp_task rows beside
ours, marked ``published``, where the benchmark has them), and PNG plots ``OUT/delta_p.png`` (Δp_task with
error bars, STL a marker at 0) and ``OUT/delta_p_vs_time.png``. Every benchmark and method is checked before
anything runs (``--dry-run`` too), and the command lists only the files it wrote.

Δp baselines (``--baseline``): ``spec`` (the benchmark's published single-task row, as computed by the trainer),
``stl`` (our own single-task runs' mean over seeds), ``auto`` (default: ``spec`` where the benchmark has a
published baseline, else ``stl``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from libmtl_repmtl.benchmarks import UnknownBenchmarkError, get
from libmtl_repmtl.core.presets import PRESETS
from libmtl_repmtl.harness.execute import Runner, execute, refuse_settings_conflicts
from libmtl_repmtl.harness.flags import check_seeds, check_weight_args, parse_dataset_paths, parse_options
from libmtl_repmtl.harness.methods import ALL, all_weightings, left_out_of_all, method_specs
from libmtl_repmtl.harness.plan import SUITES, RunSpec, benchmark_options, plan_grid, suite_methods
from libmtl_repmtl.harness.report import write_summary
from libmtl_repmtl.harness.runs import is_complete
from libmtl_repmtl.harness.selection_report import write_selection
from libmtl_repmtl.harness.verdict import write_verdict
from libmtl_repmtl.libmtl.capabilities import resolve_architecture, resolve_weighting
from libmtl_repmtl.training.experiment import run_experiment


def _methods_from(path: str, top: int | None) -> list[str]:
    """The methods listed in ``path`` (one per line), the first ``top`` of them when given."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise SystemExit(f"error: --methods-from {path}: cannot read it ({exc.strerror or exc})") from None
    methods = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not methods:
        raise SystemExit(f"error: --methods-from {path}: the file lists no method")
    if top is not None:
        if top < 1:
            raise SystemExit(f"error: --top must be at least 1, got {top}")
        methods = methods[:top]
    return methods


def build_parser() -> argparse.ArgumentParser:
    """The ``bench`` command's argument parser."""
    p = argparse.ArgumentParser(prog="libmtl-repmtl bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=sorted(SUITES), help="a predefined grid (flags below override its parts)")
    p.add_argument("--benchmarks", nargs="+", help="benchmark names (e.g. multimnist digits nyuv2)")
    p.add_argument("--methods", nargs="+",
                   help=f"LibMTL weightings (EW, MGDA, ...), Rep-MTL presets ({', '.join(PRESETS)}), a preset with "
                        "inline settings (quoted: \"RepMTL[lambda_tsr=0.1,tau=1]\"), STL (single-task runs), all "
                        "(every weighting the installed LibMTL and plugins have)")
    p.add_argument("--methods-from", "--methods_from", metavar="FILE",
                   help="read further methods from FILE, one per line (e.g. a sweep's selection_top.txt; blank "
                        "lines and lines starting with # are skipped); with --methods, those come first")
    p.add_argument("--top", type=int, metavar="N", help="with --methods-from: only its first N methods")
    p.add_argument("--seeds", nargs="+", type=int,
                   help="training seeds, each once, from 0 to 2**32-1 (NumPy's range)")
    p.add_argument("--epochs", type=int, help="epochs for every benchmark (default: the suite's / benchmark's)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--out", default="bench_out", help="output folder (default ./bench_out)")
    p.add_argument("--dataset_path", "--dataset-path", nargs="*", default=[], metavar="BENCHMARK=PATH",
                   help="dataset root per benchmark of the grid, e.g. nyuv2=/data/nyuv2 (the benchmark named as "
                        "in --benchmarks, case, - and _ ignored; each once; an existing folder)")
    p.add_argument("--baseline", choices=["auto", "spec", "stl"], default="auto",
                   help="Δp baseline: the benchmark's published single-task row, our STL runs, or auto (the "
                        "published row where the benchmark has one, else stl)")
    p.add_argument("--option", nargs="*", default=[], metavar="KEY=VALUE",
                   help="extra run_experiment options for every run (JSON values, e.g. batch_size=32), each key "
                        "once; keys bench sets itself are refused with the flag to use (seed: --seeds, epochs: "
                        "--epochs, device: --device, ...); weight_args (a JSON object) only with methods without "
                        "settings of their own (EW, MGDA, ...; Rep-MTL's go inline: \"RepMTL[tau=0.5]\")")
    p.add_argument("--dry-run", action="store_true", help="list the grid (and what is already done) and exit")
    p.add_argument("--summary-only", action="store_true", help="only (re)write the summary from existing runs")
    p.add_argument("--select", action=argparse.BooleanOptionalAction, default=None,
                   help="also score the grid on the validation splits and choose a Rep-MTL setting by the "
                        "pre-registered rule (selection.md, selection.csv, selection_top.txt, "
                        "selection_heatmap.png); default: on for sweep suites")
    p.add_argument("--verdict", action=argparse.BooleanOptionalAction, default=None,
                   help="also write verdict.md (RepMTL against logEW by the seed-spread rule, and the ablation "
                        "table); default: on for the cpu and ablation-cpu suites")
    return p


def _validate(benchmarks: Sequence[str], methods: Sequence[str]) -> None:
    """Refuse (``SystemExit`` naming the problem) an unknown benchmark, a method name that is no method, or
    a method whose weighting or architecture the installed LibMTL and plugins do not have: before any run,
    also for ``--dry-run``."""
    for b in benchmarks:
        try:
            get(b)
        except UnknownBenchmarkError as exc:
            raise SystemExit(f"error: --benchmarks: {exc}") from None
    try:
        specs = method_specs(methods)
    except ValueError as exc:
        raise SystemExit(f"error: --methods: {exc}") from None
    for spec in specs:
        try:
            resolve_weighting(spec.weighting)
            resolve_architecture(spec.arch)
        except ValueError as exc:
            raise SystemExit(f"error: --methods {spec.name}: {exc}") from None


def resolve_grid(args: argparse.Namespace) -> tuple[list[RunSpec], dict[str, Any]]:
    """The grid the parsed flags describe, plus a description of it."""
    suite = SUITES[args.suite] if args.suite else None
    benchmarks = args.benchmarks or (list(suite.benchmarks) if suite else None)
    methods = list(args.methods or [])
    if args.methods_from:
        methods += _methods_from(args.methods_from, args.top)
    elif args.top is not None:
        raise SystemExit("error: --top needs --methods-from")
    methods = methods or (list(suite_methods(suite)) if suite else None)
    seeds = args.seeds or (list(suite.seeds) if suite else [0])
    if not benchmarks or not methods:
        raise SystemExit("error: give --suite, or --benchmarks and --methods")
    _validate(benchmarks, methods)
    seeds = check_seeds(seeds)
    extra = parse_options(args.option)
    check_weight_args(extra, {s.name: s.weight_args for s in method_specs(methods)})
    dataset_paths = parse_dataset_paths(args.dataset_path, benchmarks)
    options: dict[str, dict[str, Any]] = {}
    for b in benchmarks:
        o = dict(suite.options.get(b, {})) if suite else {}
        o.update(extra)
        if args.epochs is not None:
            o["epochs"] = args.epochs
        options[b] = o
    try:
        grid = plan_grid(benchmarks, methods, seeds, Path(args.out), options)
        options = benchmark_options(benchmarks, options)  # what each benchmark's runs get, for the summary
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    select = args.select if args.select is not None else bool(suite and suite.select)
    verdict = args.verdict if args.verdict is not None else bool(suite and suite.verdict)
    return grid, {"benchmarks": benchmarks, "methods": [s.name for s in method_specs(methods)], "seeds": seeds,
                  "options": options, "select": select, "verdict": verdict, "dataset_paths": dataset_paths}


def _all_note(methods: Sequence[str]) -> str:
    """What ``all`` stood for and what it left out (``""`` without ``all``)."""
    if ALL not in (m.strip() for m in methods):
        return ""
    left = left_out_of_all()
    return (f"--methods all: {', '.join(all_weightings())}"
            + ("; left out: " + "; ".join(f"{n} ({why})" for n, why in left.items()) if left else ""))


def _dry_run(grid: Sequence[RunSpec], out: Path) -> int:
    done = [r for r in grid if is_complete(r.save_path, r.options.get("epochs"))]
    print(f"grid: {len(grid)} runs ({len(done)} already complete) -> {out}")
    for r in grid:
        state = "done" if r in done else "todo"
        print(f"  [{state}] {r.label:<40} weighting={r.weighting} arch={r.arch} options={r.options}")
    return 0


def main(argv: Sequence[str] | None = None, runner: Runner = run_experiment) -> int:
    """``libmtl-repmtl bench [--suite NAME] [--benchmarks ...] [--methods ...] [--seeds ...] [--out DIR] ...``.

    ``runner`` is ``run_experiment``; tests pass a wrapper of it (e.g. one that fails for one method)."""
    args = build_parser().parse_args(argv)
    grid, desc = resolve_grid(args)
    out = Path(args.out)
    note = _all_note(args.methods or [])
    if note:
        print(note)
    if not args.summary_only:
        try:  # a finished run trained with other settings is neither reused nor overwritten (--dry-run too)
            refuse_settings_conflicts(grid, desc["dataset_paths"], args.device)
        except ValueError as exc:
            raise SystemExit(f"error: {exc}") from None
    if args.dry_run:
        return _dry_run(grid, out)
    t0 = time.perf_counter()
    outcomes = []
    if not args.summary_only:
        done = sum(is_complete(r.save_path, r.options.get("epochs")) for r in grid)
        if done:
            print(f"resuming: {done} of {len(grid)} runs already complete, skipping them")
        given = runner.__qualname__ + " (given)"
        print(f"runner: {'libmtl_repmtl.training.run_experiment' if runner is run_experiment else given}")
        outcomes = execute(grid, desc["dataset_paths"], args.device, runner=runner)
    wall = time.perf_counter() - t0
    failed = [o for o in outcomes if o.status == "failed"]
    header = (f"Grid: benchmarks {desc['benchmarks']}, methods {desc['methods']}, seeds {desc['seeds']}, "
              f"options {desc['options']}, device {args.device}, baseline {args.baseline}"
              + ("." if args.summary_only else f", wall clock {wall:.0f} s."))
    rows, written = write_summary(grid, out, args.baseline, header, outcomes)
    if desc["verdict"]:
        written.append(write_verdict(rows, out, header=header))
    if desc["select"]:
        choice, files = write_selection(grid, out, header)
        written += files
        print(f"selection (validation, pre-registered rule): {choice.chosen if choice else 'none, see selection.md'}")
    print(f"ran {sum(o.status == 'ran' for o in outcomes)}, skipped {sum(o.status == 'skipped' for o in outcomes)} "
          f"(already complete), failed {len(failed)} in {wall:.1f}s; wrote {', '.join(str(p) for p in written)}")
    for o in failed:
        print(f"  failed: {o.run.label}: {o.error}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
