"""Checks of the batches the trainer sees, with errors that say where (split, epoch, batch, task) and what.

The dataset readers of this package (:mod:`libmtl_repmtl.data`) validate their files and name the bad one;
these checks are the trainer's last line for any dataset (custom ones, augmentations, preprocessing):

* :func:`check_finite_batch`: NaN/Inf in an input or target batch, raised *before* the forward pass, so a
  training step stops before any parameter update;
* :func:`task_loss`: class-index targets outside ``[0, C-1]`` (the predictions' class count; the loss's
  ``ignore_index`` allowed) raised before the loss (on CUDA an out-of-range label is a device-side assert that
  kills the process), and any other failure of a task's loss (wrong target shape or dtype) re-raised with the
  task, the step and the shapes;
* :func:`check_nonempty`: an evaluation split without a batch; :func:`check_train_batches`: training data
  without a batch (fewer items than the batch size: incomplete training batches are dropped);
* :func:`batch_context`: adds the step to other errors raised while a batch is processed (e.g. the encoder
  refusing an input of the wrong shape), as an exception note (Python 3.11+).

All data errors are :class:`BatchDataError` (a ``ValueError``; the example commands exit with status 2).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from libmtl_repmtl.training.resume import batches_per_pass

#: PyTorch's default ``ignore_index`` of the cross-entropy / NLL losses.
TORCH_IGNORE_INDEX = -100

_OOM: type[BaseException] = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError


class BatchDataError(ValueError):
    """A batch the trainer cannot use (non-finite values, labels out of range, targets of the wrong shape or
    dtype, an empty split); the message names the split, epoch, batch and task, and the fix."""


def describe(x: Any) -> str:
    """A short description of a batch: ``(4, 3, 8, 8) float32`` for a tensor, per key/item for containers."""
    if torch.is_tensor(x):
        return f"{tuple(x.shape)} {str(x.dtype).replace('torch.', '')}"
    if isinstance(x, Mapping):
        return "{" + ", ".join(f"{k}: {describe(v)}" for k, v in x.items()) + "}"
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(describe(v) for v in x) + "]"
    return type(x).__name__


def _named_tensors(x: Any, name: str) -> Iterator[tuple[str, Tensor]]:
    if torch.is_tensor(x):
        yield name, x
    elif isinstance(x, Mapping):
        for k, v in x.items():
            yield from _named_tensors(v, f"{name} {k!r}")
    elif isinstance(x, (list, tuple)):
        for i, v in enumerate(x):
            yield from _named_tensors(v, f"{name} [{i}]")


def check_finite_batch(inputs: Any, targets: Any, where: str, task: str | None = None) -> None:
    """Raise :class:`BatchDataError` when a floating-point tensor of ``inputs`` or ``targets`` (tensors, or
    dicts/lists of them) holds NaN or Inf. One device synchronisation when everything is finite.

    Args:
        where: the step, e.g. ``"training epoch 3, batch 7"``.
        task: the task the batch belongs to (multi-input) or ``None``; target dict keys name the tasks otherwise.
    """
    named = [(n, t) for n, t in (*_named_tensors(inputs, "input batch"), *_named_tensors(targets, "target"))
             if t.is_floating_point() or t.is_complex()]
    if not named:
        return
    with torch.no_grad():
        if bool(torch.stack([torch.isfinite(t).all() for _, t in named]).all()):
            return
        bad = []
        for n, t in named:
            nan, inf = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
            if nan or inf:
                bad.append(f"{n} {describe(t)} has {nan} NaN and {inf} Inf of {t.numel()} values")
    of_task = f" (task {task!r})" if task else ""
    raise BatchDataError(
        f"non-finite data at {where}{of_task}: " + "; ".join(bad) + ". The batch was refused before the forward "
        "pass, so no parameter was updated with it. Look for NaN/Inf in the source data or a division by zero in the "
        "preprocessing or augmentation (this package's dataset readers check their files and name the bad one).")


def ignore_index_of(loss: Any) -> int:
    """The ``ignore_index`` of a LibMTL loss object: its own attribute, else that of a module it holds (e.g.
    LibMTL's ``CELoss().loss_fn``), else PyTorch's default ``-100``."""
    value = getattr(loss, "ignore_index", None)
    if isinstance(value, int):
        return value
    for attr in vars(loss).values() if hasattr(loss, "__dict__") else ():
        if isinstance(attr, nn.Module) and isinstance(getattr(attr, "ignore_index", None), int):
            return int(attr.ignore_index)
    return TORCH_IGNORE_INDEX


def check_class_labels(pred: Any, gt: Any, loss: Any, where: str, task: str) -> None:
    """Raise :class:`BatchDataError` when ``gt`` looks like class indices for ``pred``'s logits (integer
    ``(B, ...)`` targets, floating ``(B, C, ...)`` predictions) and holds a value outside ``[0, C-1]`` other than
    the loss's ignore index (:func:`ignore_index_of`)."""
    if not (torch.is_tensor(pred) and torch.is_tensor(gt)) or not pred.is_floating_point():
        return
    if gt.dtype == torch.bool or gt.is_floating_point() or gt.is_complex() or pred.dim() != gt.dim() + 1:
        return
    classes, ignore = int(pred.shape[1]), ignore_index_of(loss)
    with torch.no_grad():
        bad_mask = ((gt < 0) | (gt >= classes)) & (gt != ignore)
        if not bool(bad_mask.any()):
            return
        found = sorted({int(v) for v in torch.unique(gt[bad_mask])[:5].tolist()})
    raise BatchDataError(
        f"{where}: task {task!r}: class labels out of range [0, {classes - 1}] (the predictions have {classes} "
        f"classes; ignore index {ignore}): found {', '.join(map(str, found))} in the targets {describe(gt)}. Fix the "
        "labels of the dataset, or give the task's head as many outputs as there are classes.")


