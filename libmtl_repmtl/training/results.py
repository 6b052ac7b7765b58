"""The ``results.json`` contract: one typed, versioned record of a run, written by the trainer, read by the harness.

A file holds :meth:`RunResults.to_dict` as strict JSON (non-finite numbers as ``null``). Its ``format`` key is
:data:`RESULTS_FORMAT` (``"libmtl_repmtl.results/<SCHEMA_VERSION>"``). :func:`read_results` accepts only that
version and only a file whose every key is one the contract defines with a value of the right type, and
whose summary keys (``complete``, ``epochs_done``, ``test_at_best``, ``delta_p_task``, ...) agree with the
per-epoch records they are derived from; anything else raises :class:`ResultsFileError` naming the file.

Layout (``T`` tasks, metric values ``float | None``)::

    RunResults
      status, error, config, benchmark, weighting, arch, tasks, device
      metric_names      task -> [metric, ...]
      higher_better     task -> metric -> bool
      baseline          Baseline(source, values: task -> metric -> value | None)
      epochs            [EpochRecord, ...]   (epoch, train/val/test losses and metrics, seconds, lr,
                                              task_weights, delta_p: split -> DeltaP, peak_memory_mb, repmtl)
      epochs_total, best_epoch, best_epoch_selection, peak_memory_mb, peak_memory_kind
      derived (properties): complete, epochs_done, last_epoch, test_at_best, test_at_last, delta_p_task,
        delta_p_metric, delta_p_task_last, delta_p_metric_last, delta_p (best/last), seconds_per_epoch,
        seconds_per_epoch_total, repmtl (the last epoch's diagnostics)
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Version of the results layout; a file of another version is refused by :func:`read_results`.
SCHEMA_VERSION = 1

#: The ``format`` tag of a results file of this version.
RESULTS_FORMAT = f"libmtl_repmtl.results/{SCHEMA_VERSION}"

#: Run states: ``created`` (no epoch yet), ``running``, ``complete``, ``interrupted``, ``failed``.
STATUSES = ("created", "running", "complete", "interrupted", "failed")

Scores = Mapping[str, Mapping[str, "float | None"]]  # task -> metric -> value
Losses = Mapping[str, "float | None"]  # task -> loss


class ResultsFileError(ValueError):
    """A results file that is missing, of another version, or does not follow the contract."""


@dataclass(frozen=True)
class DeltaP:
    """Δp of one split against the single-task baseline, in percent (``None``: no usable baseline)."""

    task: float | None
    metric: float | None

    def to_dict(self) -> dict[str, float | None]:
        return {"task": self.task, "metric": self.metric}


@dataclass(frozen=True)
class Baseline:
    """Where the Δp reference came from and its values (``values`` is ``None`` without a baseline)."""

    source: str | None
    values: Scores | None

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "values": _plain(self.values)}


@dataclass(frozen=True)
class EpochRecord:
    """One epoch: training losses/metrics/seconds, evaluation on val (with a val split) and test, the learning
    rates, the mean task weights, Δp per evaluated split, the peak memory so far and the weighting's epoch-mean
    diagnostics (``repmtl``: name -> number, or task -> number)."""

    epoch: int
    train_loss: Losses
    train: Scores
    train_seconds: float
    test: Scores
    test_loss: Losses
    test_seconds: float
    lr: list[float]
    delta_p: Mapping[str, DeltaP]
    peak_memory_mb: float | None
    val: Scores | None = None
    val_loss: Losses | None = None
    val_seconds: float | None = None
    task_weights: Losses | None = None
    repmtl: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"epoch": self.epoch, "train_loss": _plain(self.train_loss), "train": _plain(self.train),
                               "train_seconds": self.train_seconds}
        if self.repmtl is not None:
            out["repmtl"] = _plain(self.repmtl)
        if self.val is not None:
            out.update(val=_plain(self.val), val_loss=_plain(self.val_loss), val_seconds=self.val_seconds)
        out.update(test=_plain(self.test), test_loss=_plain(self.test_loss), test_seconds=self.test_seconds,
                   lr=list(self.lr))
        if self.task_weights is not None:
            out["task_weights"] = _plain(self.task_weights)
        out["delta_p"] = {split: dp.to_dict() for split, dp in self.delta_p.items()}
        out["peak_memory_mb"] = self.peak_memory_mb
        return out

    @property
    def total_seconds(self) -> float:
        """Training plus evaluation seconds."""
        return self.train_seconds + (self.val_seconds or 0.0) + self.test_seconds


@dataclass(frozen=True)
class RunResults:
    """A run's results (see the module docstring); :meth:`to_dict` is the ``results.json`` content."""

    status: str
    error: str | None
    config: Mapping[str, Any]
    benchmark: str | None
    weighting: str
    arch: str
    tasks: list[str]
    device: str
    metric_names: Mapping[str, list[str]]
    higher_better: Mapping[str, Mapping[str, bool]]
    baseline: Baseline
    epochs: list[EpochRecord]
    epochs_total: int | None
    best_epoch: int | None
    best_epoch_selection: str
    peak_memory_mb: float | None
    peak_memory_kind: str
    format: str = field(default=RESULTS_FORMAT)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r} is not one of {STATUSES}")
        if self.format != RESULTS_FORMAT:
            raise ValueError(f"format {self.format!r}: this contract writes {RESULTS_FORMAT!r}")

    # -------------------------------------------------------------- derived
    @property
    def complete(self) -> bool:
        return self.status == "complete"

    @property
    def epochs_done(self) -> int:
        return len(self.epochs)

    @property
    def last_epoch(self) -> int | None:
        return self.epochs[-1].epoch if self.epochs else None

    def best_record(self) -> EpochRecord | None:
        """The record of the best epoch (the last one when no best epoch was chosen; ``None`` before epoch 0)."""
        for rec in self.epochs:
            if rec.epoch == self.best_epoch:
                return rec
        return self.epochs[-1] if self.epochs else None

    @property
    def test_at_best(self) -> Scores | None:
        rec = self.best_record()
        return rec.test if rec else None

    @property
    def test_at_last(self) -> Scores | None:
        return self.epochs[-1].test if self.epochs else None

    @property
    def delta_p_best(self) -> DeltaP | None:
        """Test Δp at the best epoch (``None``: no epoch or no baseline)."""
        rec = self.best_record()
        return rec.delta_p.get("test") if rec else None

    @property
    def delta_p_last(self) -> DeltaP | None:
        """Test Δp at the last epoch."""
        return self.epochs[-1].delta_p.get("test") if self.epochs else None

    @property
    def seconds_per_epoch(self) -> float | None:
        """Mean training seconds per epoch."""
        return _mean([r.train_seconds for r in self.epochs])

    @property
    def seconds_per_epoch_total(self) -> float | None:
        """Mean seconds per epoch with evaluation."""
        return _mean([r.total_seconds for r in self.epochs])

    def to_dict(self) -> dict[str, Any]:
        """The ``results.json`` content (every key of the contract, in a fixed order)."""
        best, last = self.delta_p_best, self.delta_p_last
        out: dict[str, Any] = {
            "format": self.format, "status": self.status, "complete": self.complete, "error": self.error,
            "config": self.config, "benchmark": self.benchmark, "weighting": self.weighting, "arch": self.arch,
            "tasks": list(self.tasks), "device": self.device, "metric_names": _plain(self.metric_names),
            "higher_better": _plain(self.higher_better), "baseline": self.baseline.to_dict(),
            "epochs": [r.to_dict() for r in self.epochs], "epochs_done": self.epochs_done,
            "epochs_total": self.epochs_total, "best_epoch": self.best_epoch,
            "best_epoch_selection": self.best_epoch_selection, "last_epoch": self.last_epoch,
            "test_at_best": _plain(self.test_at_best), "test_at_last": _plain(self.test_at_last),
            "delta_p_task": best.task if best else None, "delta_p_metric": best.metric if best else None,
            "delta_p_task_last": last.task if last else None, "delta_p_metric_last": last.metric if last else None,
            "delta_p": {"best": best.to_dict() if best else None, "last": last.to_dict() if last else None},
            "seconds_per_epoch": self.seconds_per_epoch, "seconds_per_epoch_total": self.seconds_per_epoch_total,
        }
        if self.epochs and self.epochs[-1].repmtl is not None:
            out["repmtl"] = _plain(self.epochs[-1].repmtl)
        out["peak_memory_mb"] = self.peak_memory_mb
        out["peak_memory_kind"] = self.peak_memory_kind
        return out


