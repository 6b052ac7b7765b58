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
from libmtl_repmtl.harness.methods import method_specs

#: Methods of the full CPU suite.
CPU_METHODS = ("EW", "UW", "DWA", "MGDA", "PCGrad", "CAGrad", "IMTL", "GradVac", "RepMTL", "STL")


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
    # Aligned-MTL), Rep-MTL and its ablations; Δp against the benchmarks' published single-task rows.
    "paper": Suite(("nyuv2", "cityscapes", "office-31", "office-home"),
                   ("EW", "UW", "DWA", "GLS", "RLW", "MGDA", "GradNorm", "PCGrad", "GradDrop", "GradVac", "IMTL",
                    "CAGrad", "RepMTL", "RepMTL-CSA", "RepMTL-TSR"), (0, 1, 2)),
}


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


def plan_grid(benchmarks: Sequence[str], methods: Sequence[str], seeds: Sequence[int], out: Path,
              options: Mapping[str, Mapping[str, Any]] | None = None) -> list[RunSpec]:
    """All runs of the grid, in execution order (benchmark, method, seed, task); each method under its canonical
    label (``RepMTL[lambda_tsr=0.1,tau=1]``).

    Raises:
        ValueError: a bad or repeated method, an unknown benchmark.
    """
    grid = []
    specs = method_specs(methods)
    for b in benchmarks:
        opts = dict((options or {}).get(b, {}))
        for spec in specs:
            m = spec.name
            for s in seeds:
                base = {**opts, "seed": int(s)}
                if spec.weight_args:
                    base["weight_args"] = dict(spec.weight_args)
                folder = out / b / m / f"seed{s}"
                if spec.single_task:
                    for t in benchmark_tasks(b):
                        grid.append(RunSpec(b, m, int(s), folder / t, spec.weighting, spec.arch,
                                            {**base, "tasks": [t]}, task=t))
                else:
                    grid.append(RunSpec(b, m, int(s), folder, spec.weighting, spec.arch, base))
    return grid


__all__ = ["CPU_METHODS", "SUITES", "RunSpec", "Suite", "benchmark_tasks", "plan_grid"]
