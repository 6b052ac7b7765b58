"""Running a planned grid: every incomplete run through :func:`libmtl_repmtl.training.run_experiment` (the one
training path), sequentially; a failing run is recorded, not fatal. Finished runs are skipped, interrupted ones
resumed from their ``last.pt``, but only when they were trained with the settings the grid asks for
(:func:`settings_conflicts`, :mod:`libmtl_repmtl.training.settings`): a folder holding a run trained with other
settings is refused before anything runs. Each run's peak memory is its own (the trainer measures it from the
start of its training: :mod:`libmtl_repmtl.training.memory`), although the runs share this process."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from libmtl_repmtl.harness.plan import RunSpec
from libmtl_repmtl.harness.runs import is_complete, read_complete
from libmtl_repmtl.training.experiment import planned_settings, run_experiment
from libmtl_repmtl.training.io import atomic_write_text
from libmtl_repmtl.training.results import ResultsFileError, read_results
from libmtl_repmtl.training.settings import NOT_RECORDED, describe_differences, setting_differences

Runner = Callable[..., Any]


@dataclass
class Outcome:
    """What happened to one run: ``ran``, ``skipped`` (already complete) or ``failed``."""

    run: RunSpec
    status: str
    seconds: float = 0.0
    error: str = ""


class SettingsConflictError(ValueError):
    """Run folders of the grid hold runs trained with other settings than the grid asks for."""


@dataclass(frozen=True)
class SettingsConflict:
    """A planned run whose folder holds a run trained with other settings: setting -> (recorded, planned)."""

    run: RunSpec
    differences: dict[str, tuple[Any, Any]]


def run_arguments(run: RunSpec, dataset_path: str | None, device: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The positional and keyword arguments the runner gets for ``run`` (``resume`` aside)."""
    return (run.benchmark, run.weighting, run.arch, dataset_path, str(run.save_path)), {"device": device,
                                                                                         **run.options}


def _recorded_config(run: RunSpec) -> dict[str, Any] | None:
    """The configuration recorded in the run's folder when the grid would reuse that run (skip it as finished,
    or resume it from its ``last.pt``); ``None`` when it would train afresh or the results record none."""
    res = read_complete(run.save_path, run.options.get("epochs"))
    if res is None:
        if not (run.save_path / "last.pt").exists():
            return None
        try:
            res = read_results(run.save_path / "results.json")
        except ResultsFileError:
            return None
    return dict(res.config) or None  # no configuration: results written by another runner than run_experiment


def settings_conflicts(grid: Sequence[RunSpec], dataset_paths: Mapping[str, str | None] | None = None,
                       device: str = "cpu") -> list[SettingsConflict]:
    """The runs of the grid whose folder holds a run it would reuse (finished, or to resume) that was trained with
    other training settings than ``run_experiment`` would record for the planned run
    (:func:`~libmtl_repmtl.training.experiment.planned_settings`, compared by
    :func:`~libmtl_repmtl.training.settings.setting_differences`).

    Raises:
        ValueError: a planned run's arguments that ``run_experiment`` refuses (the message names the run).
    """
    out = []
    for run in grid:
        recorded = _recorded_config(run)
        if recorded is None:
            continue
        args, kwargs = run_arguments(run, (dataset_paths or {}).get(run.benchmark), device)
        try:
            planned = planned_settings(*args, **kwargs)
        except ValueError as exc:
            raise ValueError(f"{run.label}: {exc}") from None
        # A setting the run recorded that this version does not record for the planned run is no setting of it
        # any more (runs of the previous version record aug and encoder for the CPU benchmarks, which never read
        # them); a planned setting the run lacks still differs.
        diffs = {k: v for k, v in setting_differences(recorded, planned).items() if v[1] != NOT_RECORDED}
        if diffs:
            out.append(SettingsConflict(run, diffs))
    return out


def refuse_settings_conflicts(grid: Sequence[RunSpec], dataset_paths: Mapping[str, str | None] | None = None,
                              device: str = "cpu") -> None:
    """Raise :class:`SettingsConflictError` listing every :func:`settings_conflicts` folder and what to do."""
    conflicts = settings_conflicts(grid, dataset_paths, device)
    if not conflicts:
        return
    lines = [f"  {c.run.save_path}: {describe_differences(c.differences, 'recorded', 'this grid')}"
             for c in conflicts]
    raise SettingsConflictError(
        f"{len(conflicts)} run folder(s) hold a run trained with other settings than this grid asks for; it would "
        "be skipped (or resumed) and reported under this grid's settings:\n" + "\n".join(lines)
        + "\nUse another --out for these settings, or delete those folders to train them again with these "
          "settings (or rerun with the options they were trained with). Nothing was run.")


def _run_one(run: RunSpec, runner: Runner, dataset_path: str | None, device: str,
             log: Callable[[str], None]) -> Outcome:
    epochs = run.options.get("epochs")
    run.save_path.mkdir(parents=True, exist_ok=True)
    extra: dict[str, Any] = {}
    if (run.save_path / "last.pt").exists():
        extra["resume"] = True  # an interrupted run continues from its last epoch
        log("    resuming from last.pt")
    args, kwargs = run_arguments(run, dataset_path, device)
    t0 = time.perf_counter()
    try:
        runner(*args, **kwargs, **extra)
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
    """Run every incomplete run of the grid with ``runner`` (``run_experiment``; tests pass a wrapper of it),
    skipping the finished ones.

    Raises:
        SettingsConflictError: before anything runs, when a folder holds a run trained with other settings
            (:func:`refuse_settings_conflicts`).
    """
    refuse_settings_conflicts(grid, dataset_paths, device)
    outcomes = []
    for i, run in enumerate(grid, 1):
        if is_complete(run.save_path, run.options.get("epochs")):
            log(f"[{i}/{len(grid)}] skip {run.label}: already complete")
            outcomes.append(Outcome(run, "skipped"))
            continue
        log(f"[{i}/{len(grid)}] run  {run.label} ({run.weighting}, {run.arch})")
        outcomes.append(_run_one(run, runner, (dataset_paths or {}).get(run.benchmark), device, log))
    return outcomes


__all__ = ["Outcome", "Runner", "SettingsConflict", "SettingsConflictError", "execute", "refuse_settings_conflicts",
           "run_arguments", "settings_conflicts"]