# ---------------------------------------------------------------------------------------------- reading
def read_results(path: str | os.PathLike[str]) -> RunResults:
    """Read and check a ``results.json``.

    Raises:
        ResultsFileError: the file is missing or not JSON, has no or another ``format``, lacks a key or has one
            the contract does not define, holds a value of the wrong type, or its summary keys disagree with
            its per-epoch records. The message names the file and the fix.
    """
    p = Path(path)
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResultsFileError(f"{p}: no results file; run the experiment (or pass the run's folder)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultsFileError(f"{p}: not a readable JSON file ({exc}); rerun the experiment to rewrite it") from exc
    if not isinstance(raw, dict):
        raise ResultsFileError(f"{p}: holds a {type(raw).__name__}, not a results object; rerun the experiment")
    fmt = raw.get("format")
    if fmt != RESULTS_FORMAT:
        raise ResultsFileError(
            f"{p}: format {fmt!r}, this version reads only {RESULTS_FORMAT!r}; rerun the experiment with this "
            "version of libmtl_repmtl (or read it with the version that wrote it)")
    fix = "rerun the experiment to rewrite it (the file was edited, truncated by hand or written by other code)"
    try:
        res = _parse_run(raw)
    except KeyError as exc:
        raise ResultsFileError(f"{p}: does not follow {RESULTS_FORMAT}: missing key {exc}; {fix}") from None
    except (TypeError, ValueError) as exc:
        raise ResultsFileError(f"{p}: does not follow {RESULTS_FORMAT}: {exc}; {fix}") from None
    rewritten = json.loads(json.dumps(res.to_dict()))
    wrong = sorted(k for k in set(raw) | set(rewritten) if raw.get(k, _MISSING) != rewritten.get(k, _MISSING))
    if wrong:
        raise ResultsFileError(f"{p}: keys {wrong} are unknown or disagree with the per-epoch records; rerun the "
                               "experiment to rewrite it (the file was edited or written by other code)")
    return res


_MISSING = object()


def _parse_run(d: Mapping[str, Any]) -> RunResults:
    base = _obj(d["baseline"], "baseline")
    return RunResults(
        status=_str(d["status"], "status"), error=_opt(_str, d["error"], "error"),
        config=_obj(d["config"], "config"), benchmark=_opt(_str, d["benchmark"], "benchmark"),
        weighting=_str(d["weighting"], "weighting"), arch=_str(d["arch"], "arch"),
        tasks=[_str(t, "tasks[]") for t in _list(d["tasks"], "tasks")], device=_str(d["device"], "device"),
        metric_names={t: [_str(m, "metric_names") for m in _list(v, f"metric_names.{t}")]
                      for t, v in _obj(d["metric_names"], "metric_names").items()},
        higher_better={t: {m: _bool(b, f"higher_better.{t}.{m}") for m, b in _obj(v, f"higher_better.{t}").items()}
                       for t, v in _obj(d["higher_better"], "higher_better").items()},
        baseline=Baseline(_opt(_str, base["source"], "baseline.source"),
                          _opt(_scores, base["values"], "baseline.values")),
        epochs=[_parse_epoch(e, i) for i, e in enumerate(_list(d["epochs"], "epochs"))],
        epochs_total=_opt(_int, d["epochs_total"], "epochs_total"),
        best_epoch=_opt(_int, d["best_epoch"], "best_epoch"),
        best_epoch_selection=_str(d["best_epoch_selection"], "best_epoch_selection"),
        peak_memory_mb=_opt(_num, d["peak_memory_mb"], "peak_memory_mb"),
        peak_memory_kind=_str(d["peak_memory_kind"], "peak_memory_kind"), format=_str(d["format"], "format"))


def _parse_epoch(e: Any, i: int) -> EpochRecord:
    w = f"epochs[{i}]"
    e = _obj(e, w)
    try:
        return _epoch_fields(e, w)
    except KeyError as exc:
        raise KeyError(f"{w}.{exc.args[0]}") from None


def _epoch_fields(e: Mapping[str, Any], w: str) -> EpochRecord:
    has_val = "val" in e
    return EpochRecord(
        epoch=_int(e["epoch"], f"{w}.epoch"), train_loss=_losses(e["train_loss"], f"{w}.train_loss"),
        train=_scores(e["train"], f"{w}.train"), train_seconds=_num(e["train_seconds"], f"{w}.train_seconds"),
        test=_scores(e["test"], f"{w}.test"), test_loss=_losses(e["test_loss"], f"{w}.test_loss"),
        test_seconds=_num(e["test_seconds"], f"{w}.test_seconds"),
        lr=[_num(x, f"{w}.lr[]") for x in _list(e["lr"], f"{w}.lr")],
        delta_p={s: DeltaP(_opt(_num, _obj(v, f"{w}.delta_p.{s}")["task"], f"{w}.delta_p.{s}.task"),
                           _opt(_num, v["metric"], f"{w}.delta_p.{s}.metric"))
                 for s, v in _obj(e["delta_p"], f"{w}.delta_p").items()},
        peak_memory_mb=_opt(_num, e["peak_memory_mb"], f"{w}.peak_memory_mb"),
        val=_scores(e["val"], f"{w}.val") if has_val else None,
        val_loss=_losses(e["val_loss"], f"{w}.val_loss") if has_val else None,
        val_seconds=_num(e["val_seconds"], f"{w}.val_seconds") if has_val else None,
        task_weights=_losses(e["task_weights"], f"{w}.task_weights") if "task_weights" in e else None,
        repmtl=_obj(e["repmtl"], f"{w}.repmtl") if "repmtl" in e else None)


# ---------------------------------------------------------------------------------------------- type checks
def _fail(value: Any, where: str, want: str) -> TypeError:
    return TypeError(f"{where} is {type(value).__name__} {value!r:.60}, expected {want}")


def _str(v: Any, where: str) -> str:
    if not isinstance(v, str):
        raise _fail(v, where, "a string")
    return v


def _bool(v: Any, where: str) -> bool:
    if not isinstance(v, bool):
        raise _fail(v, where, "true/false")
    return v


def _int(v: Any, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise _fail(v, where, "an integer")
    return v


def _num(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _fail(v, where, "a number")
    return v


def _list(v: Any, where: str) -> list[Any]:
    if not isinstance(v, list):
        raise _fail(v, where, "a list")
    return v


def _obj(v: Any, where: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise _fail(v, where, "an object")
    return v


def _opt(check: Any, v: Any, where: str) -> Any:
    return None if v is None else check(v, where)


def _losses(v: Any, where: str) -> dict[str, float | None]:
    return {t: _opt(_num, x, f"{where}.{t}") for t, x in _obj(v, where).items()}


def _scores(v: Any, where: str) -> dict[str, dict[str, float | None]]:
    return {t: _losses(m, f"{where}.{t}") for t, m in _obj(v, where).items()}


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _plain(obj: Any) -> Any:
    """Mappings as plain dicts (nested), so ``to_dict`` gives JSON-ready containers."""
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


__all__ = ["RESULTS_FORMAT", "SCHEMA_VERSION", "STATUSES", "Baseline", "DeltaP", "EpochRecord", "ResultsFileError",
           "RunResults", "read_results"]
