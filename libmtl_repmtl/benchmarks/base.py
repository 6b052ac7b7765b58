"""What a benchmark is: :class:`Benchmark` (builders and facts), :class:`Task` (loss, metrics and their
directions, output size), :class:`Baseline` (single-task rows with their units) and :class:`Published` (the
paper's rows).

A benchmark module (``nyuv2.py``, ``multimnist.py``, ...) builds one :class:`Benchmark` and registers it with
:func:`libmtl_repmtl.benchmarks.registry.register`. Builders receive ``opts``, the run's merged options (the
benchmark's :attr:`Benchmark.defaults`, then the caller's: ``train_bs``, ``test_bs``, ``aug``, ``seed``,
``num_workers``, ``encoder``, ``pretrained``, ``dataset_path`` and benchmark-specific keys such as
``n_train`` or ``list_dir``). A benchmark declares the options its builders read in :attr:`Benchmark.options`
(besides the generic run options of :data:`libmtl_repmtl.training.options.RUN_OPTIONS`); any other key is
refused.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

Options = Mapping[str, Any]
Loaders = Any  # a DataLoader (single input) or a task -> DataLoader dict (multi-input)
TaskDict = dict[str, dict[str, Any]]


class BenchmarkSetupError(RuntimeError):
    """A benchmark cannot be set up (no dataset folder, ...); the message says why and what to do."""


@dataclass(frozen=True)
class Task:
    """One task of a benchmark.

    Attributes:
        metrics: metric names, in the order the metric object scores them.
        higher_better: per metric, True when higher is better (LibMTL's ``weight`` 1 / 0).
        loss: zero-argument factory of the LibMTL loss object.
        metric: zero-argument factory of the LibMTL metric object (it holds per-epoch state).
        outputs: output channels of the task's head (classes for classification).
    """

    metrics: tuple[str, ...]
    higher_better: tuple[bool, ...]
    loss: Callable[[], Any]
    metric: Callable[[], Any]
    outputs: int

    def __post_init__(self) -> None:
        if len(self.metrics) != len(self.higher_better):
            raise ValueError(f"task with metrics {self.metrics}: {len(self.higher_better)} directions given")

    def entry(self) -> dict[str, Any]:
        """LibMTL's task-dict entry, with fresh loss and metric objects."""
        return {"metrics": list(self.metrics), "metrics_fn": self.metric(), "loss_fn": self.loss(),
                "weight": [int(h) for h in self.higher_better]}


def task_dict_of(name: str, tasks: Mapping[str, Task]) -> Callable[[Sequence[str], Options], TaskDict]:
    """A :attr:`Benchmark.task_dict` builder for the task table ``tasks`` of benchmark ``name``."""

    def build(selected: Sequence[str], opts: Options) -> TaskDict:
        unknown = [t for t in selected if t not in tasks]
        if unknown:
            raise ValueError(f"{name}: unknown task(s) {unknown}; tasks are {list(tasks)}")
        return {t: tasks[t].entry() for t in selected}

    return build


@dataclass(frozen=True)
class Baseline:
    """A single-task baseline as the paper prints it, and its units.

    Attributes:
        printed: task -> values as printed (percent for the metrics flagged in ``percent``).
        percent: task -> per metric, True when the printed value is percent while the metric object reports a
            fraction (mIoU, pixAcc, within-angle ratios, accuracy).
    """

    printed: dict[str, list[float]]
    percent: dict[str, list[bool]]

    def to_metric_units(self, row: Mapping[str, Sequence[float]]) -> dict[str, list[float]]:
        """A row in the printed units converted to the metric objects' units (percent -> fraction)."""
        return {t: [v / 100.0 if pct else float(v) for v, pct in zip(vals, self.percent[t])]
                for t, vals in row.items()}

    @classmethod
    def in_metric_units(cls, values: Mapping[str, Sequence[float]]) -> Baseline:
        """A baseline given directly in the metric objects' units (no percent values)."""
        return cls({t: [float(v) for v in vs] for t, vs in values.items()},
                   {t: [False] * len(vs) for t, vs in values.items()})

    @property
    def values(self) -> dict[str, list[float]]:
        """task -> baseline values in the metric objects' units (a fresh copy)."""
        return self.to_metric_units(self.printed)


@dataclass(frozen=True)
class Published:
    """The paper's published rows for a benchmark (printed units).

    Attributes:
        delta_p_task: method -> Δp_task (percent, mean of the paper's runs).
        delta_p_metric: method -> Δp_metric (percent), where printed.
        metrics: method -> task -> mean metric values as printed.
    """

    delta_p_task: dict[str, float] = field(default_factory=dict)
    delta_p_metric: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, dict[str, list[float]]] = field(default_factory=dict)


