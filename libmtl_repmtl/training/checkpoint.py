"""Checkpoints of a run: ``last.pt`` (an exact resume) and ``best.pt`` (what evaluation needs), written atomically.

``last.pt`` (:data:`CHECKPOINT_FORMAT`) holds everything a resumed run needs to continue exactly as an
uninterrupted one: ``model``, ``optimizer``, ``scheduler``, ``grad_scaler`` (the precision policy's state: the
GradScaler's with float16, else ``None``), ``rng`` (Python, NumPy, torch CPU and the run's CUDA device),
``data_order`` (the training loaders' positions, :mod:`~libmtl_repmtl.training.resume`), ``weighting_state``
(the weighting's non-parameter state, e.g. DWA's ``train_loss_buffer``), ``batch_weight``, the recorder's
``history``/``scores``/``best_epoch``/``best_score``, ``config``, ``settings`` (the part of ``config`` that
defines what is trained: :func:`~libmtl_repmtl.training.settings.training_settings`; a resume with other settings
is refused before anything is restored) and the run's identity (``task_name``, ``weighting``, ``architecture``,
``epoch``, ``epochs_total``).

``best.pt`` (:data:`BEST_FORMAT`) holds what evaluation and the analyses read: ``model`` (the state dict),
the identity, ``config``, ``epoch``, ``best_score`` and that epoch's public ``record`` (metrics, Δp); no
optimiser, scheduler, RNG or data order (for NYUv2's ResNet-50 with Adam, the optimiser's two moment buffers
are twice the model's size).

Every file is written through :func:`~libmtl_repmtl.training.io.write_run_file` (a failure, e.g. a full disk,
is a :class:`~libmtl_repmtl.training.io.RunFileWriteError` naming the file and the epoch).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from libmtl_repmtl.training.io import atomic_torch_save, to_jsonable, write_run_file
from libmtl_repmtl.training.precision import Precision
from libmtl_repmtl.training.recorder import Recorder
from libmtl_repmtl.training.resume import (
    LoaderCursor,
    capture_rng_state,
    data_order_state,
    restore_data_order,
    restore_rng_state,
)
from libmtl_repmtl.training.settings import NOT_SETTINGS, describe_differences, setting_differences, training_settings

#: Format tag of ``last.pt`` (resume); 2: the score lists beside the history instead of inside its records;
#: 3: ``settings``, the run's training settings, which a resume must match.
CHECKPOINT_FORMAT = "libmtl_repmtl.checkpoint/3"
#: Format tag of ``best.pt`` (evaluation).
BEST_FORMAT = "libmtl_repmtl.best/1"

# Model attributes that are configuration, not weighting state (never checkpointed as state).
_MODEL_CONFIG_ATTRS = frozenset({"task_name", "task_num", "encoder_class", "rep_grad", "multi_input", "device",
                                 "kwargs", "rep", "rep_tasks", "grad_index", "grad_dim", "repmtl_gather"})


@dataclass(frozen=True)
class RunIdentity:
    """What a checkpoint must match to be resumed by a run: the tasks, weighting and architecture names."""

    task_name: tuple[str, ...]
    weighting: str
    architecture: str

    def as_dict(self) -> dict[str, Any]:
        return {"task_name": list(self.task_name), "weighting": self.weighting, "architecture": self.architecture}


def weighting_state(model: nn.Module) -> dict[str, Any]:
    """The weighting's own non-parameter state on ``model`` (e.g. ``train_loss_buffer``, step counters)."""
    skip = set(nn.Module().__dict__) | _MODEL_CONFIG_ATTRS
    out = {}
    for k, v in model.__dict__.items():
        if k in skip or isinstance(v, nn.Module) or callable(v):
            continue
        if _is_plain(v):
            out[k] = v.detach().cpu() if torch.is_tensor(v) else v
    return out


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


