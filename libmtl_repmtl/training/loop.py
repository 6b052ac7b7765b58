"""The epoch loop of :class:`~libmtl_repmtl.training.trainer.MTLTrainer`: epochs, steps, evaluation.

:class:`EpochLoop` is the loop's skeleton; it calls the trainer's named hooks (``_process_data``,
``process_preds``, ``_compute_loss``, ``train_forward``, ``check_losses``, ``backward_and_step``,
``end_epoch``, ``write_results``), its parts (``strategy.reduce_split``) and, for each training step, the
weighting's step protocol (``step_protocol``, :mod:`~libmtl_repmtl.training.protocols`). It holds no state of its own:
the attributes below are the trainer's.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from libmtl_repmtl.training.checks import batch_context
from libmtl_repmtl.training.memory import PeakMemory
from libmtl_repmtl.training.progress import Progress
from libmtl_repmtl.training.protocols import StepContext, StepProtocol
from libmtl_repmtl.training.recorder import Recorder, SplitScores, StepStats
from libmtl_repmtl.training.resume import LoaderCursor
from libmtl_repmtl.training.strategy import Strategy

#: Test hook: after this many completed epochs, the trainer raises ``KeyboardInterrupt`` (simulates a kill).
STOP_ENV = "LIBMTL_REPMTL_STOP_AFTER_EPOCHS"


class EpochLoop:
    """Epochs of training steps, each followed by evaluation on val (if any) and test and ``end_epoch``."""

    model: nn.Module
    meter: Any
    strategy: Strategy
    recorder: Recorder
    optimizer: torch.optim.Optimizer
    device: torch.device
    task_dict: dict[str, dict[str, Any]]
    task_name: list[str]
    task_num: int
    multi_input: bool
    verbose: bool
    progress: bool | None
    batch_weight: np.ndarray
    start_epoch: int
    epochs_total: int | None
    status: str
    error: str | None
    kwargs: dict[str, Any]
    step_protocol: StepProtocol
    memory: PeakMemory
    _train_cursors: list[LoaderCursor]
    _where: str
    _batch_desc: str
    _last_batch: Any = None  # the step's last training batch: (inputs, targets), or task -> that (multi-input)

    # hooks the trainer defines
    def _prepare_dataloaders(self, dataloaders: Any, train: bool = False) -> tuple[Any, Any]:
        raise NotImplementedError

    def _process_data(self, loader: Any) -> tuple[Any, Any]:
        raise NotImplementedError

    def process_preds(self, preds: Any, task_name: str | None = None) -> Any:
        raise NotImplementedError

    def _compute_loss(self, preds: Any, gts: Any, task_name: str | None = None) -> torch.Tensor:
        raise NotImplementedError

    def train_forward(self, inputs: Any, task: str | None = None) -> Any:
        raise NotImplementedError

    def check_losses(self, losses: torch.Tensor, epoch: int, batch_index: int) -> None:
        raise NotImplementedError

    def backward_and_step(self, losses: torch.Tensor, weight_args: Mapping[str, Any] | None = None) -> Any:
        raise NotImplementedError

    def end_epoch(self, epoch: int, record: dict[str, Any], scores: SplitScores) -> None:
        raise NotImplementedError

    def _write_results_safely(self) -> None:
        raise NotImplementedError

    def write_results(self) -> dict[str, Any]:
        raise NotImplementedError

    # ------------------------------------------------------------------ epochs
    def run_epochs(self, train_loader: Any, train_batch: int, test_dataloaders: Any,
                   val_dataloaders: Any | None) -> None:
        """Epochs ``start_epoch .. epochs_total - 1``; the status (and ``results.json``) says how it ended."""
        stop_after = os.environ.get(STOP_ENV)
        total = int(self.epochs_total or 0)
        try:
            for epoch in range(self.start_epoch, total):
                self.run_epoch(epoch, train_loader, train_batch, test_dataloaders, val_dataloaders)
                if stop_after and epoch + 1 >= int(stop_after) and epoch + 1 < total:
                    raise KeyboardInterrupt(f"{STOP_ENV}={stop_after}")
        except KeyboardInterrupt:
            self.memory.stop()
            self.status = "interrupted"
            self._write_results_safely()
            raise
        except BaseException as exc:
            self.memory.stop()
            self.status, self.error = "failed", f"{type(exc).__name__}: {exc}"
            self._write_results_safely()
            raise
        self.memory.stop()  # the final results.json and the results returned afterwards give the same peak
        self.status = "complete"
        self.write_results()

    def run_epoch(self, epoch: int, train_loader: Any, train_batch: int, test_dataloaders: Any,
                  val_dataloaders: Any | None) -> dict[str, Any]:
        """Train one epoch, evaluate on val (if any) and test, then ``end_epoch``."""
        record: dict[str, Any] = {"epoch": epoch}
        record.update(self.train_epoch(epoch, train_loader, train_batch))
        scores: SplitScores = {}
        if val_dataloaders is not None:
            self.meter.has_val = True
            ev = self.evaluate(val_dataloaders, epoch, "val")
            record.update(val=ev["metrics"], val_loss=ev["loss"], val_seconds=ev["seconds"])
            scores["val"] = ev["scores"]
        ev = self.evaluate(test_dataloaders, epoch, "test")
        record.update(test=ev["metrics"], test_loss=ev["loss"], test_seconds=ev["seconds"])
        scores["test"] = ev["scores"]
        record["lr"] = [g["lr"] for g in self.optimizer.param_groups]
        if self.batch_weight.size:
            record["task_weights"] = dict(zip(self.task_name, self.batch_weight[:, epoch, :].mean(1).tolist()))
        self.end_epoch(epoch, record, scores)
        return record

    def train_epoch(self, epoch: int, train_loader: Any, train_batch: int) -> dict[str, Any]:
        """All training steps of one epoch. Returns the epoch's train record (losses, metrics, seconds)."""
        self.model.epoch = epoch
        self.model.train()
        self._stats = StepStats(self.task_name)
        self.meter.record_time("begin")
        bar = Progress(train_batch, f"epoch {epoch + 1}/{self.epochs_total}", self.progress)
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
        self.strategy.reduce_split(self.meter, self._stats, self.model)
        self.meter.get_score()
        self.model.train_loss_buffer[:, epoch] = self.meter.loss_item
        record: dict[str, Any] = {"train_loss": self._named_losses(), "train": self._named_scores(),
                                  "train_seconds": seconds}
        means = self._stats.means()
        if means is not None:
            record["repmtl"] = means
        if self.verbose:
            self.meter.display(epoch=epoch, mode="train")
        self.meter.reinit()
        return record

    # ------------------------------------------------------------------ steps
    def train_step(self, train_loader: Any, epoch: int, batch_index: int) -> torch.Tensor:
        """One training step: the weighting's step protocol (:mod:`~libmtl_repmtl.training.protocols`; by
        default one batch's losses, checked, backward and optimiser step); returns the ``(T,)`` detached losses."""
        self._where = f"training epoch {epoch}, batch {batch_index}"

        def forward() -> torch.Tensor:
            with batch_context(self._where, lambda: self._batch_desc):
                return self.forward_losses(train_loader)

        self._last_batch = None
        step = StepContext(self.model, self.optimizer, self.kwargs["weight_args"], epoch, batch_index, forward,
                           lambda losses: self.check_losses(losses, epoch, batch_index),
                           lambda losses, weight_args: self.backward_and_step(losses, weight_args),
                           self.recompute_losses)
        losses, w = self.step_protocol(step)
        self._last_batch = None
        if w is not None:
            if torch.is_tensor(w):
                w = w.detach().cpu().numpy()
            w = np.asarray(w, dtype=float).reshape(-1)
            if w.size == self.task_num and batch_index < self.batch_weight.shape[2]:
                self.batch_weight[:, epoch, batch_index] = w
        self._stats.add(getattr(self.model, "repmtl_stats", None))
        return losses.detach()

    def forward_losses(self, train_loader: Any) -> torch.Tensor:
        """Forward pass of one training batch (all tasks); updates the meter and keeps the batch for
        :meth:`recompute_losses`. Returns the ``(T,)`` losses."""
        if not self.multi_input:
            inputs, gts = self._process_data(train_loader)
            self._last_batch = (inputs, gts)
            preds = self.process_preds(self.train_forward(inputs))
            losses = self._compute_loss(preds, gts)
            self.meter.update(preds, gts)
            return losses
        out, batches = [], {}
        for task in self.task_name:
            inputs, gt = self._process_data(train_loader[task])
            batches[task] = (inputs, gt)
            pred = self.process_preds(self.train_forward(inputs, task)[task], task)
            out.append(self._compute_loss(pred, gt, task))
            self.meter.update(pred, gt, task)
        self._last_batch = batches
        return torch.stack(out)

    @torch.no_grad()
    def recompute_losses(self) -> torch.Tensor:
        """The ``(T,)`` losses of the last batch :meth:`forward_losses` drew in this step, by the current model,
        without gradient; neither the meter nor the loss records change (a step protocol's update after the
        optimiser step, e.g. FAMO's ``update_w``)."""
        if self._last_batch is None:
            raise RuntimeError("recompute_losses: no training batch was drawn in this step yet")
        losses = self.meter.losses
        if not self.multi_input:
            inputs, gts = self._last_batch
            preds = self.process_preds(self.train_forward(inputs))
            return torch.stack([losses[t].compute_loss(preds[t], gts[t]) for t in self.task_name])
        return torch.stack([losses[t].compute_loss(self.process_preds(self.train_forward(x, t)[t], t), y)
                            for t, (x, y) in self._last_batch.items()])

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, dataloaders: Any, epoch: int | None = None, mode: str = "test") -> dict[str, Any]:
        """Losses and metrics on ``dataloaders`` (``mode`` is ``val`` or ``test``); prints LibMTL's segment.
        Returns ``loss`` and ``metrics`` (task -> name -> value), ``scores`` (task -> values), ``seconds``."""
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
        self.strategy.reduce_split(self.meter, None, self.model)
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

    def _named_losses(self) -> dict[str, float]:
        return {t: float(v) for t, v in zip(self.task_name, self.meter.loss_item)}

    def _named_scores(self) -> dict[str, dict[str, float]]:
        return {t: {m: float(v) for m, v in zip(self.task_dict[t]["metrics"], self.meter.results[t])}
                for t in self.task_name}


__all__ = ["STOP_ENV", "EpochLoop"]
