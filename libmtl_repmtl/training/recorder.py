"""The run's record: per-epoch history, Δp against the baseline, the best epoch, and the results contract.

:class:`Recorder` keeps, per finished epoch, the public record (what ``results.json`` shows, see
:mod:`~libmtl_repmtl.training.results`) and, beside it, the raw score lists per split (task -> values in the
task's metric order) that Δp and the best-epoch choice are computed from. :class:`StepStats` sums a
weighting's per-step diagnostics (``model.repmtl_stats``) into epoch means.

Best epoch: with a val split, the epoch with the best validation Δp_task against the baseline (without a
baseline: the mean relative improvement over epoch 0's validation scores); without one, the same on test
(optimistic; the last epoch is reported too).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from libmtl_repmtl.training.deltap import partial_delta_p
from libmtl_repmtl.training.results import Baseline, DeltaP, EpochRecord, RunResults

#: Split -> task -> metric values in the task's metric order.
SplitScores = dict[str, dict[str, list[float]]]


class StepStats:
    """Epoch sums of a weighting's step diagnostics: numbers, and lists with one number per task.

    Attributes:
        sums: name -> summed value (a 0-d array, or ``(T,)`` for per-task lists).
        counts: name -> number of steps summed.
    """

    def __init__(self, task_name: Sequence[str]) -> None:
        self.task_name = list(task_name)
        self.sums: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    def add(self, stats: Mapping[str, Any] | None) -> None:
        """Add one step's diagnostics (``step`` and booleans skipped; a value whose shape changed is skipped)."""
        if not isinstance(stats, Mapping):
            return
        n = len(self.task_name)
        for k, v in stats.items():
            if k == "step" or isinstance(v, bool):
                continue
            if isinstance(v, (int, float)):
                arr = np.asarray(float(v))
            elif isinstance(v, (list, tuple)) and len(v) == n and all(isinstance(x, (int, float)) for x in v):
                arr = np.asarray(v, dtype=float)
            else:
                continue
            if k in self.sums and np.shape(self.sums[k]) != arr.shape:
                continue
            self.sums[k] = self.sums.get(k, 0.0) + arr
            self.counts[k] = self.counts.get(k, 0) + 1

    def means(self) -> dict[str, Any] | None:
        """Epoch means (per-task values as task -> value); ``None`` when nothing was added."""
        if not self.counts:
            return None
        out: dict[str, Any] = {}
        for k, total in self.sums.items():
            mean = np.asarray(total) / self.counts[k]
            out[k] = float(mean) if mean.ndim == 0 else dict(zip(self.task_name, mean.tolist()))
        return out


