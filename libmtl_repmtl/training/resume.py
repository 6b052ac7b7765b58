"""Exact resume: the random-number state and the training data order, saved in ``last.pt`` and restored.

A resumed run must see exactly the batches, augmentations and random draws an uninterrupted run would. The
trainer checkpoints the model, optimiser, scheduler and the weighting's state itself; this module adds

* :func:`capture_rng_state` / :func:`restore_rng_state`: Python's ``random``, NumPy's global RNG, torch's CPU
  RNG and the trainer's CUDA device's RNG;
* :class:`LoaderCursor`: a training ``DataLoader`` together with its current iterator, counting the iterators
  started and the batches drawn from the current one, and snapshotting the RNGs that decide an iterator's
  order (the loader's shuffling ``torch.Generator``\\ s, and the global RNGs, which a loader without a
  generator draws its seeds from) when an iterator is started.

How the data order is restored (:meth:`LoaderCursor.load_state_dict`): the shuffling generators and global RNGs
are put back to their state when the current iterator was started, a new iterator is started, and the batches
the interrupted run had already drawn from it are drawn again and dropped (fast-forward). The caller then
restores the global RNGs (:func:`restore_rng_state`), so the fast-forward's own draws (e.g. random
augmentation of the dropped batches) leave no trace. Fast-forward only happens when the checkpoint was taken
inside an iterator, which in the trainer only happens for multi-input runs whose tasks' loaders have different
lengths (the shorter ones wrap around within an epoch); at the end of every epoch the trainer calls
:meth:`LoaderCursor.settle`, which closes an iterator that has served all its batches (a ``next`` that raises
``StopIteration`` without loading anything), so the common case restores without loading any data.

Limits: loaders with ``num_workers > 0`` and ``persistent_workers=True`` keep their workers' RNG streams across
epochs, which a new process cannot recreate: the batch *order* is still exact (the workers are started before
the generators are restored, so the base-seed draw of a first iterator does not shift it), random augmentation
done in the workers is not. ``num_workers = 0`` (or non-persistent workers) is exact.

Extending (distributed samplers): pass ``before_iter`` (e.g. ``lambda loader, n: loader.sampler.set_epoch(n)``)
and it is called with the number of iterators started before each new iterator, also when a resumed run
recreates the interrupted one, so an order that is a function of ``(seed, n)`` is reproduced too.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

#: Format tag of :meth:`LoaderCursor.state_dict`.
CURSOR_FORMAT = "libmtl_repmtl.loader_cursor/1"

BeforeIter = Callable[[Any, int], None]


# ---------------------------------------------------------------------------------------------- global RNGs
def capture_rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """The states of Python's ``random``, NumPy's global RNG, torch's CPU RNG and, when ``device`` is a CUDA
    device, that device's RNG (keys ``python``, ``numpy``, ``torch``, ``cuda``)."""
    state: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(),
                             "torch": torch.get_rng_state()}
    if device is not None and torch.device(device).type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng_state(state: Mapping[str, Any], device: torch.device | None = None) -> None:
    """Restore what :func:`capture_rng_state` captured (missing keys are left alone; the CUDA state only when
    ``device`` is a CUDA device)."""
    if "python" in state:
        py = state["python"]
        # pickled as nested tuples or, after some round trips, lists: random.setstate needs tuples
        random.setstate((py[0], tuple(py[1]), py[2]) if isinstance(py, (list, tuple)) else py)
    if "numpy" in state:
        np.random.set_state(state["numpy"])
    if "torch" in state:
        torch.set_rng_state(torch.as_tensor(state["torch"]).cpu())
    if "cuda" in state and device is not None and torch.device(device).type == "cuda":
        torch.cuda.set_rng_state(torch.as_tensor(state["cuda"]).cpu(), device)


# ---------------------------------------------------------------------------------------------- loaders
def shuffle_generators(loader: Any) -> list[torch.Generator]:
    """The distinct ``torch.Generator``\\ s that decide ``loader``'s order: ``loader.generator`` (the worker
    base seed and the default ``RandomSampler``'s permutations) and the ``generator`` of its sampler and of
    its batch sampler's sampler, when they have one."""
    cands = [getattr(loader, "generator", None), getattr(getattr(loader, "sampler", None), "generator", None)]
    batch_sampler = getattr(loader, "batch_sampler", None)
    cands.append(getattr(getattr(batch_sampler, "sampler", None), "generator", None))
    out: list[torch.Generator] = []
    for g in cands:
        if isinstance(g, torch.Generator) and all(g is not h for h in out):
            out.append(g)
    return out


def batches_per_pass(loader: Any) -> int | None:
    """``len(loader)``: the batches one pass yields; ``None`` for a loader without a length."""
    try:
        return int(len(loader))
    except TypeError:
        return None


