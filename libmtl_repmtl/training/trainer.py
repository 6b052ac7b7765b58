"""``MTLTrainer``: LibMTL's ``Trainer`` with an explicit device, Δp, atomic results/checkpoints and resume.

It subclasses ``LibMTL.Trainer`` (so ``isinstance`` checks and ``process_preds`` overrides keep working) but
builds the model, optimiser and loops itself, so it does not depend on LibMTL 1.1.5's behaviour that breaks
on current torch (``cuda:0`` hard-coded, ``iterator.next()``, gradients set to ``None`` by ``zero_grad``)
nor on the git version's string-taking constructor: ``weighting`` / ``architecture`` may be classes or
names (looked up in ``LibMTL.weighting.__dict__`` / ``LibMTL.architecture.__dict__``, then this package).

The loop, with the hooks a subclass (DDP, AMP, exact resume) overrides::

    train()
      start_training(epochs)                 # resume from last.pt, buffers
      for epoch: run_epoch(epoch)
          train_epoch(epoch)                 # for each batch: train_step(...)
              train_step -> forward_losses(...) ; backward_and_step(losses)
          evaluate(loaders, epoch, mode)     # 'val' (if any), 'test'
          end_epoch(epoch, record)           # Δp, best epoch, results.json, best.pt / last.pt, scheduler

Files under ``save_path`` (all written atomically): ``results.json`` after every epoch (the contract in
:mod:`~libmtl_repmtl.training.results`), ``last.pt`` after every epoch, ``best.pt`` when the best epoch improves
(contents in :meth:`MTLTrainer.checkpoint_state`). A write that fails (full disk) raises
:class:`~libmtl_repmtl.training.io.RunFileWriteError` naming the file and the epoch.

Resume is exact: the checkpoints also hold the RNG states and the training loaders' positions
(:mod:`~libmtl_repmtl.training.resume`). Batches are checked before use (:mod:`~libmtl_repmtl.training.checks`).
"""

from __future__ import annotations

import importlib
import math
import os
import resource
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from libmtl_repmtl.core.objective import NonFiniteLossError as _CoreNonFiniteLossError
from libmtl_repmtl.libmtl.bases import LibMTL
from libmtl_repmtl.training.checks import (
    batch_context,
    check_finite_batch,
    check_nonempty,
    describe,
    task_loss,
)
from libmtl_repmtl.training.deltap import partial_delta_p
from libmtl_repmtl.training.device import resolve_device
from libmtl_repmtl.training.io import atomic_torch_save, atomic_write_json, to_jsonable, write_run_file
from libmtl_repmtl.training.progress import Progress
from libmtl_repmtl.training.results import Baseline, DeltaP, EpochRecord, RunResults
from libmtl_repmtl.training.resume import (
    LoaderCursor,
    capture_rng_state,
    cursors_of,
    data_order_state,
    next_batch,
    restore_data_order,
    restore_rng_state,
)

# LibMTL submodules, imported after the compatibility layer (bases) has run.
_PerformanceMeter = importlib.import_module("LibMTL._record")._PerformanceMeter
count_parameters = importlib.import_module("LibMTL.utils").count_parameters

#: Test hook: after this many completed epochs, the trainer raises ``KeyboardInterrupt`` (simulates a kill).
STOP_ENV = "LIBMTL_REPMTL_STOP_AFTER_EPOCHS"

_OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
    "adagrad": torch.optim.Adagrad, "rmsprop": torch.optim.RMSprop,
}
_SCHEDULERS: dict[str, Callable[..., Any]] = {
    "step": torch.optim.lr_scheduler.StepLR, "exp": torch.optim.lr_scheduler.ExponentialLR,
    "cos": torch.optim.lr_scheduler.CosineAnnealingLR,
}

# Model attributes that are configuration, not weighting state (never checkpointed as state).
_MODEL_CONFIG_ATTRS = {"task_name", "task_num", "encoder_class", "rep_grad", "multi_input", "device", "kwargs",
                       "rep", "rep_tasks", "grad_index", "grad_dim", "repmtl_gather"}


# One error type for non-finite losses, whether the trainer's check or RepMTL's own catches them first.
NonFiniteLossError = _CoreNonFiniteLossError


# ---------------------------------------------------------------------------------------------- name lookup
def resolve_weighting(weighting: str | type) -> type:
    """A weighting class from a class or a name (``LibMTL.weighting.__dict__``, then this package's ``RepMTL``).

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    return _resolve(weighting, LibMTL.weighting, "weighting", {"RepMTL": "libmtl_repmtl.libmtl.weighting"})


def resolve_architecture(architecture: str | type) -> type:
    """An architecture class from a class or a name (``LibMTL.architecture.__dict__``, then ``RepHPS``).

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    return _resolve(architecture, LibMTL.architecture, "architecture",
                    {"RepHPS": "libmtl_repmtl.libmtl.architecture"})


