"""Data-parallel training helpers (``torchrun`` + ``DistributedDataParallel``) for LibMTL-style trainers.

One job per function; the trainer composes them (see ``docs/distributed.md`` for the loop and the objective):

* :func:`init_from_env` -> :class:`DistEnv` (reads torchrun's ``RANK``/``LOCAL_RANK``/``WORLD_SIZE``);
* :func:`check_weighting_supports_ddp` refuses gradient-manipulation weightings;
* :func:`wrap_model` -> :class:`DDPModel` (forward through DDP, LibMTL's ``backward``/``rep``/... on the
  inner model; evaluation forwards bypass DDP);
* :func:`make_sampler` / :func:`make_eval_sampler` / :func:`set_sampler_epoch`;
* :func:`reduce_sums`, :func:`all_reduce_metric_state`, :func:`any_rank`;
* :func:`run_on_main`, :func:`barrier`, :func:`broadcast_buffers`, :func:`cleanup`;
* :func:`shard_loader` / :func:`shard_loaders`: a benchmark's ordinary loaders re-built on the samplers above;
* :class:`DataParallelTrainerMixin`: all of the above (and mixed precision) in ``MTLTrainer``'s hooks.

Every function is a no-op (or the identity) in a single process, so the trainer calls them unconditionally.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset, RandomSampler, Sampler

T = TypeVar("T")

#: Weightings whose ``backward`` back-propagates one scalar combination of the task losses: DDP's averaged
#: gradient is the gradient of the mean over ranks of that scalar.
DDP_LOSS_WEIGHTINGS = frozenset({"EW", "UW", "DWA", "GLS", "RLW", "RepMTL", "STCH"})
#: Weightings that read or rewrite per-task gradients of the shared parameters (refused under DDP).
DDP_GRADIENT_WEIGHTINGS = frozenset({"MGDA", "PCGrad", "GradVac", "CAGrad", "IMTL", "GradNorm", "GradDrop",
                                     "Nash_MTL", "Aligned_MTL", "DB_MTL", "MoCo", "FairGrad", "ExcessMTL",
                                     "MoDo", "SDMGrad", "UPGrad", "FAMO"})

#: Attributes of the project's metric classes that hold epoch sums (summed across ranks). List attributes
#: (LibMTL's ``record``/``bs``, ``NormalMetric.angles``) are concatenated in rank order.
METRIC_SUM_ATTRS: dict[str, tuple[str, ...]] = {
    "SegMetric": ("confusion",),
    "DepthMetric": ("abs_sum", "rel_sum", "count"),
    "AccMetric": ("correct", "total"),
}


# ---------------------------------------------------------------------------------------------- environment
@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job.

    Attributes:
        rank: global rank (0 .. world_size - 1).
        local_rank: rank on this machine (selects the CUDA device).
        world_size: number of processes (1: not distributed).
        device: the device this process trains on.
        backend: ``"nccl"``/``"gloo"`` when a process group is in use, else ``None``.
    """

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process, with an initialised process group."""
        return self.world_size > 1 and dist.is_available() and dist.is_initialized()


def _env_int(name: str, default: int | None) -> int:
    raw = os.environ.get(name)
    if raw is None:
        if default is None:
            raise RuntimeError(f"environment variable {name} is not set; launch with `torchrun --nproc_per_node N "
                               "...`, which sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT")
        return default
    try:
        return int(raw)
    except ValueError:
        raise RuntimeError(f"environment variable {name}={raw!r} is not an integer") from None


def init_from_env(backend: str | None = None, device: str | torch.device = "auto") -> DistEnv:
    """Read torchrun's environment and initialise the default process group when ``WORLD_SIZE > 1``.

    Args:
        backend: ``"nccl"``, ``"gloo"`` or ``None`` (nccl when training on CUDA, gloo on the CPU).
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``. On CUDA each process takes device
            ``cuda:LOCAL_RANK`` (an explicit ``cuda:N`` is refused under torchrun with several processes).

    Returns:
        The :class:`DistEnv`. Without torchrun's variables (or with ``WORLD_SIZE=1``): rank 0 of 1, no group.

    Raises:
        RuntimeError: inconsistent variables (rank outside the world, missing MASTER_ADDR/PORT), CUDA requested
            but unavailable, fewer CUDA devices than local ranks, or nccl requested for CPU training.
    """
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", rank if world > 1 else 0)
    if world < 1 or not 0 <= rank < world:
        raise RuntimeError(f"bad torchrun environment: RANK={rank}, WORLD_SIZE={world} (need 0 <= RANK < WORLD_SIZE)")
    spec = str(device).strip().lower()
    use_cuda = torch.cuda.is_available() if spec == "auto" else spec.startswith("cuda")
    if use_cuda:
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} requested but CUDA is not available; use --device cpu")
        if world > 1 and ":" in spec:
            raise RuntimeError(f"--device {device} names one GPU, but torchrun started {world} processes; use "
                               "--device cuda (each process takes cuda:LOCAL_RANK)")
        if world > 1 or spec in ("auto", "cuda"):
            index = local_rank if world > 1 else 0
        else:
            index = torch.device(spec).index or 0
        if index >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK {local_rank} needs cuda:{index} but only {torch.cuda.device_count()} "
                               "CUDA device(s) are visible; lower --nproc_per_node")
        torch.cuda.set_device(index)
        dev = torch.device("cuda", index)
    else:
        dev = torch.device("cpu")
    if world == 1:
        return DistEnv(0, 0, 1, dev, None)
    chosen = backend or ("nccl" if dev.type == "cuda" else "gloo")
    if chosen == "nccl" and dev.type != "cuda":
        raise RuntimeError("the nccl backend needs CUDA tensors; use --dist_backend gloo for CPU training")
    missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing:
        raise RuntimeError(f"WORLD_SIZE={world} but {missing} not set; launch with torchrun, or set them")
    if not dist.is_initialized():
        kwargs: dict[str, Any] = {"backend": chosen, "init_method": "env://", "rank": rank, "world_size": world}
        if dev.type == "cuda":
            kwargs["device_id"] = dev
        dist.init_process_group(**kwargs)
    return DistEnv(rank, local_rank, world, dev, chosen)


def env_from_group(device: str | torch.device = "cpu") -> DistEnv:
    """A :class:`DistEnv` for an already initialised default process group (e.g. created by a test)."""
    dev = torch.device(device)
    if not (dist.is_available() and dist.is_initialized()):
        return DistEnv(device=dev)
    rank = dist.get_rank()
    return DistEnv(rank, int(os.environ.get("LOCAL_RANK", rank)), dist.get_world_size(), dev, dist.get_backend())


def add_distributed_args(parser: argparse.ArgumentParser) -> None:
    """Add ``--sync_bn`` and ``--dist_backend`` (the ranks themselves come from torchrun's environment)."""
    group = parser.add_argument_group("distributed (torchrun)")
    group.add_argument("--sync_bn", action="store_true",
                       help="convert BatchNorm layers to SyncBatchNorm (batch statistics over all ranks; CUDA)")
    group.add_argument("--dist_backend", choices=["nccl", "gloo"], default=None,
                       help="process-group backend (default: nccl on CUDA, gloo on the CPU)")


def cleanup(env: DistEnv) -> None:
    """Destroy the process group (call once at the end, also after an error)."""
    if env.distributed:
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    """Wait for every rank (no-op in a single process)."""
    if not env.distributed:
        return
    if env.backend == "nccl":
        dist.barrier(device_ids=[env.device.index or 0])
    else:
        dist.barrier()


# ---------------------------------------------------------------------------------------------- weighting check
def check_weighting_supports_ddp(weighting: str | type) -> None:
    """Refuse weightings that cannot be synchronised by DDP's single gradient all-reduce.

    Args:
        weighting: a name (``"EW"``, ``"MGDA"``, ...) or class. Classes are judged by their own
            ``ddp_compatible`` attribute when they define one, else by the first known name in their MRO.

    Raises:
        ValueError: a gradient-manipulation method (MGDA, PCGrad, GradVac, CAGrad, IMTL, GradNorm, GradDrop,
            Nash-MTL, ...), or an unknown weighting that does not declare ``ddp_compatible = True``.
    """
    if isinstance(weighting, type):
        declared = weighting.__dict__.get("ddp_compatible")
        names = [k.__name__ for k in weighting.__mro__]
        for k in weighting.__mro__:
            if "ddp_compatible" in k.__dict__:
                declared = bool(k.__dict__["ddp_compatible"])
                break
        if declared is True:
            return
        label = weighting.__name__
    else:
        declared, names, label = None, [str(weighting)], str(weighting)
    known = next((n for n in names if n in DDP_LOSS_WEIGHTINGS or n in DDP_GRADIENT_WEIGHTINGS), None)
    if declared is False or (known is not None and known in DDP_GRADIENT_WEIGHTINGS):
        raise ValueError(
            f"weighting {label!r} cannot be trained with DistributedDataParallel: it combines the per-task "
            "gradients of the shared parameters (projections, min-norm solutions or gradient norms), but DDP "
            "all-reduces only the single summed gradient of each parameter, so no rank ever sees the global "
            "per-task gradients and the step would not be the method's step. Use --weighting RepMTL or a "
            f"loss-weighting method ({', '.join(sorted(DDP_LOSS_WEIGHTINGS - {'RepMTL'}))}), or train {label} "
            "in a single process (without torchrun).")
    if known is None:
        raise ValueError(
            f"weighting {label!r} is not known to be DDP-safe. If its backward() back-propagates one scalar "
            "combination of the task losses (a loss-weighting method), set the class attribute "
            "`ddp_compatible = True`; if it reads per-task gradients, train it in a single process.")


# ---------------------------------------------------------------------------------------------- model
class DDPModel(DistributedDataParallel):
    """``DistributedDataParallel`` around a LibMTL model (``class MTLmodel(arch, weighting)``).

    * Training forwards (grad enabled, ``train()`` mode) go through DDP, which arms its gradient all-reduce.
    * Evaluation forwards (``torch.no_grad()`` or ``eval()``) call the inner model directly: no collective, so
      ranks may evaluate different numbers of batches.
    * Attributes the wrapper does not have (``backward``, ``rep``, ``rep_tasks``, ``task_name``,
      ``repmtl_stats``, ``train_loss_buffer``, ``get_share_params``, ...) are read from the inner model, and
      assignments of new attributes (``model.epoch = 3``) go to it. ``model.backward(losses, **weight_args)``
      is therefore the weighting's backward; its ``.backward()`` calls fire DDP's per-parameter hooks.
    * ``state_dict``/``load_state_dict`` are the inner model's (no ``module.`` prefix): checkpoints are
      interchangeable with single-process ones.
    """

    _ddp_ready = False

    def __init__(self, module: nn.Module, **kwargs: Any) -> None:
        super().__init__(module, **kwargs)
        self._ddp_ready = True

    def forward(self, *args: Any, **kwargs: Any) -> Any:  # noqa: D102
        if torch.is_grad_enabled() and self.training:
            return super().forward(*args, **kwargs)
        return self.module(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            module = super().__getattr__("module")
            return getattr(module, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if (self.__dict__.get("_ddp_ready") and name not in self.__dict__ and not isinstance(value, (nn.Module, Tensor))
                and "module" in self._modules):
            setattr(self._modules["module"], name, value)
        else:
            super().__setattr__(name, value)

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:  # noqa: D102
        return self.module.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:  # noqa: D102
        return self.module.load_state_dict(state_dict, strict=strict, assign=assign)


def wrap_model(model: nn.Module, env: DistEnv, *, sync_bn: bool = False, **ddp_kwargs: Any) -> nn.Module:
    """Wrap ``model`` (already on ``env.device``, optimiser not yet built or built on the same parameters)
    for data-parallel training; returns ``model`` unchanged in a single process.

    Args:
        model: the composed LibMTL model.
        env: from :func:`init_from_env`.
        sync_bn: convert BatchNorm layers to ``SyncBatchNorm`` first (in place: the parameters stay the same
            objects, so an existing optimiser keeps working). Needs CUDA.
        ddp_kwargs: extra ``DistributedDataParallel`` arguments. ``find_unused_parameters`` stays False by
            default: weightings' own parameters (UW's ``loss_scale``) get gradients without appearing in the
            forward output, which DDP's unused-parameter search would mis-handle.

    Returns:
        A :class:`DDPModel` (or ``model``).
    """
    if not env.distributed:
        if sync_bn:
            raise ValueError("--sync_bn needs several processes (torchrun --nproc_per_node N, N > 1)")
        return model
    if sync_bn:
        if env.device.type != "cuda":
            raise ValueError("--sync_bn needs CUDA (SyncBatchNorm has no CPU implementation); drop the flag to "
                             "keep per-rank BatchNorm statistics")
        converted = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if converted is not model:
            raise ValueError("the model's root module is a BatchNorm layer; wrap it in a container first")
    if env.device.type == "cuda":
        ddp_kwargs.setdefault("device_ids", [env.device.index])
        ddp_kwargs.setdefault("output_device", env.device.index)
    return DDPModel(model, **ddp_kwargs)


def unwrap(model: nn.Module) -> nn.Module:
    """The inner model of a DDP wrapper (``model`` itself otherwise)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def broadcast_buffers(model: nn.Module, env: DistEnv) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank, e.g. before evaluation, so every
    rank scores its shard with the same model."""
    if not env.distributed:
        return
    for buf in unwrap(model).buffers():
        dist.broadcast(buf.data, src=0)


# ---------------------------------------------------------------------------------------------- data
def make_sampler(dataset: Any, env: DistEnv, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False) -> DistributedSampler:
    """Training sampler: rank ``r`` of ``W`` gets every ``W``-th index of one seeded permutation per epoch.

    The order depends only on ``(seed, epoch)`` (call :func:`set_sampler_epoch` every epoch), which also makes
    it resumable. Shards have equal length: ``drop_last=False`` repeats a few samples to pad, ``True`` drops
    the tail. Use it in a ``DataLoader(sampler=...)`` with ``shuffle=False`` and ``drop_last=True`` (equal batch
    counts on every rank, which DDP needs). Works with ``world_size = 1`` too.
    """
    if len(dataset) == 0:
        raise ValueError("the dataset is empty: no sample to train on (check the split's list/folder)")
    return DistributedSampler(dataset, num_replicas=env.world_size, rank=env.rank, shuffle=shuffle, seed=seed,
                              drop_last=drop_last)


class ShardSampler(Sampler[int]):
    """Evaluation sampler: rank ``r`` gets indices ``r, r + W, r + 2W, ...`` in order, nothing repeated or
    dropped (shards may differ by one), so reduced metrics equal the single-process ones."""

    def __init__(self, length: int, rank: int, world_size: int) -> None:
        self.length, self.rank, self.world_size = int(length), int(rank), int(world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return max(0, math.ceil((self.length - self.rank) / self.world_size))


def make_eval_sampler(dataset: Any, env: DistEnv) -> ShardSampler:
    """The :class:`ShardSampler` of ``dataset`` for this rank (use with ``shuffle=False``, ``drop_last=False``)."""
    return ShardSampler(len(dataset), env.rank, env.world_size)


def set_sampler_epoch(loaders: Any, epoch: int) -> None:
    """Call ``set_epoch(epoch)`` on the sampler of a ``DataLoader`` or of every loader in a dict/list."""
    if isinstance(loaders, Mapping):
        items = list(loaders.values())
    else:
        items = list(loaders) if isinstance(loaders, Sequence) else [loaders]
    for loader in items:
        sampler = getattr(loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)


def shard_loader(loader: Any, env: DistEnv, *, train: bool, seed: int = 0) -> Any:
    """Re-build an ordinary ``DataLoader`` (or a ``task -> DataLoader`` dict, or ``None``) on this rank's shard.

    Training (``train=True``): :func:`make_sampler` (a ``DistributedSampler``; shuffled when ``loader`` was,
    i.e. its sampler is a ``RandomSampler``; order set by ``seed`` and :func:`set_sampler_epoch`). Evaluation:
    :func:`make_eval_sampler` (every sample scored once over all ranks). Batch size, ``drop_last``, workers,
    ``collate_fn``, ``pin_memory`` and ``worker_init_fn`` are kept. Loaders that already use one of these
    samplers, and everything in a single process, are returned unchanged.

    Raises:
        TypeError: ``loader`` is not a ``DataLoader`` (nor a dict of them, nor ``None``).
        ValueError: an ``IterableDataset`` or a custom ``batch_sampler`` (they cannot be split by index: build
            the loader with ``sampler=make_sampler(dataset, env, ...)`` yourself).
    """
    if loader is None or not env.distributed:
        return loader
    if isinstance(loader, Mapping):
        return {k: shard_loader(v, env, train=train, seed=seed) for k, v in loader.items()}
    if not isinstance(loader, DataLoader):
        raise TypeError(f"shard_loader: expected a torch DataLoader (or a task -> DataLoader dict), got "
                        f"{type(loader).__name__}")
    if isinstance(loader.sampler, (DistributedSampler, ShardSampler)):
        return loader
    if isinstance(loader.dataset, IterableDataset):
        raise ValueError("a DataLoader over an IterableDataset cannot be split across ranks by index: shard the "
                         "stream per rank yourself (env.rank of env.world_size) and pass the per-rank loaders")
    if loader.batch_size is None:
        raise ValueError("a DataLoader with a custom batch_sampler cannot be split across ranks automatically: "
                         "build it with sampler=make_sampler(dataset, env, ...) (training) or "
                         "make_eval_sampler(dataset, env) (evaluation) and batch_size=...")
    if train:
        sampler: Sampler[int] = make_sampler(loader.dataset, env, shuffle=isinstance(loader.sampler, RandomSampler),
                                             seed=seed)
    else:
        sampler = make_eval_sampler(loader.dataset, env)
    workers = int(loader.num_workers)
    return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler, drop_last=loader.drop_last,
                      num_workers=workers, collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
                      timeout=loader.timeout, worker_init_fn=loader.worker_init_fn,
                      multiprocessing_context=loader.multiprocessing_context if workers > 0 else None,
                      prefetch_factor=loader.prefetch_factor if workers > 0 else None,
                      persistent_workers=bool(loader.persistent_workers) and workers > 0)


# ---------------------------------------------------------------------------------------------- reductions
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
    * ``sum_attrs`` (default: the class's ``ddp_sum_attrs`` or :data:`METRIC_SUM_ATTRS`): summed;
    * other int/float attributes must agree across ranks (configuration such as ``num_classes``).

    Raises:
        ValueError: a numeric attribute differs across ranks and is not declared as a sum (the message names
            it and says how to declare it).
    """
    if not env.distributed:
        return
    cls = type(metric)
    if sum_attrs is None:
        sum_attrs = getattr(metric, "ddp_sum_attrs", None)
        if sum_attrs is None:
            sum_attrs = next((METRIC_SUM_ATTRS[k.__name__] for k in cls.__mro__ if k.__name__ in METRIC_SUM_ATTRS),
                             ())
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


# ---------------------------------------------------------------------------------------------- trainer mixin
def _float32(value: Any) -> Any:
    """Low-precision floating tensors (in nested dicts/lists/tuples) cast to float32; the rest unchanged."""
    if torch.is_tensor(value):
        return value.float() if value.is_floating_point() and value.dtype in (torch.float16, torch.bfloat16) \
            else value
    if isinstance(value, Mapping):
        return {k: _float32(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_float32(v) for v in value)
    return value


class DataParallelTrainerMixin:
    """Data-parallel (torchrun + DDP) and mixed-precision training for ``MTLTrainer``, through its hooks.

    Compose it in front of the trainer: ``class Trainer(DataParallelTrainerMixin, MTLTrainer)``
    (:class:`libmtl_repmtl.training.experiment.ParallelMTLTrainer` is that class). With a single-process
    :class:`DistEnv` and ``amp="none"`` every hook defers to the trainer unchanged. Otherwise:

    * the model is wrapped with :func:`wrap_model` (``self.train_model``); training forwards go through it, the
      weighting's ``backward``, checkpoints and evaluation use the inner ``self.model``;
    * ``train()`` re-builds the loaders with :func:`shard_loader` (``DistributedSampler`` for training,
      :class:`ShardSampler` for evaluation); every pass over a training loader starts with
      ``set_epoch(pass index)`` (the trainer's ``before_train_iterator`` hook, which a resumed run replays);
    * before the meter scores a split, the ranks' metric/loss accumulators and the weighting's diagnostic sums
      are merged (:func:`all_reduce_metric_state`, :func:`reduce_sums`) and, after training, rank 0's buffers
      (BatchNorm running statistics) are broadcast, so every rank computes the same epoch record (timings and
      peak memory are each rank's own);
    * a non-finite loss on any rank stops every rank (:func:`any_rank`); a failure at the end of an epoch on
      one rank (e.g. rank 0's write) stops every rank;
    * only rank 0 writes ``results.json``, ``best.pt`` and ``last.pt`` (the other ranks' ``save_path`` is
      ``None`` except while they read ``last.pt`` to resume);
    * RepMTL with ``RepMTL_global_negatives`` true gets ``model.repmtl_gather = gather_with_grad`` (CSA
      negatives from the global batch);
    * mixed precision: the training forward runs under ``torch.autocast`` and its outputs are cast to float32
      (losses and metrics in float32); with float16 a ``GradScaler`` drives :func:`scaled_backward` and the
      step, and its state is checkpointed.

    Keyword arguments (the others go to the trainer):
        dist_env: from :func:`init_from_env` (default: one process on the trainer's device).
        amp: ``"none"``, ``"bf16"``, ``"fp16"`` or an :class:`~libmtl_repmtl.training.amp.AmpConfig`.
        sync_bn: convert BatchNorm layers to ``SyncBatchNorm`` (CUDA, several processes).
        sampler_seed: seed of the training ``DistributedSampler`` (use the run's seed, the same on every rank).

    Raises:
        ValueError: a weighting DDP cannot synchronise (:func:`check_weighting_supports_ddp`), ``dist_env``
            on another device than the trainer, or an AMP setting the device does not support.
    """

    device: torch.device
    model: nn.Module

    def __init__(self, *args: Any, dist_env: DistEnv | None = None, amp: Any = "none", sync_bn: bool = False,
                 sampler_seed: int = 0, **kwargs: Any) -> None:
        from libmtl_repmtl.training.amp import AmpConfig, make_grad_scaler

        super().__init__(*args, **kwargs)
        env = dist_env if dist_env is not None else DistEnv(device=self.device)
        if env.distributed and torch.device(env.device) != self.device:
            raise ValueError(f"the trainer runs on {self.device} but this rank's device is {env.device}: pass "
                             "device=dist_env.device")
        self.dist_env = env
        self.amp = AmpConfig.from_flag(self.device, amp)
        self.grad_scaler = make_grad_scaler(self.amp)
        self.sampler_seed = int(sampler_seed)
        if env.distributed:
            check_weighting_supports_ddp(self.weighting_class)  # type: ignore[attr-defined]
            if self.kwargs["weight_args"].get("RepMTL_global_negatives"):  # type: ignore[attr-defined]
                from libmtl_repmtl.core.distributed import gather_with_grad

                self.model.repmtl_gather = gather_with_grad
        # not registered as a sub-module of the trainer (it holds the same parameters as self.model)
        object.__setattr__(self, "train_model", wrap_model(self.model, env, sync_bn=sync_bn))
        self._rank0_save_path = self.save_path  # type: ignore[has-type]
        if not env.is_main:
            self.save_path = None  # rank 0 alone writes results.json, best.pt and last.pt

    # ------------------------------------------------------------------ hooks of MTLTrainer
    def train_forward(self, inputs: Any, task: str | None = None) -> Any:
        """Training forward through the DDP wrapper, under autocast when mixed precision is on."""
        model = self.train_model  # type: ignore[attr-defined]
        if not self.amp.enabled:
            return model(inputs) if task is None else model(inputs, task)
        with torch.autocast(self.amp.device_type, dtype=self.amp.dtype):
            out = model(inputs) if task is None else model(inputs, task)
        return _float32(out)

    def train(self, train_dataloaders: Any, test_dataloaders: Any, epochs: int, val_dataloaders: Any = None,
              return_weight: bool = False) -> Any:
        """Shard the loaders across ranks (see :func:`shard_loader`), then the trainer's ``train``."""
        env = self.dist_env
        if env.distributed:
            train_dataloaders = shard_loader(train_dataloaders, env, train=True, seed=self.sampler_seed)
            test_dataloaders = shard_loader(test_dataloaders, env, train=False)
            val_dataloaders = shard_loader(val_dataloaders, env, train=False)
        return super().train(train_dataloaders, test_dataloaders, epochs,  # type: ignore[misc]
                             val_dataloaders=val_dataloaders, return_weight=return_weight)

    def start_training(self, epochs: int, train_batch: int) -> None:
        """The trainer's ``start_training``; every rank reads rank 0's ``last.pt`` when resuming."""
        if self.dist_env.is_main:
            return super().start_training(epochs, train_batch)  # type: ignore[misc]
        self.save_path = self._rank0_save_path
        try:
            return super().start_training(epochs, train_batch)  # type: ignore[misc]
        finally:
            self.save_path = None

    def before_train_iterator(self, loader: Any, iteration: int) -> None:
        """``set_epoch(iteration)`` on a training ``DistributedSampler`` before its ``iteration``-th pass
        (also when a resumed run recreates an interrupted pass, so the shard order is reproduced)."""
        super().before_train_iterator(loader, iteration)  # type: ignore[misc]
        if self.dist_env.distributed:
            set_sampler_epoch(loader, iteration)

    def reduce_epoch_state(self, mode: str) -> None:
        """Merge the ranks' metric/loss accumulators (and, after training, the diagnostic sums; then broadcast
        rank 0's buffers) before the meter scores the split."""
        env = self.dist_env
        if not env.distributed:
            return
        all_reduce_metric_state(self.meter, env)  # type: ignore[attr-defined]
        if mode == "train":
            self._stat_sums = reduce_sums(self._stat_sums, env)  # type: ignore[has-type]
            self._stat_counts = reduce_sums(self._stat_counts, env)  # type: ignore[has-type]
            broadcast_buffers(self.model, env)

    def _process_data(self, loader: Any) -> Any:
        """The trainer's batch fetch and checks; in a distributed training step every rank learns whether any
        rank's batch failed before the next collective (the DDP forward), so all stop together."""
        return self._on_every_rank(super()._process_data, loader)  # type: ignore[misc]

    def _compute_loss(self, preds: Any, gts: Any, task_name: str | None = None) -> Tensor:
        """The trainer's task losses (label checks included), agreed by every rank before the backward."""
        return self._on_every_rank(super()._compute_loss, preds, gts, task_name)  # type: ignore[misc]

    def _on_every_rank(self, fn: Callable[..., T], *args: Any,
                       elsewhere: Callable[[], BaseException] | None = None) -> T:
        """``fn(*args)``; during distributed training an exception on any rank is raised on every rank
        (the failing rank's own; on the others ``elsewhere()``, by default a
        :class:`~libmtl_repmtl.training.checks.BatchDataError` saying so) instead of leaving the others waiting
        in a collective."""
        env = self.dist_env
        if not (env.distributed and self.model.training):
            return fn(*args)
        error: BaseException | None = None
        out: Any = None
        try:
            out = fn(*args)
        except Exception as exc:  # noqa: BLE001 - re-raised below, after every rank has agreed
            error = exc
        if any_rank(error is not None, env):
            if error is not None:
                raise error
            if elsewhere is not None:
                raise elsewhere()
            from libmtl_repmtl.training.checks import BatchDataError

            where = getattr(self, "_where", "a training step")
            raise BatchDataError(f"a training batch failed on another rank at {where}; every rank stops. That "
                                 "rank's error names the file, task or value.")
        return out

    def check_losses(self, losses: Tensor, epoch: int, batch_index: int) -> None:
        """The trainer's check, agreed by every rank: a non-finite loss anywhere stops all of them."""
        from libmtl_repmtl.core.objective import NonFiniteLossError

        self._on_every_rank(super().check_losses, losses, epoch, batch_index,  # type: ignore[misc]
                            elsewhere=lambda: NonFiniteLossError(
                                f"non-finite training loss on another rank at epoch {epoch}, batch {batch_index} "
                                "(this rank's losses are finite): every rank stops. That rank's error shows the "
                                "values; check the input data or lower the learning rate."))

    def backward_and_step(self, losses: Tensor) -> Any:
        """With a GradScaler (float16): :func:`scaled_backward`, ``scaler.step`` and ``scaler.update``;
        otherwise the trainer's (the weighting's ``backward`` on the inner model fires DDP's hooks)."""
        if self.grad_scaler is None:
            return super().backward_and_step(losses)  # type: ignore[misc]
        from libmtl_repmtl.training.amp import scaled_backward

        optimizer = self.optimizer  # type: ignore[attr-defined]
        optimizer.zero_grad(set_to_none=False)
        weights = scaled_backward(self.model, losses, self.grad_scaler,
                                  **self.kwargs["weight_args"])  # type: ignore[attr-defined]
        self.grad_scaler.step(optimizer)
        self.grad_scaler.update()
        return weights

    def end_epoch(self, epoch: int, record: dict[str, Any]) -> None:
        """The trainer's ``end_epoch`` (rank 0 writes); then every rank learns whether any rank failed."""
        env = self.dist_env
        if not env.distributed:
            return super().end_epoch(epoch, record)  # type: ignore[misc]
        error: Exception | None = None
        try:
            super().end_epoch(epoch, record)  # type: ignore[misc]
        except Exception as exc:  # noqa: BLE001 - shared with the other ranks, then re-raised
            error = exc
        messages = gather_objects(None if error is None else f"{type(error).__name__}: {error}", env)
        if error is not None:
            raise error
        failed = [f"rank {r}: {m}" for r, m in enumerate(messages) if m]
        if failed:
            raise RuntimeError(f"epoch {epoch} failed on another rank ({'; '.join(failed)}); every rank stops")

    def checkpoint_state(self, epoch: int) -> dict[str, Any]:
        """The trainer's checkpoint plus the GradScaler's state (float16)."""
        state = super().checkpoint_state(epoch)  # type: ignore[misc]
        if self.grad_scaler is not None:
            state["grad_scaler"] = self.grad_scaler.state_dict()
        return state

    def restore_checkpoint_state(self, state: Mapping[str, Any], path: str) -> None:
        """The trainer's restore plus the GradScaler's state when the checkpoint has one."""
        super().restore_checkpoint_state(state, path)  # type: ignore[misc]
        if self.grad_scaler is not None and state.get("grad_scaler"):
            self.grad_scaler.load_state_dict(state["grad_scaler"])


__all__ = [
    "DDPModel", "DDP_GRADIENT_WEIGHTINGS", "DDP_LOSS_WEIGHTINGS", "DataParallelTrainerMixin", "DistEnv",
    "METRIC_SUM_ATTRS", "ShardSampler",
    "add_distributed_args", "all_reduce_metric_state", "any_rank", "barrier", "broadcast_buffers",
    "check_weighting_supports_ddp", "cleanup", "env_from_group", "gather_objects", "init_from_env", "is_main",
    "make_eval_sampler", "make_sampler", "reduce_metric", "reduce_sums", "run_on_main", "set_sampler_epoch",
    "shard_loader", "unwrap", "wrap_model",
]