def _is_map_style(loader: Any) -> bool:
    return isinstance(loader, DataLoader) and not isinstance(loader.dataset, IterableDataset)


def _persistent_workers(loader: Any) -> bool:
    return isinstance(loader, DataLoader) and loader.num_workers > 0 and bool(loader.persistent_workers)


def _start_workers(loader: Any) -> None:
    """Start a persistent-worker loader's workers (its first iterator). A persistent loader's first iterator
    draws the workers' base seed from the shuffling generator, later ones (``_reset``) do not; so before a
    later iterator is recreated, the first one must exist, or the extra draw would shift the order."""
    iter(loader)


class LoaderCursor:
    """A ``DataLoader`` with its current iterator; restarts it when exhausted (LibMTL's training loop) and
    records where it stands, so that a resumed run continues with the very next batch.

    Args:
        loader: the ``DataLoader`` (anything with ``__iter__``; the state is exact for map-style loaders).
        name: the task it serves (multi-input) or ``None``; used in messages.
        before_iter: called as ``before_iter(loader, n)`` before the ``n``-th iterator (0-based) is started.

    Attributes:
        iterations: iterators started so far.
        consumed: batches drawn from the current iterator.
    """

    def __init__(self, loader: Any, name: str | None = None, before_iter: BeforeIter | None = None) -> None:
        self.loader = loader
        self.name = name
        self.before_iter = before_iter
        self.iterator: Iterator[Any] | None = None
        self.iterations = 0
        self.consumed = 0
        self._start: dict[str, Any] | None = None
        self._peeked: list[Any] = []

    def __repr__(self) -> str:
        return (f"LoaderCursor({self.name or 'loader'}: iterator {self.iterations}, "
                f"{self.consumed} batch(es) drawn from it)")

    # ------------------------------------------------------------------ iteration
    def _snapshot(self) -> dict[str, Any]:
        return {"generators": [g.get_state() for g in shuffle_generators(self.loader)], "rng": capture_rng_state()}

    def _new_iterator(self) -> Iterator[Any]:
        if self.before_iter is not None:
            self.before_iter(self.loader, self.iterations)
        self._start = self._snapshot()
        it = iter(self.loader)
        self.iterator = it
        self.iterations += 1
        self.consumed = 0
        return it

    def next_batch(self) -> Any:
        """The next batch; a new iterator is started when the current one is exhausted (or none exists).

        Raises:
            ValueError: the loader yields no batch at all.
        """
        if self._peeked:
            self.consumed += 1
            return self._peeked.pop()
        it = self.iterator if self.iterator is not None else self._new_iterator()
        try:
            batch = next(it)
        except StopIteration:
            try:
                batch = next(self._new_iterator())
            except StopIteration:
                raise ValueError(f"the {self.name + ' ' if self.name else ''}data loader yields no batch (an empty "
                                 "split, or fewer items than the batch size with drop_last)") from None
        self.consumed += 1
        return batch

    def settle(self) -> None:
        """Close the current iterator if it has served all its batches (``len(loader)``): one ``next`` that
        raises ``StopIteration`` without loading data, exactly the call the next ``next_batch`` would make. After
        it the cursor's state holds no position inside an iterator, so a resume needs no fast-forward."""
        n = batches_per_pass(self.loader)
        if self.iterator is None or self._peeked or n is None or self.consumed < n or not _is_map_style(self.loader):
            return
        try:
            batch = next(self.iterator)
        except StopIteration:
            self.iterator, self.consumed, self._start = None, 0, None
            return
        self._peeked.append(batch)  # len() under-counted (a custom batch sampler): serve it next

    def reset(self) -> None:
        """Forget the current iterator and the counts (the next batch starts a new iterator, numbered 0)."""
        self.iterator, self._start, self._peeked = None, None, []
        self.iterations = self.consumed = 0

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Where the cursor stands: ``batches`` (per pass), ``iterations``, ``consumed``, ``active`` (inside an
        iterator), ``generators`` (the shuffling generators' states now) and ``start`` (the generators' and
        global RNGs' states when the current iterator was started; ``None`` when not active)."""
        return {"format": CURSOR_FORMAT, "name": self.name, "batches": batches_per_pass(self.loader),
                "iterations": self.iterations, "consumed": self.consumed, "active": self.iterator is not None,
                "generators": [g.get_state() for g in shuffle_generators(self.loader)],
                "start": self._start if self.iterator is not None else None}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue where :meth:`state_dict` was taken (see the module docstring). Inside an iterator, the
        already drawn batches are drawn again and dropped; the global RNGs are left where that leaves them, so
        restore them afterwards (:func:`restore_rng_state`).

        Raises:
            ValueError: the state belongs to a loader of another length or with another number of shuffling
                generators (the data or the batch size changed since the checkpoint).
        """
        who = f"{self.name} " if self.name else ""
        mine, theirs = batches_per_pass(self.loader), state.get("batches")
        if mine is not None and theirs is not None and mine != theirs:
            raise ValueError(f"the {who}training loader gives {mine} batches per pass but the checkpoint's gave "
                             f"{theirs} batches: the training data or the batch size changed since the checkpoint; "
                             "resume with the same data and --train_bs, or start afresh without --resume")
        gens = shuffle_generators(self.loader)
        if len(gens) != len(state.get("generators") or []):
            raise ValueError(f"the {who}training loader has {len(gens)} shuffling generator(s) but the checkpoint's "
                             f"had {len(state.get('generators') or [])}: the loaders were built differently")
        self._peeked = []
        started = int(state["iterations"]) - (1 if state.get("active") else 0)  # iterators before the one to make
        if started > 0 and _persistent_workers(self.loader):
            _start_workers(self.loader)
        if not state.get("active"):
            for g, s in zip(gens, state["generators"]):
                g.set_state(torch.as_tensor(s).cpu())
            self.iterator, self._start = None, None
            self.iterations, self.consumed = int(state["iterations"]), 0
            return
        start = state["start"]
        for g, s in zip(gens, start["generators"]):
            g.set_state(torch.as_tensor(s).cpu())
        restore_rng_state(start["rng"])
        self.iterations = int(state["iterations"]) - 1
        it = self._new_iterator()
        for k in range(int(state["consumed"])):
            try:
                next(it)
            except StopIteration:
                raise ValueError(f"the {who}training loader ran out after {k} batches while the checkpoint had "
                                 f"drawn {state['consumed']} from that pass: the data changed since the "
                                 "checkpoint") from None
        self.consumed = int(state["consumed"])
        now = [g.get_state() for g in gens]
        if any(not torch.equal(a, torch.as_tensor(b).cpu()) for a, b in zip(now, state["generators"])):
            warnings.warn(f"resume: the {who}training loader's shuffling generator does not reach the checkpoint's "
                          "state when its batches are replayed (a sampler with its own randomness?); the data order "
                          "after the resume may differ from an uninterrupted run", RuntimeWarning, stacklevel=2)


def next_batch(loader: LoaderCursor | list[Any]) -> Any:
    """The next batch of a :class:`LoaderCursor` or of a LibMTL-style ``[dataloader, iterator]`` pair (the
    iterator is restarted in place when exhausted)."""
    if isinstance(loader, LoaderCursor):
        return loader.next_batch()
    try:
        return next(loader[1])
    except StopIteration:
        loader[1] = iter(loader[0])
        return next(loader[1])


def cursors_of(loaders: LoaderCursor | Mapping[str, LoaderCursor] | Sequence[Any]) -> list[LoaderCursor]:
    """The cursors of a prepared training loader (one cursor, or task -> cursor), in task order."""
    if isinstance(loaders, LoaderCursor):
        return [loaders]
    if isinstance(loaders, Mapping):
        return [c for c in loaders.values() if isinstance(c, LoaderCursor)]
    return []


def data_order_state(cursors: Sequence[LoaderCursor]) -> dict[str, Any]:
    """The checkpoint entry of the training loaders' positions: ``{"train": [cursor state, ...]}``."""
    return {"train": [c.state_dict() for c in cursors]}


def restore_data_order(cursors: Sequence[LoaderCursor], state: Mapping[str, Any] | None, source: str) -> bool:
    """Put ``cursors`` where ``state`` (:func:`data_order_state`) says; returns whether it could.

    Nothing happens (``False``) when there are no cursors (a checkpoint loaded outside training). When the
    checkpoint has no data-order entry (an older version) or it does not fit the loaders (another number of
    loaders, other lengths: the data or ``--train_bs`` changed), a ``RuntimeWarning`` says why and the cursors
    start afresh (``False``): the run continues, but not exactly as an uninterrupted one would.
    """
    if not cursors:
        return False
    saved = list((state or {}).get("train") or [])
    why = None
    if not saved:
        why = "it holds no data-order state (written by an older version)"
    elif len(saved) != len(cursors):
        why = f"it holds the positions of {len(saved)} training loader(s) but this run has {len(cursors)}"
    else:
        try:
            for cursor, st in zip(cursors, saved):
                cursor.load_state_dict(st)
            return True
        except ValueError as exc:
            why = str(exc)
    for cursor in cursors:
        cursor.reset()
    warnings.warn(f"resume from {source}: the training data order cannot be restored ({why}); the resumed epochs "
                  "see another batch order than an uninterrupted run would", RuntimeWarning, stacklevel=2)
    return False


__all__ = ["CURSOR_FORMAT", "LoaderCursor", "batches_per_pass", "capture_rng_state", "cursors_of", "data_order_state",
           "next_batch", "restore_data_order", "restore_rng_state", "shuffle_generators"]