def task_loss(loss: Any, pred: Any, gt: Any, where: str, task: str) -> Tensor:
    """``loss._update_loss(pred, gt)`` (LibMTL's per-batch loss call) after :func:`check_class_labels`; a failure
    of the loss is re-raised as :class:`BatchDataError` naming the task, the step and the shapes (out-of-memory
    errors pass unchanged)."""
    check_class_labels(pred, gt, loss, where, task)
    try:
        return loss._update_loss(pred, gt)
    except (BatchDataError, _OOM):
        raise
    except (RuntimeError, ValueError, IndexError, TypeError) as exc:
        raise BatchDataError(
            f"{where}: the loss of task {task!r} failed on predictions {describe(pred)} and targets {describe(gt)}: "
            f"{exc}. Check the shape and dtype of the dataset's {task!r} targets.") from exc


def check_nonempty(loaders: Any, split: str, tasks: Sequence[str], multi_input: bool) -> None:
    """Raise :class:`BatchDataError` when the ``split`` loader (or a task's, multi-input) yields no batch."""
    items = [(t, loaders[t]) for t in tasks] if multi_input else [(None, loaders)]
    empty = [t for t, ld in items if batches_per_pass(ld) == 0]
    if empty:
        which = f" of task(s) {empty}" if multi_input else ""
        raise BatchDataError(f"the {split} data{which} yield no batch: the {split} split is empty (check the dataset "
                             "folder and split lists) or smaller than the batch size with drop_last")


def _size(loader: Any) -> str:
    n, bs = getattr(getattr(loader, "dataset", None), "__len__", None), getattr(loader, "batch_size", None)
    return f"{n()} item(s) at batch size {bs}" if callable(n) and bs is not None else "no batch"


def check_train_batches(loaders: Any, tasks: Sequence[str], multi_input: bool) -> None:
    """Raise :class:`BatchDataError` when the training loader (or a task's, multi-input) yields no batch, naming
    its size and batch size and the fix."""
    items = [(t, loaders[t]) for t in tasks] if multi_input else [("", loaders)]
    empty = [f"{t + ': ' if t else ''}{_size(ld)}" for t, ld in items if batches_per_pass(ld) == 0]
    if empty:
        raise BatchDataError(
            f"the training data yield no batch ({'; '.join(empty)}; incomplete training batches are dropped): "
            "lower the training batch size (--train_bs; Office: --bs; the harness: --option batch_size=N) or use "
            "more data")


def add_context(exc: BaseException, text: str) -> None:
    """Attach ``text`` to ``exc`` as a note (shown with the traceback; Python 3.11+, else nothing)."""
    note = getattr(exc, "add_note", None)
    if note is not None:
        note(text)


@contextlib.contextmanager
def batch_context(where: str, detail: str | Callable[[], str] | None = None) -> Iterator[None]:
    """Add ``while processing <where> (<detail>)`` to errors raised inside (``detail`` may be a callable,
    evaluated on error), except :class:`BatchDataError` (which says where already) and ``KeyboardInterrupt``."""
    try:
        yield
    except BatchDataError:
        raise
    except Exception as exc:
        text = detail() if callable(detail) else detail
        add_context(exc, f"while processing {where}" + (f" ({text})" if text else ""))
        raise


__all__ = ["BatchDataError", "TORCH_IGNORE_INDEX", "add_context", "batch_context", "check_class_labels",
           "check_finite_batch", "check_nonempty", "check_train_batches", "describe", "ignore_index_of", "task_loss"]