@dataclass(frozen=True)
class Benchmark:
    """Everything needed to train, score and report one benchmark.

    Attributes:
        name: registry name (``office-31`` style; looked up ignoring case, ``-`` and ``_``).
        tasks: all task names, in order.
        multi_input: each task has its own input batch (Office, digit domains).
        task_dict: ``(tasks, opts) -> LibMTL task dict`` (fresh loss/metric objects) for ``tasks``.
        dataloaders: ``(tasks, opts) -> {"train", "val" (or None), "test"}``: each a DataLoader yielding
            ``(inputs, {task: label})`` (single input) or a task -> DataLoader dict yielding ``(inputs, label)``.
        encoder_class: ``opts -> zero-argument callable`` building the shared encoder.
        decoders: ``(tasks, opts) -> nn.ModuleDict`` of heads.
        has_val: whether ``dataloaders`` gives a validation split (best epoch chosen on it).
        process_preds: optional ``(trainer, preds, task_name) -> preds`` before loss and metrics.
        defaults: default run options (``epochs``, ``train_bs``, ``optim``, ``lr``, ``scheduler``, ...).
        baseline: the paper's single-task baseline, or None (Δp then needs single-task runs).
        published: the paper's published rows, or None.
        description: one line for listings.
        options: option -> type (``bool``, ``int``, ``float``, ``str`` or ``object``: any value) of every option
            the builders read besides the generic run options (``libmtl_repmtl.training.options.RUN_OPTIONS``);
            ``dataset_path`` when the loaders read a data folder (without it a dataset path is refused). Every
            other key is refused, and values are coerced to these types.
        validate: optional ``opts -> None`` raising ``ValueError`` (naming the option and the fix) for merged
            options the benchmark cannot use; called before anything is built.
    """

    name: str
    tasks: tuple[str, ...]
    multi_input: bool
    task_dict: Callable[[Sequence[str], Options], TaskDict]
    dataloaders: Callable[[Sequence[str], Options], dict[str, Loaders]]
    encoder_class: Callable[[Options], Callable[[], nn.Module]]
    decoders: Callable[[Sequence[str], Options], nn.ModuleDict]
    has_val: bool = False
    process_preds: Callable[[Any, Any, str | None], Any] | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    baseline: Baseline | None = None
    published: Published | None = None
    description: str = ""
    options: Mapping[str, type] = field(default_factory=dict)
    validate: Callable[[Options], None] | None = None

    def full_task_dict(self) -> TaskDict:
        """The LibMTL task dict of every task (fresh objects)."""
        return self.task_dict(self.tasks, self.defaults)

    def metric_names(self) -> dict[str, list[str]]:
        """task -> metric names."""
        return {t: list(d["metrics"]) for t, d in self.full_task_dict().items()}

    def higher_better(self) -> dict[str, list[int]]:
        """task -> higher-is-better flags (1 / 0) per metric."""
        return {t: [int(w) for w in d["weight"]] for t, d in self.full_task_dict().items()}


__all__ = ["Baseline", "Benchmark", "BenchmarkSetupError", "Loaders", "Options", "Published", "Task", "TaskDict",
           "task_dict_of"]
