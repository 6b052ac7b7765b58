"""Collectives of a torchrun job: sums, gathers, metric merges, agreement, and writes done by rank 0.

Every function is the identity (or a no-op) in a single process, so callers use them unconditionally.
``env`` is a :class:`~libmtl_repmtl.training.dist_env.DistEnv`. A metric class says which of its
attributes are epoch sums (class attribute ``ddp_sum_attrs``; :mod:`libmtl_repmtl.tasks.metrics`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from libmtl_repmtl.training.dist_env import DistEnv

T = TypeVar("T")


def _transport_device(env: DistEnv) -> torch.device:
    return env.device if env.backend == "nccl" else torch.device("cpu")


def reduce_sums(value: Any, env: DistEnv) -> Any:
    """Sum ``value`` over ranks: a tensor, a NumPy array/scalar, a number, or a (nested) dict/list/tuple of them.

    Tensors keep their dtype, shape and device, arrays their dtype and shape; Python ints stay ints, floats are
    summed in float64. Every rank
    must call it with the same structure.
    """
    if not env.distributed:
        return value
    leaves: list[Any] = []

    def collect(v: Any) -> None:
        if isinstance(v, Mapping):
            for k in v:
                collect(v[k])
        elif isinstance(v, (list, tuple)):
            for x in v:
                collect(x)
        else:
            leaves.append(v)

    collect(value)
    dev = _transport_device(env)
    reduced = []
    for leaf in leaves:
        if torch.is_tensor(leaf):
            t = leaf.detach().to(dev).clone()
            dist.all_reduce(t)
            reduced.append(t.to(leaf.device))
        elif isinstance(leaf, (np.ndarray, np.generic)):
            t = torch.from_numpy(np.array(leaf, copy=True)).to(dev)
            dist.all_reduce(t)
            reduced.append(t.cpu().numpy() if isinstance(leaf, np.ndarray) else t.cpu().numpy()[()])
        elif isinstance(leaf, bool) or not isinstance(leaf, (int, float)):
            raise TypeError(f"reduce_sums: cannot sum a {type(leaf).__name__} ({leaf!r})")
        else:
            t = torch.tensor(leaf, dtype=torch.int64 if isinstance(leaf, int) else torch.float64, device=dev)
            dist.all_reduce(t)
            reduced.append(t.item())
    it = iter(reduced)

    def rebuild(v: Any) -> Any:
        if isinstance(v, Mapping):
            return {k: rebuild(v[k]) for k in v}
        if isinstance(v, (list, tuple)):
            return type(v)(rebuild(x) for x in v)
        return next(it)

    return rebuild(value)


def gather_objects(obj: T, env: DistEnv) -> list[T]:
    """Every rank's ``obj`` (picklable), in rank order."""
    if not env.distributed:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def reduce_metric(metric: Any, env: DistEnv, sum_attrs: Sequence[str] | None = None) -> None:
    """Merge one metric (or LibMTL loss) object's epoch state across ranks, in place.

    * list attributes (``record``, ``bs``, ``angles``, ...): concatenated in rank order;
    * ``sum_attrs`` (default: the class attribute ``ddp_sum_attrs``, none when absent): summed;
    * other int/float attributes must agree across ranks (configuration such as ``num_classes``).

    Raises:
        ValueError: a numeric attribute differs across ranks and is not declared as a sum (the message names
            it and says how to declare it).
    """
    if not env.distributed:
        return
    cls = type(metric)
    if sum_attrs is None:
        sum_attrs = tuple(getattr(cls, "ddp_sum_attrs", ()))
    state = vars(metric)
    lists = sorted(k for k, v in state.items() if isinstance(v, list))
    sums = [k for k in sum_attrs if k in state]
    scalars = sorted(k for k, v in state.items()
                     if k not in sums and isinstance(v, (int, float)) and not isinstance(v, bool))
    gathered = gather_objects({k: state[k] for k in lists + scalars}, env)
    for k in scalars:
        values = [g[k] for g in gathered]
        if any(v != values[0] for v in values):
            raise ValueError(
                f"{cls.__name__}.{k} differs across ranks {values}: if it accumulates over the epoch, declare it "
                f"as a sum: `ddp_sum_attrs = ({k!r}, ...)` on the class, or pass sum_attrs to reduce_metric")
    for k in lists:
        setattr(metric, k, [x for g in gathered for x in g[k]])
    reduced = reduce_sums({k: state[k] for k in sums}, env)
    for k, v in reduced.items():
        setattr(metric, k, v)


def all_reduce_metric_state(meter: Any, env: DistEnv) -> None:
    """Merge a LibMTL ``_PerformanceMeter``'s metric and loss accumulators across ranks, in place.

    Call it after the last batch of a split and BEFORE ``meter.get_score()``; every rank then computes the
    scores of the whole split, equal to a single-process pass over the same samples (exactly for counts and
    confusion matrices; float sums up to summation order). Also accepts a mapping of metric objects.
    """
    if not env.distributed:
        return
    if isinstance(meter, Mapping):
        objects = [meter[k] for k in sorted(meter)]
    else:
        objects = [meter.metrics[t] for t in meter.task_name] + [meter.losses[t] for t in meter.task_name]
    for obj in objects:
        reduce_metric(obj, env)


def any_rank(flag: bool | Tensor, env: DistEnv) -> bool:
    """True on every rank when ``flag`` is true on at least one rank (e.g. a non-finite loss: all ranks must
    stop together, or the others wait forever in the gradient all-reduce)."""
    value = bool(flag.detach().any()) if torch.is_tensor(flag) else bool(flag)
    if not env.distributed:
        return value
    t = torch.tensor([int(value)], device=_transport_device(env))
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


# ---------------------------------------------------------------------------------------------- writing
def is_main(env: DistEnv | None = None) -> bool:
    """Rank 0 (or no process group): the process that writes files and prints."""
    if env is not None:
        return env.is_main
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def run_on_main(env: DistEnv, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """Run ``fn`` on rank 0 only (e.g. an atomic results/checkpoint writer) and let every rank know how it went.

    Collective: every rank must call it. Returns ``fn``'s result on rank 0 and ``None`` elsewhere.

    Raises:
        RuntimeError: on ranks other than 0, when ``fn`` failed on rank 0 (rank 0 re-raises its own error), so
            no rank continues after a failed write (e.g. a full disk).
    """
    error: str | None = None
    result: T | None = None
    exc: BaseException | None = None
    if env.is_main:
        try:
            result = fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - reported to every rank, then re-raised
            exc, error = e, f"{type(e).__name__}: {e}"
    if env.distributed:
        box = [error]
        dist.broadcast_object_list(box, src=0)
        error = box[0]
    if exc is not None:
        raise exc
    if error is not None:
        raise RuntimeError(f"rank 0 failed in {getattr(fn, '__name__', 'a write')}: {error}")
    return result



__all__ = ["all_reduce_metric_state", "any_rank", "gather_objects", "is_main", "reduce_metric", "reduce_sums",
           "run_on_main"]