def _resolve(obj: str | type, module: Any, kind: str, plugins: Mapping[str, str]) -> type:
    if isinstance(obj, type):
        return obj
    name = str(obj)
    cls = module.__dict__.get(name)
    if isinstance(cls, type):
        return cls
    if name in plugins:
        return getattr(importlib.import_module(plugins[name]), name)
    known = sorted({n for n, v in module.__dict__.items() if isinstance(v, type) and not n.startswith("Abs")}
                   | set(plugins))
    raise ValueError(f"unknown {kind} {name!r}; known: {known}")


# ---------------------------------------------------------------------------------------------- trainer
class MTLTrainer(LibMTL.Trainer):  # type: ignore[misc, name-defined]
    """A LibMTL ``Trainer`` that runs anywhere and writes its results atomically.

    Args:
        task_dict: LibMTL task dict (``metrics``, ``metrics_fn``, ``loss_fn``, ``weight`` per task).
        weighting: weighting class or name (``"EW"``, ``"RepMTL"``, ...).
        architecture: architecture class or name (``"HPS"``, ``"RepHPS"``, ...).
        encoder_class: zero-argument callable returning the shared encoder.
        decoders: ``nn.ModuleDict`` (or dict) task -> head.
        rep_grad: LibMTL's ``rep_grad``.
        multi_input: each task has its own input batch.
        optim_param: ``{"optim": "adam" | "sgd" | "adamw" | "adagrad" | "rmsprop", **optimizer kwargs}``.
        scheduler_param: ``{"scheduler": "step" | "exp" | "cos", **kwargs}`` or ``None``.
        save_path: folder for ``results.json``, ``best.pt`` and ``last.pt`` (``None``: nothing written).
        load_path: a checkpoint (``best.pt`` / ``last.pt``) whose model weights are loaded at construction.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a ``torch.device``.
        baseline: Δp reference, task -> metric values in the task dict's metric order (``None``: no Δp).
        baseline_source: a description of where ``baseline`` came from (for the results).
        config: the full run configuration, stored in ``results.json`` and the checkpoints.
        process_preds_fn: ``(trainer, preds, task_name) -> preds`` (else LibMTL's no-op ``process_preds``).
        resume: continue from ``save_path/last.pt`` when it exists.
        progress: progress display on stderr (``None``: only when stderr is a terminal).
        verbose: print LibMTL's log lines.
        kwargs: ``weight_args`` and ``arch_args`` dicts, as LibMTL's Trainer.

    Every batch is checked for NaN/Inf in its inputs and float targets before it is used, and class-index
    targets for their range (:mod:`~libmtl_repmtl.training.checks`; ``check_data = False`` turns the NaN/Inf
    check off); data errors are :class:`~libmtl_repmtl.training.checks.BatchDataError` naming the split, epoch,
    batch and task.
    """

    #: Check each batch's inputs and targets for NaN/Inf (one device synchronisation per batch).
    check_data: bool = True

    def __init__(self, task_dict: dict[str, dict[str, Any]], weighting: str | type, architecture: str | type,
                 encoder_class: Callable[[], nn.Module], decoders: Mapping[str, nn.Module], rep_grad: bool,
                 multi_input: bool, optim_param: Mapping[str, Any], scheduler_param: Mapping[str, Any] | None,
                 save_path: str | os.PathLike[str] | None = None, load_path: str | os.PathLike[str] | None = None,
                 *, device: str | torch.device = "auto", baseline: Mapping[str, Sequence[float]] | None = None,
                 baseline_source: str | None = None, config: Mapping[str, Any] | None = None,
                 process_preds_fn: Callable[[Any, Any, str | None], Any] | None = None, resume: bool = False,
                 progress: bool | None = None, verbose: bool = True, **kwargs: Any) -> None:
        nn.Module.__init__(self)  # LibMTL's __init__ hard-codes cuda:0 (1.1.5) or wants names (git): not called
        self.device = resolve_device(device)
        kwargs.setdefault("weight_args", {})
        kwargs.setdefault("arch_args", {})
        self.kwargs = kwargs
        self.task_dict = task_dict
        self.task_num = len(task_dict)
        self.task_name = list(task_dict)
        self.rep_grad = bool(rep_grad)
        self.multi_input = bool(multi_input)
        self.save_path = Path(save_path) if save_path is not None else None
        self.baseline = {t: list(v) for t, v in baseline.items()} if baseline else None
        self.baseline_source = baseline_source
        self.config = dict(config or {})
        self.process_preds_fn = process_preds_fn
        self.resume = bool(resume)
        self.progress = progress
        self.verbose = bool(verbose)
        self.weighting_class = resolve_weighting(weighting)
        self.architecture_class = resolve_architecture(architecture)
        self.input_size: tuple[int, int] | None = None

        self._prepare_model(self.weighting_class, self.architecture_class, encoder_class, decoders)
        self._prepare_optimizer(optim_param, scheduler_param)
        if self.verbose:
            self.meter = _PerformanceMeter(self.task_dict, self.multi_input)
        else:
            import contextlib
            import io

            with contextlib.redirect_stdout(io.StringIO()):
                self.meter = _PerformanceMeter(self.task_dict, self.multi_input)
        self.history: list[dict[str, Any]] = []
        self._train_cursors: list[LoaderCursor] = []  # set by train(); their positions go into last.pt
        self._where = "a batch"  # the step being processed, for error messages ("training epoch 3, batch 7")
        self._batch_desc = ""  # shape/dtype of the last input batch, for error messages
        self.best_epoch: int | None = None
        self.best_score: float | None = None
        self.start_epoch = 0
        self.epochs_total: int | None = None
        self.status = "created"
        self.error: str | None = None
        if load_path is not None:
            state = torch.load(load_path, map_location=self.device, weights_only=False)
            self.model.load_state_dict(state["model"] if "model" in state else state)

    # ------------------------------------------------------------------ construction
    def _prepare_model(self, weighting: type, architecture: type, encoder_class: Callable[[], nn.Module],
                       decoders: Mapping[str, nn.Module]) -> None:
        """Compose ``class MTLmodel(architecture, weighting)`` on :attr:`device`, gradients pre-allocated."""
        arch_args = dict(self.kwargs.get("arch_args") or {})

        class MTLmodel(architecture, weighting):  # type: ignore[misc, valid-type]
            def __init__(self, task_name: list[str], encoder_class: Any, decoders: Any, rep_grad: bool,
                         multi_input: bool, device: torch.device, kwargs: dict[str, Any]) -> None:
                super().__init__(task_name, encoder_class, decoders, rep_grad, multi_input, device, **kwargs)
                self.init_param()

            def zero_grad_share_params(self) -> None:
                # LibMTL's weightings write into param.grad.data afterwards: keep the tensors, zero them.
                for p in self.get_share_params():
                    if p.grad is not None:
                        p.grad.detach_()
                        p.grad.zero_()

        if not isinstance(decoders, nn.ModuleDict):
            decoders = nn.ModuleDict(dict(decoders))
        self.model = MTLmodel(self.task_name, encoder_class, decoders, self.rep_grad, self.multi_input,
                              self.device, arch_args).to(self.device)
        for p in self.model.get_share_params():
            if p.requires_grad and p.grad is None:
                p.grad = torch.zeros_like(p)
        if self.verbose:
            count_parameters(self.model)

    def _prepare_optimizer(self, optim_param: Mapping[str, Any], scheduler_param: Mapping[str, Any] | None) -> None:
        """Optimizer and (optional) scheduler from LibMTL-style parameter dicts."""
        optim_param = dict(optim_param)
        name = str(optim_param.pop("optim", "adam")).lower()
        if name not in _OPTIMIZERS:
            raise ValueError(f"unknown optimizer {name!r}; choose from {sorted(_OPTIMIZERS)}")
        self.optimizer = _OPTIMIZERS[name](self.model.parameters(), **optim_param)
        self.scheduler = None
        if scheduler_param is not None and scheduler_param.get("scheduler"):
            sp = dict(scheduler_param)
            sname = str(sp.pop("scheduler")).lower()
            if sname not in _SCHEDULERS:
                raise ValueError(f"unknown scheduler {sname!r}; choose from {sorted(_SCHEDULERS)}")
            self.scheduler = _SCHEDULERS[sname](self.optimizer, **sp)

    # ------------------------------------------------------------------ data and predictions
    def _prepare_dataloaders(self, dataloaders: Any, train: bool = False) -> tuple[Any, Any]:
        """A :class:`~libmtl_repmtl.training.resume.LoaderCursor` per loader (task -> cursor for multi-input)
        and the batches per pass. Training cursors call :meth:`before_train_iterator` before each iterator."""
        hook = self.before_train_iterator if train else None
        if not self.multi_input:
            return LoaderCursor(dataloaders, before_iter=hook), len(dataloaders)
        loader = {t: LoaderCursor(dataloaders[t], name=t, before_iter=hook) for t in self.task_name}
        return loader, [len(dataloaders[t]) for t in self.task_name]

    def before_train_iterator(self, loader: Any, iteration: int) -> None:
        """Called before the ``iteration``-th (0-based) iterator of a training loader is started, also when a
        resumed run recreates it. No-op; a distributed trainer calls ``loader.sampler.set_epoch(iteration)``."""

    def _process_data(self, loader: LoaderCursor | list[Any]) -> tuple[Any, Any]:
        """Next batch of ``loader`` (a cursor, or ``[dataloader, iterator]``; restarted when exhausted), on
        :attr:`device`."""
        data, label = next_batch(loader)
        nb = self.device.type == "cuda"
        data = data.to(self.device, non_blocking=nb)
        if isinstance(label, Mapping):
            label = {t: v.to(self.device, non_blocking=nb) for t, v in label.items()}
        else:
            label = label.to(self.device, non_blocking=nb)
        if torch.is_tensor(data) and data.dim() >= 3:
            self.input_size = tuple(data.shape[-2:])  # type: ignore[assignment]
        self._batch_desc = f"input batch {describe(data)}"
        if self.check_data:
            check_finite_batch(data, label, self._where, getattr(loader, "name", None))
        return data, label

    def process_preds(self, preds: Any, task_name: str | None = None) -> Any:
        """Post-process predictions (``process_preds_fn`` when given, else unchanged)."""
        if self.process_preds_fn is not None:
            return self.process_preds_fn(self, preds, task_name)
        return preds

    def _compute_loss(self, preds: Any, gts: Any, task_name: str | None = None) -> torch.Tensor:
        if not self.multi_input:
            return torch.stack([task_loss(self.meter.losses[t], preds[t], gts[t], self._where, t)
                                for t in self.task_name])
        return task_loss(self.meter.losses[task_name], preds, gts, self._where, str(task_name))

    # ------------------------------------------------------------------ one step
    def forward_losses(self, train_loader: Any) -> torch.Tensor:
        """Forward pass of one training batch (all tasks); updates the meter. Returns the ``(T,)`` losses."""
        if not self.multi_input:
            inputs, gts = self._process_data(train_loader)
            preds = self.process_preds(self.train_forward(inputs))
            losses = self._compute_loss(preds, gts)
            self.meter.update(preds, gts)
            return losses
        out = []
        for task in self.task_name:
            inputs, gt = self._process_data(train_loader[task])
            pred = self.process_preds(self.train_forward(inputs, task)[task], task)
            out.append(self._compute_loss(pred, gt, task))
            self.meter.update(pred, gt, task)
        return torch.stack(out)

    def train_forward(self, inputs: Any, task: str | None = None) -> Any:
        """The model's forward on one training batch (hook: a subclass routes it through DDP / autocast)."""
        return self.model(inputs) if task is None else self.model(inputs, task)

    def reduce_epoch_state(self, mode: str) -> None:
        """Hook called after the last batch of a split (``mode``: ``train``/``val``/``test``), before the meter
        computes its scores: a data-parallel subclass merges the ranks' accumulators here. No-op."""

    def check_losses(self, losses: torch.Tensor, epoch: int, batch_index: int) -> None:
        """Raise :class:`NonFiniteLossError` when a loss is NaN/inf (before any parameter changes)."""
        if not bool(torch.isfinite(losses.detach()).all()):
            vals = {t: float(v) for t, v in zip(self.task_name, losses.detach().cpu().tolist())}
            bad = [t for t, v in vals.items() if not math.isfinite(v)]
            raise NonFiniteLossError(
                f"non-finite training loss of task(s) {bad} at epoch {epoch}, batch {batch_index}: {vals}; no "
                "parameter was updated at this step. The batch's inputs and targets were finite, so the model "
                "diverged: lower the learning rate (or check the loss of those tasks); files written so far are "
                "complete.")

    def backward_and_step(self, losses: torch.Tensor) -> np.ndarray | None:
        """Weighting's backward and the optimiser step. Returns the task weights the weighting reports."""
        self.optimizer.zero_grad(set_to_none=False)
        w = self.model.backward(losses, **self.kwargs["weight_args"])
        self.optimizer.step()
        return w

    def train_step(self, train_loader: Any, epoch: int, batch_index: int) -> torch.Tensor:
        """One training step; returns the ``(T,)`` detached losses."""
        self._where = f"training epoch {epoch}, batch {batch_index}"
        with batch_context(self._where, lambda: self._batch_desc):
            losses = self.forward_losses(train_loader)
        self.check_losses(losses, epoch, batch_index)
        w = self.backward_and_step(losses)
        if w is not None:
            if torch.is_tensor(w):
                w = w.detach().cpu().numpy()
            w = np.asarray(w, dtype=float).reshape(-1)
            if w.size == self.task_num and batch_index < self.batch_weight.shape[2]:
                self.batch_weight[:, epoch, batch_index] = w
        self.accumulate_stats(getattr(self.model, "repmtl_stats", None))
        return losses.detach()

    def accumulate_stats(self, stats: Mapping[str, Any] | None) -> None:
        """Add one step's weighting diagnostics (``model.repmtl_stats``) to the epoch sums: numbers, and
        lists with one number per task (stored as task -> value)."""
        if not isinstance(stats, Mapping):
            return
        for k, v in stats.items():
            if k == "step" or isinstance(v, bool):
                continue
            if isinstance(v, (int, float)):
                arr = np.asarray(float(v))
            elif isinstance(v, (list, tuple)) and len(v) == self.task_num and \
                    all(isinstance(x, (int, float)) for x in v):
                arr = np.asarray(v, dtype=float)
            else:
                continue
            if k in self._stat_sums and np.shape(self._stat_sums[k]) != arr.shape:
                continue
            self._stat_sums[k] = self._stat_sums.get(k, 0.0) + arr
            self._stat_counts[k] = self._stat_counts.get(k, 0) + 1

    def epoch_stats(self) -> dict[str, Any]:
        """Epoch means of the accumulated diagnostics (per-task lists as task -> value)."""
        out: dict[str, Any] = {}
        for k, total in self._stat_sums.items():
            mean = np.asarray(total) / self._stat_counts[k]
            out[k] = float(mean) if mean.ndim == 0 else dict(zip(self.task_name, mean.tolist()))
        return out

    # ------------------------------------------------------------------ epochs
    def train_epoch(self, epoch: int, train_loader: Any, train_batch: int) -> dict[str, Any]:
        """All training steps of one epoch. Returns the epoch's train record (losses, metrics, seconds)."""
        self.model.epoch = epoch
        self.model.train()
        self._stat_sums: dict[str, Any] = {}
        self._stat_counts: dict[str, int] = {}
        self.meter.record_time("begin")
        bar = Progress(train_batch, f"epoch {epoch + 1}/{self.epochs_total}", self._progress_enabled())
        t0 = time.perf_counter()
        try:
            for batch_index in range(train_batch):
                self.train_step(train_loader, epoch, batch_index)
                bar.update()
        finally:
            bar.close()
        for cursor in self._train_cursors:
            cursor.settle()  # close exhausted iterators now: last.pt then needs no replay of batches
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - t0
        self.meter.record_time("end")
        self.reduce_epoch_state("train")
        self.meter.get_score()
        self.model.train_loss_buffer[:, epoch] = self.meter.loss_item
        record = {"train_loss": self._named_losses(), "train": self._named_scores(), "train_seconds": seconds}
        if self._stat_counts:
            record["repmtl"] = self.epoch_stats()
        if self.verbose:
            self.meter.display(epoch=epoch, mode="train")
        self.meter.reinit()
        return record

    @torch.no_grad()
    def evaluate(self, dataloaders: Any, epoch: int | None = None, mode: str = "test") -> dict[str, Any]:
        """Losses and metrics on ``dataloaders`` (``mode`` is ``val`` or ``test``); prints LibMTL's segment."""
        loader, batches = self._prepare_dataloaders(dataloaders)
        self.model.eval()
        self.meter.record_time("begin")
        t0 = time.perf_counter()
        where = f"{mode} evaluation" + (f" after epoch {epoch}" if epoch is not None else "")
        if not self.multi_input:
            for i in range(batches):
                self._where = f"{where}, batch {i}"
                inputs, gts = self._process_data(loader)
                preds = self.process_preds(self.model(inputs))
                self._compute_loss(preds, gts)
                self.meter.update(preds, gts)
        else:
            for tn, task in enumerate(self.task_name):
                for i in range(batches[tn]):
                    self._where = f"{where}, task {task!r} batch {i}"
                    inputs, gt = self._process_data(loader[task])
                    pred = self.process_preds(self.model(inputs, task)[task], task)
                    self._compute_loss(pred, gt, task)
                    self.meter.update(pred, gt, task)
        self.meter.record_time("end")
        self.reduce_epoch_state(mode)
        self.meter.get_score()
        out = {"loss": self._named_losses(), "metrics": self._named_scores(), "seconds": time.perf_counter() - t0,
               "scores": {t: [float(v) for v in self.meter.results[t]] for t in self.task_name}}
        if self.verbose and epoch is not None:
            self.meter.display(epoch=epoch, mode=mode)
        self.meter.reinit()
        return out

    def test(self, test_dataloaders: Any, epoch: int | None = None, mode: str = "test") -> dict[str, Any]:
        """LibMTL's ``test``: evaluate and print; returns the evaluation record."""
        return self.evaluate(test_dataloaders, epoch, mode)

    def run_epoch(self, epoch: int, train_loader: Any, train_batch: int, test_dataloaders: Any,
                  val_dataloaders: Any | None) -> dict[str, Any]:
        """Train one epoch, evaluate on val (if any) and test, then :meth:`end_epoch`."""
        record: dict[str, Any] = {"epoch": epoch}
        record.update(self.train_epoch(epoch, train_loader, train_batch))
        if val_dataloaders is not None:
            self.meter.has_val = True
            ev = self.evaluate(val_dataloaders, epoch, "val")
            record.update(val=ev["metrics"], val_loss=ev["loss"], val_seconds=ev["seconds"])
            record["_val_scores"] = ev["scores"]
        ev = self.evaluate(test_dataloaders, epoch, "test")
        record.update(test=ev["metrics"], test_loss=ev["loss"], test_seconds=ev["seconds"])
        record["_test_scores"] = ev["scores"]
        record["lr"] = [g["lr"] for g in self.optimizer.param_groups]
        if self.batch_weight.size:
            record["task_weights"] = dict(zip(self.task_name, self.batch_weight[:, epoch, :].mean(1).tolist()))
        self.end_epoch(epoch, record)
        return record

    def end_epoch(self, epoch: int, record: dict[str, Any]) -> None:
        """Δp, best epoch, scheduler step, then ``results.json``, ``best.pt`` and ``last.pt`` (atomic)."""
        higher = self._higher_flags()
        dp: dict[str, Any] = {}
        for split in ("val", "test"):
            scores = record.pop(f"_{split}_scores", None)
            if scores is None:
                continue
            record[f"_{split}_scores_kept"] = scores
            if self.baseline:
                r = partial_delta_p(scores, self.baseline, higher)
                dp[split] = {"task": r.task if r else None, "metric": r.metric if r else None}
        record["delta_p"] = dp
        if self.verbose and dp:
            parts = [f"{s.upper()} Δp_task {_pct(v['task'])} Δp_metric {_pct(v['metric'])}" for s, v in dp.items()]
            print(f"Epoch: {epoch:04d} | Δp vs single-task baseline: " + " | ".join(parts), flush=True)
        self.history.append(record)
        improved = self._update_best(epoch)
        if self.scheduler is not None:
            self.scheduler.step()
        record["peak_memory_mb"] = self.peak_memory_mb()
        self.status = "complete" if epoch + 1 >= (self.epochs_total or 0) else "running"
        if self.save_path is not None:  # atomic writes; a failure (full disk) names the file and the epoch
            when = f"the end of epoch {epoch}"
            write_run_file(self.save_path / "results.json", lambda p: self.write_results(), when)
            if improved:
                write_run_file(self.save_path / "best.pt",
                               lambda p: atomic_torch_save(p, self.checkpoint_state(epoch)), when)
            write_run_file(self.save_path / "last.pt", lambda p: atomic_torch_save(p, self.checkpoint_state(epoch)),
                           when)

    def _update_best(self, epoch: int) -> bool:
        split = "val" if self.history[-1].get("_val_scores_kept") is not None else "test"
        score = self._selection_score(self.history[-1], split)
        if self.best_score is None or (score is not None and score > self.best_score):
            self.best_score, self.best_epoch = score, epoch
            return True
        return False

    def _selection_score(self, record: Mapping[str, Any], split: str) -> float | None:
        """Higher is better: Δp_task vs the baseline, else LibMTL's improvement over epoch 0 (same split)."""
        if self.baseline:
            v = (record.get("delta_p") or {}).get(split, {}).get("task")
            if v is not None:
                return float(v)
        base = self.history[0].get(f"_{split}_scores_kept")
        scores = record.get(f"_{split}_scores_kept")
        if not base or not scores:
            return None
        higher = self._higher_flags()
        r = partial_delta_p(scores, base, higher)
        return r.task if r is not None else 0.0

    # ------------------------------------------------------------------ the loop
    def train(self, train_dataloaders: Any, test_dataloaders: Any, epochs: int, val_dataloaders: Any = None,
              return_weight: bool = False) -> np.ndarray | None:
        """LibMTL's ``train``: ``epochs`` epochs (continuing after the epochs a resumed run already did).

        Raises:
            NonFiniteLossError: a NaN/inf training loss (``results.json`` then says ``"status": "failed"``).
            KeyboardInterrupt: interrupted (``"status": "interrupted"``; continue with ``resume=True``).
        """
        train_loader, train_batch = self._prepare_dataloaders(train_dataloaders, train=True)
        self._train_cursors = cursors_of(train_loader)
        train_batch = max(train_batch) if self.multi_input else train_batch
        if train_batch == 0 or (self.multi_input and min(_prep_sizes(train_dataloaders, self.task_name)) == 0):
            raise ValueError("the training data yield no batch (fewer items than the training batch size, and "
                             "incomplete batches are dropped): lower --train_bs or use more data")
        check_nonempty(test_dataloaders, "test", self.task_name, self.multi_input)
        if val_dataloaders is not None:
            check_nonempty(val_dataloaders, "val", self.task_name, self.multi_input)
        self.start_training(int(epochs), int(train_batch))
        stop_after = os.environ.get(STOP_ENV)
        try:
            for epoch in range(self.start_epoch, self.epochs_total):  # type: ignore[arg-type]
                self.run_epoch(epoch, train_loader, train_batch, test_dataloaders, val_dataloaders)
                if stop_after and epoch + 1 >= int(stop_after) and epoch + 1 < self.epochs_total:  # type: ignore
                    raise KeyboardInterrupt(f"{STOP_ENV}={stop_after}")
        except KeyboardInterrupt:
            self.status = "interrupted"
            self._write_results_safely()
            raise
        except BaseException as exc:
            self.status, self.error = "failed", f"{type(exc).__name__}: {exc}"
            self._write_results_safely()
            raise
        self.status = "complete"
        if self.save_path is not None:
            self.write_results()
        if self.verbose and self.best_epoch is not None:
            self.meter.best_result = {"epoch": self.best_epoch, "result": self.history_entry(self.best_epoch)["test"]}
            self.meter.display_best_result()
        return self.batch_weight if return_weight else None

    def start_training(self, epochs: int, train_batch: int) -> None:
        """Allocate the loss/weight buffers and, with ``resume``, restore ``save_path/last.pt``."""
        self.epochs_total = epochs
        self.batch_weight = np.zeros([self.task_num, epochs, train_batch])
        self.model.train_loss_buffer = np.zeros([self.task_num, epochs])
        self.start_epoch = 0
        if self.resume and self.save_path is not None and (self.save_path / "last.pt").is_file():
            self.load_checkpoint(self.save_path / "last.pt")
            if self.verbose:
                print(f"Resumed from {self.save_path / 'last.pt'}: {self.start_epoch} epoch(s) done, "
                      f"{max(epochs - self.start_epoch, 0)} to go", flush=True)
        self.status = "running"

    # ------------------------------------------------------------------ checkpoints
    def weighting_state(self) -> dict[str, Any]:
        """The weighting's own non-parameter state (e.g. ``train_loss_buffer``, step counters)."""
        skip = set(nn.Module().__dict__) | _MODEL_CONFIG_ATTRS
        out = {}
        for k, v in self.model.__dict__.items():
            if k in skip or isinstance(v, nn.Module) or callable(v):
                continue
            if _is_plain(v):
                out[k] = v.detach().cpu() if torch.is_tensor(v) else v
        return out

    def checkpoint_state(self, epoch: int) -> dict[str, Any]:
        """Everything needed to continue after ``epoch`` exactly: model, optimizer, scheduler, RNG states
        (``rng``), the training loaders' positions (``data_order``), the weighting's state, the history and best
        epoch, and the configuration."""
        return {
            "format": "libmtl_repmtl.checkpoint/1", "epoch": epoch, "epochs_total": self.epochs_total,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "rng": capture_rng_state(self.device), "data_order": self.data_order_state(),
            "weighting_state": self.weighting_state(),
            "batch_weight": self.batch_weight[:, : epoch + 1].copy(),
            "history": self.history, "best_epoch": self.best_epoch, "best_score": self.best_score,
            "config": to_jsonable(self.config), "task_name": self.task_name,
            "weighting": self.weighting_class.__name__, "architecture": self.architecture_class.__name__,
        }

    def load_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Restore a :meth:`checkpoint_state` file (this package's own files: loaded with pickle).

        Raises:
            ValueError: the checkpoint belongs to another run (tasks, weighting or architecture differ).
        """
        self.restore_checkpoint_state(torch.load(path, map_location=self.device, weights_only=False), str(path))

    def restore_checkpoint_state(self, state: Mapping[str, Any], path: str) -> None:
        """Restore a loaded :meth:`checkpoint_state` (``path``: where it came from, for messages); a subclass
        that adds to the checkpoint restores its part here.

        Raises:
            ValueError: the checkpoint belongs to another run (tasks, weighting or architecture differ).
        """
        mine = (self.task_name, self.weighting_class.__name__, self.architecture_class.__name__)
        theirs = (state.get("task_name"), state.get("weighting"), state.get("architecture"))
        if list(theirs[0] or []) != list(mine[0]) or theirs[1:] != mine[1:]:
            raise ValueError(f"cannot resume from {path}: it holds tasks/weighting/arch {theirs}, this run is {mine}; "
                             "use another --save_path or drop --resume")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        for k, v in (state.get("weighting_state") or {}).items():
            if k == "train_loss_buffer":
                buf = np.zeros_like(self.model.train_loss_buffer)
                n = min(buf.shape[1], np.asarray(v).shape[1])
                buf[:, :n] = np.asarray(v)[:, :n]
                v = buf
            elif torch.is_tensor(v):
                v = v.to(self.device)
            setattr(self.model, k, v)
        bw = np.asarray(state.get("batch_weight", np.zeros((self.task_num, 0, 0))))
        if bw.ndim == 3 and bw.shape[2] == self.batch_weight.shape[2]:
            n = min(bw.shape[1], self.batch_weight.shape[1])
            self.batch_weight[:, :n] = bw[:, :n]
        # The data order first: replaying batches may draw random numbers, which the RNG restore then undoes.
        self.restore_data_order(state.get("data_order"), path)
        restore_rng_state(state.get("rng") or {}, self.device)
        self.history = list(state.get("history") or [])
        self.best_epoch, self.best_score = state.get("best_epoch"), state.get("best_score")
        self.start_epoch = int(state["epoch"]) + 1
        if self.history:  # LibMTL's meter compares against epoch 0's results from epoch 1 on
            first = self.history[0]
            base = first.get("_val_scores_kept") or first.get("_test_scores_kept")
            if base is not None:
                self.meter.base_result = {t: list(v) for t, v in base.items()}

    def data_order_state(self) -> dict[str, Any]:
        """The training loaders' positions and shuffling-generator states (:mod:`~libmtl_repmtl.training.resume`)."""
        return data_order_state(self._train_cursors)

    def restore_data_order(self, state: Mapping[str, Any] | None, source: str) -> None:
        """Put the training loaders where a checkpoint's :meth:`data_order_state` says; a checkpoint without one
        (older version) or one that does not fit the loaders (data or batch size changed) gives a
        ``RuntimeWarning`` and fresh iterators (the resumed epochs then see another batch order)."""
        restore_data_order(self._train_cursors, state, source)

    # ------------------------------------------------------------------ results
    def history_entry(self, epoch: int) -> dict[str, Any]:
        """The public record of ``epoch`` (private score lists removed)."""
        for r in self.history:
            if r["epoch"] == epoch:
                return {k: v for k, v in r.items() if not k.startswith("_")}
        raise KeyError(epoch)

    def results(self) -> dict[str, Any]:
        """The results dict written to ``results.json``: :meth:`run_results` as a dict (the contract and its
        keys: :mod:`~libmtl_repmtl.training.results`)."""
        return self.run_results().to_dict()

    def run_results(self) -> RunResults:
        """The run's results so far as the typed contract (:class:`~libmtl_repmtl.training.results.RunResults`)."""
        epochs = [_epoch_record(self.history_entry(r["epoch"])) for r in self.history]
        names = {t: list(self.task_dict[t]["metrics"]) for t in self.task_name}
        higher = self._higher_flags()
        has_val = any(e.val is not None for e in epochs)
        return RunResults(
            status=self.status, error=self.error, config=self.config, benchmark=self.config.get("benchmark"),
            weighting=self.weighting_class.__name__, arch=self.architecture_class.__name__,
            tasks=list(self.task_name), device=str(self.device), metric_names=names,
            higher_better={t: dict(zip(names[t], higher[t])) for t in self.task_name},
            baseline=Baseline(self.baseline_source,
                              {t: dict(zip(names[t], v)) for t, v in self.baseline.items() if t in names}
                              if self.baseline else None),
            epochs=epochs, epochs_total=self.epochs_total, best_epoch=self.best_epoch,
            best_epoch_selection=(
                "val: best validation " + ("Δp_task vs the baseline" if self.baseline else
                                           "mean relative improvement over epoch 0") + "; test reported there"
                if has_val else
                "no val split: best on test (optimistic) and last epoch reported"),
            peak_memory_mb=self.peak_memory_mb(), peak_memory_kind=self.peak_memory_kind())

    def write_results(self) -> dict[str, Any]:
        """Write ``save_path/results.json`` atomically; returns the results dict."""
        res = self.results()
        if self.save_path is not None:
            atomic_write_json(self.save_path / "results.json", res)
        return res

    def _write_results_safely(self) -> None:
        if self.save_path is None:
            return
        try:
            self.write_results()
        except Exception as exc:  # noqa: BLE001 - never hide the original error
            print(f"warning: could not write results.json: {exc}", file=sys.stderr)

    # ------------------------------------------------------------------ helpers
    def peak_memory_mb(self) -> float:
        """CUDA: ``torch.cuda.max_memory_allocated`` of the device; CPU: the process's peak RSS (MiB)."""
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss / 2**20 if sys.platform == "darwin" else rss / 1024.0

    def peak_memory_kind(self) -> str:
        """What :meth:`peak_memory_mb` measures."""
        if self.device.type == "cuda":
            return "cuda max_memory_allocated (MiB)"
        return "CPU process peak RSS via resource.getrusage (MiB)"

    def _higher_flags(self) -> dict[str, list[bool]]:
        return {t: [bool(w) for w in self.task_dict[t]["weight"]] for t in self.task_name}

    def _named_losses(self) -> dict[str, float]:
        return {t: float(v) for t, v in zip(self.task_name, self.meter.loss_item)}

    def _named_scores(self) -> dict[str, dict[str, float]]:
        return {t: {m: float(v) for m, v in zip(self.task_dict[t]["metrics"], self.meter.results[t])}
                for t in self.task_name}

    def _progress_enabled(self) -> bool | None:
        return self.progress


def _prep_sizes(loaders: Any, tasks: Sequence[str]) -> list[int]:
    return [len(loaders[t]) for t in tasks]


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:+.2f}%"


def _epoch_record(entry: Mapping[str, Any]) -> EpochRecord:
    """An epoch's public history entry as the results contract's record."""
    fields = dict(entry)
    fields["delta_p"] = {s: DeltaP(v["task"], v["metric"]) for s, v in fields["delta_p"].items()}
    return EpochRecord(**fields)


def _is_plain(v: Any) -> bool:
    if v is None or isinstance(v, (bool, int, float, str, np.ndarray, np.generic)):
        return True
    if torch.is_tensor(v):
        return not isinstance(v, nn.Parameter)
    if isinstance(v, (list, tuple)):
        return all(_is_plain(x) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _is_plain(x) for k, x in v.items())
    return False


__all__ = ["MTLTrainer", "NonFiniteLossError", "STOP_ENV", "resolve_architecture", "resolve_weighting"]
