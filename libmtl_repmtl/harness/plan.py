"""Planning a grid: the named suites and the list of trainer runs (benchmark x method x seed [x task]).

Each run has its own folder ``OUT/<benchmark>/<method>/seed<k>/`` (single-task runs:
``OUT/<benchmark>/STL/seed<k>/<task>/``, one run per task).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from libmtl_repmtl.benchmarks import get
from libmtl_repmtl.harness.flags import PASSED_KEYS
from libmtl_repmtl.harness.methods import installed, method_specs
from libmtl_repmtl.training.options import split_grid_options

#: The CPU benchmarks (real MNIST digits; encoders pretext-pretrained by default).
CPU_BENCHMARKS = ("multimnist", "digits", "densemnist")

#: Methods of the full CPU suite: LibMTL's methods, EW on log losses (logEW, the fair baseline of every Rep-MTL
#: setting), Rep-MTL's defaults, its literal paper reading and its two ablations, and single-task training.
CPU_METHODS = ("EW", "logEW", "UW", "DWA", "MGDA", "PCGrad", "CAGrad", "IMTL", "GradVac", "RepMTL", "RepMTL-paper",
               "RepMTL-CSA", "RepMTL-TSR", "STL")

#: Epochs of the CPU suites per benchmark: the sweep and the verdict run the same short schedule (docs/method.md,
#: "Choosing the defaults"), so the setting is chosen in the regime it is judged in.
CPU_EPOCHS = {"multimnist": {"epochs": 3}, "digits": {"epochs": 3}, "densemnist": {"epochs": 3}}


def sweep_methods() -> tuple[str, ...]:
    """The pre-registered sweep (docs/method.md, "Choosing the defaults"): ``lambda_tsr`` and
    ``lambda_csa`` in {0, 0.1, 0.3, 0.9}, ``tau`` in {0.1, 0.5, 1}, ``csa_form`` in {printed, infonce}, each
    distinct setting once (with ``lambda_csa = 0`` tau and the form change nothing: 4 + 12 x 6 = 76 settings; both
    lambdas 0 is ``logEW``), then EW and STL."""
    lambdas = (0.0, 0.1, 0.3, 0.9)
    grid = ["logEW", *(f"RepMTL[lambda_tsr={t:g},lambda_csa=0]" for t in lambdas[1:])]
    grid += [f"RepMTL[lambda_tsr={t:g},lambda_csa={c:g},tau={tau:g},csa_form={form}]"
             for t in lambdas for c in lambdas[1:] for tau in (0.1, 0.5, 1.0) for form in ("printed", "infonce")]
    return (*grid, "EW", "STL")


@dataclass(frozen=True)
class Suite:
    """A named grid: benchmarks, methods, seeds and per-benchmark options (e.g. ``epochs``); ``select``: the
    grid is a sweep, scored on validation and the setting chosen by the rule
    (:mod:`~libmtl_repmtl.harness.selection`); ``verdict``: the report adds ``verdict.md`` (RepMTL against logEW,
    and the ablation: :mod:`~libmtl_repmtl.harness.verdict`); ``where_installed``: weightings added where the
    installed LibMTL has them (:func:`suite_methods`)."""

    benchmarks: tuple[str, ...]
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    select: bool = False
    verdict: bool = False
    where_installed: tuple[str, ...] = ()


SUITES: dict[str, Suite] = {
    # The verdict's grid: fresh seeds (the sweep uses 0-3), tested on the test splits.
    "cpu": Suite(CPU_BENCHMARKS, CPU_METHODS, (100, 101, 102, 103, 104), CPU_EPOCHS, verdict=True),
    # The sweep, scored on the validation splits; the rule chooses the defaults.
    "cpu-sweep": Suite(CPU_BENCHMARKS, sweep_methods(), (0, 1), CPU_EPOCHS, select=True),
    # The README's main job: one seed, short runs, a classification and the dense benchmark.
    "cpu-quick": Suite(("multimnist", "densemnist"), ("EW", "logEW", "MGDA", "RepMTL", "STL"), (0,),
                       {"multimnist": {"epochs": 3}, "densemnist": {"epochs": 3}}),
    "ablation-cpu": Suite(CPU_BENCHMARKS, ("EW", "logEW", "RepMTL", "RepMTL-CSA", "RepMTL-TSR", "STL"), (0, 1, 2),
                          CPU_EPOCHS, verdict=True),
    # The paper's benchmarks with every method LibMTL 1.1.5 ships, Rep-MTL and its ablations, and the paper's
    # strongest baselines where the installed LibMTL has them (its git version; 1.1.5 has none of them); Δp
    # against the benchmarks' published single-task rows.
    "paper": Suite(("nyuv2", "cityscapes", "office-31", "office-home"),
                   ("EW", "UW", "DWA", "GLS", "RLW", "MGDA", "GradNorm", "PCGrad", "GradDrop", "GradVac", "IMTL",
                    "CAGrad", "RepMTL", "RepMTL-CSA", "RepMTL-TSR"), (0, 1, 2),
                   where_installed=("DB_MTL", "Nash_MTL", "FairGrad", "Aligned_MTL", "STCH")),
}


def suite_methods(suite: Suite) -> tuple[str, ...]:
    """The suite's methods, then those of its ``where_installed`` that the installed LibMTL has (asked through
    the plugin host when the grid is planned: :func:`libmtl_repmtl.harness.methods.installed`)."""
    return (*suite.methods, *(m for m in suite.where_installed if installed(m)))


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
    """Task names of a registered benchmark.

    Raises:
        ValueError: unknown benchmark (the message lists the registered ones).
    """
    return list(get(benchmark).tasks)


def benchmark_options(benchmarks: Sequence[str], options: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """benchmark -> what its runs get of ``options[benchmark]``: the run options it reads, checked and coerced
    (:func:`~libmtl_repmtl.training.options.split_grid_options`), plus ``run_experiment``'s own keywords that
    ``--option`` hands to every run as they are (:data:`~libmtl_repmtl.harness.flags.PASSED_KEYS`).

    Raises:
        ValueError: an option no benchmark of the grid reads, or a bad value.
    """
    given = {b: dict(options.get(b, {})) for b in benchmarks}
    passed = {b: {k: opts.pop(k) for k in list(opts) if k in PASSED_KEYS} for b, opts in given.items()}
    read = split_grid_options([get(b) for b in benchmarks], {get(b).name: given[b] for b in benchmarks})
    return {b: {**read[get(b).name], **passed[b]} for b in benchmarks}


def plan_grid(benchmarks: Sequence[str], methods: Sequence[str], seeds: Sequence[int], out: Path,
              options: Mapping[str, Mapping[str, Any]] | None = None) -> list[RunSpec]:
    """All runs of the grid, in execution order (benchmark, method, seed, task); each method under its canonical
    label (``RepMTL[lambda_tsr=0.1,tau=1]``). Each benchmark's runs get the options of ``options[benchmark]``
    that it reads, checked and coerced (:func:`~libmtl_repmtl.training.options.split_grid_options`).

    Raises:
        ValueError: a bad or repeated method, an unknown benchmark, an option no benchmark of the grid reads or
            a bad option value.
    """
    grid = []
    specs = method_specs(methods)
    read = benchmark_options(benchmarks, options or {})
    for b in benchmarks:
        opts = dict(read[b])
        for spec in specs:
            m = spec.name
            for s in seeds:
                base = {**opts, "seed": int(s)}
                if spec.weight_args:
                    base["weight_args"] = dict(spec.weight_args)
                if spec.rep_grad:
                    base["rep_grad"] = True
                folder = out / b / m / f"seed{s}"
                if spec.single_task:
                    for t in benchmark_tasks(b):
                        grid.append(RunSpec(b, m, int(s), folder / t, spec.weighting, spec.arch,
                                            {**base, "tasks": [t]}, task=t))
                else:
                    grid.append(RunSpec(b, m, int(s), folder, spec.weighting, spec.arch, base))
    return grid


__all__ = ["CPU_BENCHMARKS", "CPU_EPOCHS", "CPU_METHODS", "SUITES", "RunSpec", "Suite", "benchmark_options",
           "benchmark_tasks", "plan_grid", "suite_methods", "sweep_methods"]