class Recorder:
    """History, Δp, best epoch and the :class:`~libmtl_repmtl.training.results.RunResults` of one run.

    Args:
        metric_names: task -> metric names (the task dict's order).
        higher_better: task -> per-metric flags (True: higher is better).
        baseline: Δp reference, task -> values in metric order (``None``: no Δp).
        baseline_source: where ``baseline`` came from.
    """

    def __init__(self, metric_names: Mapping[str, Sequence[str]], higher_better: Mapping[str, Sequence[bool]],
                 baseline: Mapping[str, Sequence[float]] | None = None, baseline_source: str | None = None) -> None:
        self.metric_names = {t: list(m) for t, m in metric_names.items()}
        self.higher = {t: [bool(h) for h in f] for t, f in higher_better.items()}
        self.baseline = {t: list(v) for t, v in baseline.items()} if baseline else None
        self.baseline_source = baseline_source
        self.history: list[dict[str, Any]] = []  # public epoch records, in epoch order
        self.scores: list[SplitScores] = []  # beside each record: split -> task -> values
        self.best_epoch: int | None = None
        self.best_score: float | None = None

    # -------------------------------------------------------------- epochs
    def add_epoch(self, record: dict[str, Any], scores: SplitScores) -> bool:
        """Add a finished epoch (``record`` gets its ``delta_p``: split -> task/metric); returns whether it is
        the new best epoch."""
        dp: dict[str, Any] = {}
        if self.baseline:
            for split, values in scores.items():
                r = partial_delta_p(values, self.baseline, self.higher)
                dp[split] = {"task": r.task if r else None, "metric": r.metric if r else None}
        record["delta_p"] = dp
        self.history.append(record)
        self.scores.append({s: {t: list(v) for t, v in vals.items()} for s, vals in scores.items()})
        split = "val" if "val" in scores else "test"
        score = self._selection_score(len(self.history) - 1, split)
        if self.best_score is None or (score is not None and score > self.best_score):
            self.best_score, self.best_epoch = score, int(record["epoch"])
            return True
        return False

    def _selection_score(self, index: int, split: str) -> float | None:
        """Higher is better: Δp_task vs the baseline, else the improvement over epoch 0 (same split)."""
        if self.baseline:
            v = (self.history[index].get("delta_p") or {}).get(split, {}).get("task")
            if v is not None:
                return float(v)
        base, scores = self.scores[0].get(split), self.scores[index].get(split)
        if not base or not scores:
            return None
        r = partial_delta_p(scores, base, self.higher)
        return r.task if r is not None else 0.0

    def record(self, epoch: int) -> dict[str, Any]:
        """The record of ``epoch``.

        Raises:
            KeyError: no such epoch recorded.
        """
        for r in self.history:
            if r["epoch"] == epoch:
                return r
        raise KeyError(epoch)

    def first_scores(self) -> dict[str, list[float]] | None:
        """Epoch 0's validation scores (test without a val split): LibMTL's meter compares against them."""
        if not self.scores:
            return None
        first = self.scores[0]
        return first.get("val") or first.get("test")

    # -------------------------------------------------------------- results
    def selection_rule(self) -> str:
        """How the best epoch is chosen (the results' ``best_epoch_selection``)."""
        if any("val" in r for r in self.history):
            return ("val: best validation " + ("Δp_task vs the baseline" if self.baseline else
                                               "mean relative improvement over epoch 0") + "; test reported there")
        return "no val split: best on test (optimistic) and last epoch reported"

    def run_results(self, *, status: str, error: str | None, config: Mapping[str, Any], weighting: str, arch: str,
                    device: str, epochs_total: int | None, peak_memory_mb: float | None,
                    peak_memory_kind: str) -> RunResults:
        """The typed results of the run so far."""
        names = self.metric_names
        return RunResults(
            status=status, error=error, config=config, benchmark=config.get("benchmark"), weighting=weighting,
            arch=arch, tasks=list(names), device=device, metric_names=names,
            higher_better={t: dict(zip(names[t], self.higher[t])) for t in names},
            baseline=Baseline(self.baseline_source,
                              {t: dict(zip(names[t], v)) for t, v in self.baseline.items() if t in names}
                              if self.baseline else None),
            epochs=[epoch_record(r) for r in self.history], epochs_total=epochs_total, best_epoch=self.best_epoch,
            best_epoch_selection=self.selection_rule(), peak_memory_mb=peak_memory_mb,
            peak_memory_kind=peak_memory_kind)

    # -------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """``history``, ``scores``, ``best_epoch``, ``best_score`` (for ``last.pt``)."""
        return {"history": self.history, "scores": self.scores, "best_epoch": self.best_epoch,
                "best_score": self.best_score}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.history = [dict(r) for r in state.get("history") or []]
        self.scores = [dict(s) for s in state.get("scores") or []]
        if len(self.scores) != len(self.history):
            raise ValueError(f"checkpoint: {len(self.history)} epoch records but {len(self.scores)} score sets")
        self.best_epoch, self.best_score = state.get("best_epoch"), state.get("best_score")


def epoch_record(entry: Mapping[str, Any]) -> EpochRecord:
    """A public epoch record as the results contract's :class:`~libmtl_repmtl.training.results.EpochRecord`."""
    fields = dict(entry)
    fields["delta_p"] = {s: DeltaP(v["task"], v["metric"]) for s, v in fields["delta_p"].items()}
    return EpochRecord(**fields)


__all__ = ["Recorder", "SplitScores", "StepStats", "epoch_record"]
