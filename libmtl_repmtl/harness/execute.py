"""Running a planned grid: every incomplete run through :func:`libmtl_repmtl.training.run_experiment` (the one
training path), sequentially; a failing run is recorded, not fatal. Finished runs are skipped, interrupted ones
resumed from their ``last.pt``. Each run's peak memory is its own (the trainer measures it from the start of its
training: :mod:`libmtl_repmtl.training.memory`), although the runs share this process."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from libmtl_repmtl.harness.plan import RunSpec
from libmtl_repmtl.harness.runs import is_complete
from libmtl_repmtl.training.experiment import run_experiment
from libmtl_repmtl.training.io import atomic_write_text

Runner = Callable[..., Any]


@dataclass
class Outcome:
    """What happened to one run: ``ran``, ``skipped`` (already complete) or ``failed``."""

    run: RunSpec
    status: str
    seconds: float = 0.0
    error: str = ""


def _run_one(run: RunSpec, runner: Runner, dataset_path: str | None, device: str,
             log: Callable[[str], None]) -> Outcome:
    epochs = run.options.get("epochs")
    run.save_path.mkdir(parents=True, exist_ok=True)
    extra: dict[str, Any] = {}
    if (run.save_path / "last.pt").exists():
        extra["resume"] = True  # an interrupted run continues from its last epoch
        log("    resuming from last.pt")
    t0 = time.perf_counter()
    try:
        runner(run.benchmark, run.weighting, run.arch, dataset_path, str(run.save_path), device=device,
               **run.options, **extra)
    except Exception as exc:  # noqa: BLE001 - one failing method must not stop the grid
        err = f"{type(exc).__name__}: {exc}"
        atomic_write_text(run.save_path / "error.txt", traceback.format_exc())
        log(f"    FAILED {run.label}: {err}")
        return Outcome(run, "failed", time.perf_counter() - t0, err)
    dt = time.perf_counter() - t0
    if not is_complete(run.save_path, epochs):
        log(f"    FAILED {run.label}: results.json not complete")
        return Outcome(run, "failed", dt, "run returned but results.json is not complete")
    (run.save_path / "error.txt").unlink(missing_ok=True)
    log(f"    done in {dt:.1f}s")
    return Outcome(run, "ran", dt)


def execute(grid: Sequence[RunSpec], dataset_paths: Mapping[str, str | None] | None = None, device: str = "cpu",
            log: Callable[[str], None] = print, runner: Runner = run_experiment) -> list[Outcome]:
    """Run every incomplete run of the grid with ``runner`` (``run_experiment``; tests pass a wrapper of it)."""
    outcomes = []
    for i, run in enumerate(grid, 1):
        if is_complete(run.save_path, run.options.get("epochs")):
            log(f"[{i}/{len(grid)}] skip {run.label}: already complete")
            outcomes.append(Outcome(run, "skipped"))
            continue
        log(f"[{i}/{len(grid)}] run  {run.label} ({run.weighting}, {run.arch})")
        outcomes.append(_run_one(run, runner, (dataset_paths or {}).get(run.benchmark), device, log))
    return outcomes


__all__ = ["Outcome", "Runner", "execute"]