class Checkpointer:
    """Captures, writes and restores the checkpoints of one run.

    Args:
        save_path: the run folder (``None``: nothing is written).
        writes: this process writes files (rank 0 of a torchrun job; every process reads ``last.pt``).
        identity: the run's tasks, weighting and architecture.
        model, optimizer, scheduler, precision, recorder: the run's parts whose state is saved.
        device: where restored tensors go (and whose CUDA RNG is saved).
        config: the run configuration stored in the files.
    """

    def __init__(self, save_path: str | os.PathLike[str] | None, *, writes: bool, identity: RunIdentity,
                 model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, precision: Precision,
                 recorder: Recorder, device: torch.device, config: Mapping[str, Any]) -> None:
        self.save_path = Path(save_path) if save_path is not None else None
        self.writes = bool(writes) and self.save_path is not None
        self.identity, self.model, self.optimizer, self.scheduler = identity, model, optimizer, scheduler
        self.precision, self.recorder, self.device, self.config = precision, recorder, device, config

    @property
    def last_path(self) -> Path | None:
        """``save_path/last.pt`` (``None`` without a save path)."""
        return self.save_path / "last.pt" if self.save_path is not None else None

    # -------------------------------------------------------------- capture
    def last_state(self, epoch: int, epochs_total: int | None, batch_weight: np.ndarray,
                   cursors: Sequence[LoaderCursor]) -> dict[str, Any]:
        """The contents of ``last.pt`` after ``epoch`` (see the module docstring)."""
        return {
            "format": CHECKPOINT_FORMAT, "epoch": epoch, "epochs_total": epochs_total,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "grad_scaler": self.precision.state_dict(), "rng": capture_rng_state(self.device),
            "data_order": data_order_state(cursors),
            "weighting_state": weighting_state(self.model), "batch_weight": batch_weight[:, : epoch + 1].copy(),
            **self.recorder.state_dict(), "config": to_jsonable(self.config),
            "settings": training_settings(self.config), **self.identity.as_dict(),
        }

    def best_state(self, epoch: int) -> dict[str, Any]:
        """The contents of ``best.pt`` for ``epoch`` (see the module docstring)."""
        return {"format": BEST_FORMAT, "epoch": epoch, "model": self.model.state_dict(),
                "best_score": self.recorder.best_score, "record": self.recorder.record(epoch),
                "config": to_jsonable(self.config), **self.identity.as_dict()}

    # -------------------------------------------------------------- write
    def save(self, epoch: int, improved: bool, epochs_total: int | None, batch_weight: np.ndarray,
             cursors: Sequence[LoaderCursor]) -> None:
        """Write ``best.pt`` (when ``improved``) and ``last.pt`` after ``epoch`` (only where :attr:`writes`).

        Raises:
            RunFileWriteError: a file could not be written (it keeps its previous complete version).
        """
        if not self.writes or self.save_path is None:
            return
        when = f"the end of epoch {epoch}"
        if improved:
            write_run_file(self.save_path / "best.pt", lambda p: atomic_torch_save(p, self.best_state(epoch)), when)
        write_run_file(self.save_path / "last.pt",
                       lambda p: atomic_torch_save(p, self.last_state(epoch, epochs_total, batch_weight, cursors)),
                       when)

    # -------------------------------------------------------------- restore
    def load(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """Read a checkpoint (this package's own files: loaded with pickle) onto :attr:`device`."""
        return torch.load(path, map_location=self.device, weights_only=False)

    def restore(self, state: Mapping[str, Any], source: str, batch_weight: np.ndarray,
                cursors: Sequence[LoaderCursor]) -> int:
        """Restore a loaded :meth:`last_state` into the run's parts (``batch_weight`` in place); returns the
        first epoch still to train.

        Raises:
            ValueError: another format (an older version's file), or a checkpoint of another run (tasks,
                weighting or architecture differ), or of this run with other training settings (the message
                names each, the checkpoint's value and this run's); nothing is restored then.
        """
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"cannot resume from {source}: its format is {state.get('format')!r}, this version "
                             f"resumes only {CHECKPOINT_FORMAT!r}; use another --save_path (or drop --resume) "
                             "to start afresh, or resume with the version that wrote it")
        mine = self.identity.as_dict()
        theirs = {k: state.get(k) for k in mine}
        if list(theirs["task_name"] or []) != mine["task_name"] or (theirs["weighting"], theirs["architecture"]) \
                != (mine["weighting"], mine["architecture"]):
            raise ValueError(f"cannot resume from {source}: it holds tasks/weighting/arch "
                             f"{tuple(theirs.values())}, this run is {tuple(mine.values())}; use another "
                             "--save_path or drop --resume")
        self.check_settings(state, source)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.precision.load_state_dict(state.get("grad_scaler"))
        self._restore_weighting_state(state.get("weighting_state") or {})
        bw = np.asarray(state.get("batch_weight", np.zeros((batch_weight.shape[0], 0, 0))))
        if bw.ndim == 3 and bw.shape[2] == batch_weight.shape[2]:
            n = min(bw.shape[1], batch_weight.shape[1])
            batch_weight[:, :n] = bw[:, :n]
        # The data order first: replaying batches may draw random numbers, which the RNG restore then undoes.
        restore_data_order(cursors, state.get("data_order"), source)
        restore_rng_state(state.get("rng") or {}, self.device)
        self.recorder.load_state_dict(state)
        return int(state["epoch"]) + 1

    def check_settings(self, state: Mapping[str, Any], source: str) -> None:
        """Refuse a checkpoint whose training settings differ from this run's :attr:`config`.

        Raises:
            ValueError: naming each differing setting with the checkpoint's value and this run's, and the fix.
        """
        diffs = setting_differences(state.get("settings") or {}, self.config)
        if diffs:
            allowed = ", ".join(sorted(NOT_SETTINGS - {"argv_params"}))
            raise ValueError(f"cannot resume from {source}: it was trained with other settings than this run's: "
                             f"{describe_differences(diffs, 'checkpoint', 'this run')}. Resume with the flags the "
                             f"run was started with (only {allowed} may change), or use another --save_path (or "
                             "drop --resume) to start a new run with these settings")

    def _restore_weighting_state(self, saved: Mapping[str, Any]) -> None:
        for k, v in saved.items():
            if k == "train_loss_buffer":
                buf = np.zeros_like(self.model.train_loss_buffer)
                n = min(buf.shape[1], np.asarray(v).shape[1])
                buf[:, :n] = np.asarray(v)[:, :n]
                v = buf
            elif torch.is_tensor(v):
                v = v.to(self.device)
            setattr(self.model, k, v)


__all__ = ["BEST_FORMAT", "CHECKPOINT_FORMAT", "Checkpointer", "RunIdentity", "weighting_state"]
