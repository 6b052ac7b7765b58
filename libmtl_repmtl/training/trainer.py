"""``MTLTrainer``: the training loop, composed of a strategy, a precision policy, a recorder and a checkpointer.

It subclasses ``LibMTL.Trainer`` (``isinstance`` checks and ``process_preds`` overrides keep working) but builds
the model, optimiser and loops itself: it does not depend on LibMTL 1.1.5's behaviour that breaks on current
torch (``cuda:0`` hard-coded, ``iterator.next()``) nor on the git version's string-taking constructor. Names of
weightings and architectures are resolved by the plugin host (:mod:`libmtl_repmtl.libmtl.capabilities`).
LibMTL's weightings and architectures call nothing on the trainer: they run on the composed model
(``_compute_grad``, ``_get_grads``, ``rep``, ``train_loss_buffer``, ``epoch``, ...; ``model.compose_model``).

The loop and its named hooks (each a method; the parts it asks are in brackets)::

    train()
      start_training(epochs)                   # buffers; with resume: [checkpointer] restores last.pt
      for epoch: run_epoch(epoch)
        train_epoch(epoch)
          for each batch: train_step(...)      # the weighting's step protocol (protocols.py); by default:
            forward_losses -> train_forward    # [precision] autocast, [strategy] the DDP model
            check_losses                       # [strategy] agreed by every rank
            backward_and_step                  # [precision] the weighting's backward, the optimiser step
          [strategy] reduce_split              # merge the ranks' accumulators
        evaluate(loaders, epoch, mode)         # 'val' (if any), 'test'
        end_epoch(epoch, record, scores)       # [recorder] Δp, best epoch; scheduler; files
                                               # [strategy] after_epoch: every rank agrees

:class:`~libmtl_repmtl.training.strategy.Strategy` (one process) or
:class:`~libmtl_repmtl.training.strategy.DataParallel` (torchrun), and
:class:`~libmtl_repmtl.training.precision.Precision` (float32), ``Autocast`` (bf16) or ``ScaledFloat16``
are passed as ``strategy=`` / ``precision=``. :class:`~libmtl_repmtl.training.recorder.Recorder` keeps the
history and writes nothing; :class:`~libmtl_repmtl.training.checkpoint.Checkpointer` owns ``best.pt`` and
``last.pt``.

Files under ``save_path`` (all written atomically, by rank 0 alone): ``results.json`` after every epoch (the
contract in :mod:`~libmtl_repmtl.training.results`), ``best.pt`` when the best epoch improves and ``last.pt``
after every epoch (contents in :mod:`~libmtl_repmtl.training.checkpoint`). A write that fails (full disk)
raises :class:`~libmtl_repmtl.training.io.RunFileWriteError` naming the file and the epoch.

Resume is exact: ``last.pt`` also holds the RNG states and the training loaders' positions
(:mod:`~libmtl_repmtl.training.resume`). Batches are checked before use (:mod:`~libmtl_repmtl.training.checks`).
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from libmtl_repmtl.core.objective import NonFiniteLossError as _CoreNonFiniteLossError
from libmtl_repmtl.libmtl.bases import LibMTL
from libmtl_repmtl.libmtl.capabilities import resolve_architecture, resolve_weighting
from libmtl_repmtl.training.checkpoint import Checkpointer, RunIdentity
from libmtl_repmtl.training.checks import check_finite_batch, check_nonempty, check_train_batches, describe, task_loss
from libmtl_repmtl.training.device import resolve_device
from libmtl_repmtl.training.io import atomic_write_json, write_run_file
from libmtl_repmtl.training.loop import STOP_ENV, EpochLoop
from libmtl_repmtl.training.memory import PeakMemory
from libmtl_repmtl.training.model import build_optimizer, compose_model, make_meter
from libmtl_repmtl.training.precision import Precision
from libmtl_repmtl.training.protocols import protocol_for, trainable_weighting
from libmtl_repmtl.training.recorder import Recorder, SplitScores
from libmtl_repmtl.training.results import RunResults
from libmtl_repmtl.training.resume import LoaderCursor, cursors_of, next_batch
from libmtl_repmtl.training.strategy import Strategy

# One error type for non-finite losses, whether the trainer's check or RepMTL's own catches them first.
NonFiniteLossError = _CoreNonFiniteLossError


class MTLTrainer(EpochLoop, LibMTL.Trainer):
    """A LibMTL ``Trainer`` that runs anywhere and writes its results atomically.

    Args:
        task_dict: LibMTL task dict (``metrics``, ``metrics_fn``, ``loss_fn``, ``weight`` per task).
        weighting: weighting class or name (``"EW"``, ``"RepMTL"``, ...; names through the plugin host).
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
        strategy: the distribution strategy (default: one process).
        precision: the precision policy (default: float32).
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
                 progress: bool | None = None, verbose: bool = True, strategy: Strategy | None = None,
                 precision: Precision | None = None, **kwargs: Any) -> None:
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
        self.config = dict(config or {})
        self.process_preds_fn = process_preds_fn
        self.resume = bool(resume)
        self.progress = progress
        self.verbose = bool(verbose)
        self.weighting_class = trainable_weighting(weighting)  # refuses the bilevel methods
        self.architecture_class = resolve_architecture(architecture)
        self.strategy = strategy if strategy is not None else Strategy()
        self.precision = precision if precision is not None else Precision()
        self.step_protocol = protocol_for(self.weighting_class)
        self.input_size: tuple[int, int] | None = None
        self.model = compose_model(self.weighting_class, self.architecture_class, encoder_class, decoders,
                                   self.task_name, rep_grad=self.rep_grad, multi_input=self.multi_input,
                                   device=self.device, arch_args=self.kwargs["arch_args"], verbose=self.verbose)
        self.optimizer, self.scheduler = build_optimizer(self.model, optim_param, scheduler_param)
        self.meter = make_meter(self.task_dict, self.multi_input, self.verbose)
        self.memory = PeakMemory(self.device)  # started by train(): the run's own peak (training/memory.py)
        # The module training forwards go through (the DDP wrapper, or the model): not a sub-module of the trainer.
        self.train_model = self.strategy.setup(self.model, self.device, self.weighting_class,
                                               self.kwargs["weight_args"])
        self.recorder = Recorder({t: list(task_dict[t]["metrics"]) for t in self.task_name},
                                 {t: [bool(w) for w in task_dict[t]["weight"]] for t in self.task_name},
                                 baseline, baseline_source)
        self.checkpointer = Checkpointer(
            self.save_path, writes=self.strategy.is_main,
            identity=RunIdentity(tuple(self.task_name), self.weighting_class.__name__,
                                 self.architecture_class.__name__),
            model=self.model, optimizer=self.optimizer, scheduler=self.scheduler, precision=self.precision,
            recorder=self.recorder, device=self.device, config=self.config)
        self.batch_weight = np.zeros((self.task_num, 0, 0))
        self._train_cursors: list[LoaderCursor] = []  # set by train(); their positions go into last.pt
        self._where = "a batch"  # the step being processed, for error messages ("training epoch 3, batch 7")
        self._batch_desc = ""  # shape/dtype of the last input batch, for error messages
        self.start_epoch = 0
        self.epochs_total: int | None = None
        self.status = "created"
        self.error: str | None = None
        if load_path is not None:
            state = torch.load(load_path, map_location=self.device, weights_only=False)
            self.model.load_state_dict(state["model"] if "model" in state else state)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "train_model":  # the same parameters as self.model: never registered twice
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    # ------------------------------------------------------------------ the parts' state, read through
    @property
    def history(self) -> list[dict[str, Any]]:
        """The public epoch records so far (the recorder's)."""
        return self.recorder.history

    @property
    def best_epoch(self) -> int | None:
        return self.recorder.best_epoch

    @property
    def best_score(self) -> float | None:
        return self.recorder.best_score

    @property
    def baseline(self) -> dict[str, list[float]] | None:
        return self.recorder.baseline

    @property
    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """The precision policy's GradScaler (float16 only)."""
        return self.precision.grad_scaler

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
        """Hook: before the ``iteration``-th (0-based) iterator of a training loader is started, also when a
        resumed run recreates it (the strategy sets a ``DistributedSampler``'s epoch here)."""
        self.strategy.before_train_iterator(loader, iteration)

    def _process_data(self, loader: LoaderCursor | list[Any]) -> tuple[Any, Any]:
        """Next batch of ``loader`` on :attr:`device`, checked; in a training step every rank agrees on
        whether any rank's batch failed before the next collective (the DDP forward)."""
        if self.model.training:
            return self.strategy.agree(self._fetch, loader, where=self._where)
        return self._fetch(loader)

    def _fetch(self, loader: LoaderCursor | list[Any]) -> tuple[Any, Any]:
        data, label = next_batch(loader)
        nb = self.device.type == "cuda"
        data = data.to(self.device, non_blocking=nb)
        if isinstance(label, Mapping):
            label = {t: v.to(self.device, non_blocking=nb) for t, v in label.items()}
        else:
            label = label.to(self.device, non_blocking=nb)
        if torch.is_tensor(data) and data.dim() >= 3:
            self.input_size = (int(data.shape[-2]), int(data.shape[-1]))
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
        """Task losses (label checks included); in a training step agreed by every rank before the backward."""
        if self.model.training:
            return self.strategy.agree(self._task_losses, preds, gts, task_name, where=self._where)
        return self._task_losses(preds, gts, task_name)

    def _task_losses(self, preds: Any, gts: Any, task_name: str | None) -> torch.Tensor:
        if not self.multi_input:
            return torch.stack([task_loss(self.meter.losses[t], preds[t], gts[t], self._where, t)
                                for t in self.task_name])
        return task_loss(self.meter.losses[task_name], preds, gts, self._where, str(task_name))

    # ------------------------------------------------------------------ one step
    def train_forward(self, inputs: Any, task: str | None = None) -> Any:
        """Hook: the model's forward on one training batch, through the strategy's model, under the precision
        policy."""
        model = self.train_model
        if task is None:
            return self.precision.forward(model, inputs)
        return self.precision.forward(model, inputs, task)

    def check_losses(self, losses: torch.Tensor, epoch: int, batch_index: int) -> None:
        """Hook: raise :class:`NonFiniteLossError` when a loss is NaN/inf (before any parameter changes); every
        rank agrees."""
        self.strategy.agree(self._check_finite, losses, epoch, batch_index, where=self._where,
                            elsewhere=lambda: NonFiniteLossError(
                                f"non-finite training loss on another rank at epoch {epoch}, batch {batch_index} "
                                "(this rank's losses are finite): every rank stops. That rank's error shows the "
                                "values; check the input data or lower the learning rate."))

    def _check_finite(self, losses: torch.Tensor, epoch: int, batch_index: int) -> None:
        if not bool(torch.isfinite(losses.detach()).all()):
            vals = {t: float(v) for t, v in zip(self.task_name, losses.detach().cpu().tolist())}
            bad = [t for t, v in vals.items() if not math.isfinite(v)]
            raise NonFiniteLossError(
                f"non-finite training loss of task(s) {bad} at epoch {epoch}, batch {batch_index}: {vals}; no "
                "parameter was updated at this step. The batch's inputs and targets were finite, so the model "
                "diverged: lower the learning rate (or check the loss of those tasks); files written so far are "
                "complete.")

    def backward_and_step(self, losses: torch.Tensor, weight_args: Mapping[str, Any] | None = None) -> Any:
        """Hook: the weighting's backward (``weight_args``, default the run's) and the optimiser step (the
        precision policy's). Returns the task weights the weighting reports."""
        args = self.kwargs["weight_args"] if weight_args is None else weight_args
        return self.precision.backward_and_step(self.model, losses, self.optimizer, args)

    # ------------------------------------------------------------------ the loop
    def train(self, train_dataloaders: Any, test_dataloaders: Any, epochs: int, val_dataloaders: Any = None,
              return_weight: bool = False) -> np.ndarray | None:
        """LibMTL's ``train``: ``epochs`` epochs (continuing after the epochs a resumed run already did).

        Raises:
            NonFiniteLossError: a NaN/inf training loss (``results.json`` then says ``"status": "failed"``).
            KeyboardInterrupt: interrupted (``"status": "interrupted"``; continue with ``resume=True``).
        """
        train_dataloaders = self.strategy.shard(train_dataloaders, train=True)
        test_dataloaders = self.strategy.shard(test_dataloaders, train=False)
        val_dataloaders = self.strategy.shard(val_dataloaders, train=False)
        train_loader, train_batch = self._prepare_dataloaders(train_dataloaders, train=True)
        self._train_cursors = cursors_of(train_loader)
        train_batch = max(train_batch) if self.multi_input else train_batch
        check_train_batches(train_dataloaders, self.task_name, self.multi_input)
        check_nonempty(test_dataloaders, "test", self.task_name, self.multi_input)
        if val_dataloaders is not None:
            check_nonempty(val_dataloaders, "val", self.task_name, self.multi_input)
        self.memory.start()
        self.start_training(int(epochs), int(train_batch))
        self.run_epochs(train_loader, train_batch, test_dataloaders, val_dataloaders)
        if self.verbose and self.best_epoch is not None:
            self.meter.best_result = {"epoch": self.best_epoch, "result": self.recorder.record(self.best_epoch)["test"]}
            self.meter.display_best_result()
        return self.batch_weight if return_weight else None

    def start_training(self, epochs: int, train_batch: int) -> None:
        """Hook: allocate the buffers; with ``resume``, restore ``save_path/last.pt`` (every rank reads it)."""
        self.epochs_total = epochs
        self.batch_weight = np.zeros([self.task_num, epochs, train_batch])
        self.model.train_loss_buffer = np.zeros([self.task_num, epochs])
        self.start_epoch = 0
        last = self.checkpointer.last_path
        if self.resume and last is not None and last.is_file():
            self.load_checkpoint(last)
            if self.verbose:
                print(f"Resumed from {last}: {self.start_epoch} epoch(s) done, "
                      f"{max(epochs - self.start_epoch, 0)} to go", flush=True)
        self.status = "running"

    def end_epoch(self, epoch: int, record: dict[str, Any], scores: SplitScores) -> None:
        """Hook: Δp and best epoch (recorder), scheduler step, then ``results.json``, ``best.pt`` and ``last.pt``
        (atomic, rank 0); every rank learns whether any rank failed."""
        self.strategy.after_epoch(epoch, lambda: self._finish_epoch(epoch, record, scores))

    def _finish_epoch(self, epoch: int, record: dict[str, Any], scores: SplitScores) -> None:
        improved = self.recorder.add_epoch(record, scores)
        dp = record["delta_p"]
        if self.verbose and dp:
            parts = [f"{s.upper()} Δp_task {_pct(v['task'])} Δp_metric {_pct(v['metric'])}" for s, v in dp.items()]
            print(f"Epoch: {epoch:04d} | Δp vs single-task baseline: " + " | ".join(parts), flush=True)
        if self.scheduler is not None:
            self.scheduler.step()
        record["peak_memory_mb"] = self.memory.peak_mb()
        self.status = "complete" if epoch + 1 >= (self.epochs_total or 0) else "running"
        if self.checkpointer.writes and self.save_path is not None:
            write_run_file(self.save_path / "results.json", lambda p: self.write_results(),
                           f"the end of epoch {epoch}")
        self.checkpointer.save(epoch, improved, self.epochs_total, self.batch_weight, self._train_cursors)

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_state(self, epoch: int) -> dict[str, Any]:
        """The contents of ``last.pt`` after ``epoch`` (:meth:`Checkpointer.last_state`)."""
        return self.checkpointer.last_state(epoch, self.epochs_total, self.batch_weight, self._train_cursors)

    def load_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Restore a ``last.pt`` (:meth:`Checkpointer.restore`): the run continues after its epoch.

        Raises:
            ValueError: another format, a checkpoint of another run (tasks, weighting or architecture differ)
                or of other training settings (the message names them).
        """
        state = self.checkpointer.load(path)
        self.start_epoch = self.checkpointer.restore(state, str(path), self.batch_weight, self._train_cursors)
        base = self.recorder.first_scores()
        if base is not None:  # LibMTL's meter compares against epoch 0's results from epoch 1 on
            self.meter.base_result = {t: list(v) for t, v in base.items()}

    # ------------------------------------------------------------------ results
    def results(self) -> dict[str, Any]:
        """The results dict written to ``results.json``: :meth:`run_results` as a dict (the contract and its
        keys: :mod:`~libmtl_repmtl.training.results`)."""
        return self.run_results().to_dict()

    def run_results(self) -> RunResults:
        """The run's results so far as the typed contract (:class:`~libmtl_repmtl.training.results.RunResults`)."""
        return self.recorder.run_results(
            status=self.status, error=self.error, config=self.config, weighting=self.weighting_class.__name__,
            arch=self.architecture_class.__name__, device=str(self.device), epochs_total=self.epochs_total,
            peak_memory_mb=self.memory.peak_mb(), peak_memory_kind=self.memory.kind)

    def write_results(self) -> dict[str, Any]:
        """Write ``save_path/results.json`` atomically (rank 0); returns the results dict."""
        res = self.results()
        if self.checkpointer.writes and self.save_path is not None:
            atomic_write_json(self.save_path / "results.json", res)
        return res

    def _write_results_safely(self) -> None:
        try:
            self.write_results()
        except Exception as exc:  # noqa: BLE001 - never hide the original error
            print(f"warning: could not write results.json: {exc}", file=sys.stderr)


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:+.2f}%"


__all__ = ["MTLTrainer", "NonFiniteLossError", "STOP_ENV", "resolve_architecture", "resolve_weighting"]
