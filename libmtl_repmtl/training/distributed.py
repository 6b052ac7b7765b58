"""Data-parallel training under ``torchrun``: the job's environment, the weighting check and the DDP model.

* :func:`init_from_env` -> :class:`DistEnv` (reads torchrun's ``RANK``/``LOCAL_RANK``/``WORLD_SIZE``);
* :func:`check_weighting_supports_ddp` refuses weightings DDP cannot synchronise (the class says it:
  :func:`libmtl_repmtl.libmtl.capabilities.ddp_compatible`);
* :func:`wrap_model` -> :class:`DDPModel` (forward through DDP, LibMTL's ``backward``/``rep``/... on the
  inner model; evaluation forwards bypass DDP); :func:`unwrap`, :func:`broadcast_buffers`;
* :func:`barrier`, :func:`cleanup`, :func:`add_distributed_args`.

The data shards are in :mod:`~libmtl_repmtl.training.sharding`, the collectives (sums, metric merges,
agreement, rank-0 writes) in :mod:`~libmtl_repmtl.training.collectives` (both re-exported here), and the
trainer's use of all of it in :class:`~libmtl_repmtl.training.strategy.DataParallel`. Every function is a
no-op (or the identity) in a single process.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from libmtl_repmtl.libmtl.capabilities import ddp_compatible, resolve_weighting
from libmtl_repmtl.libmtl.host import UnknownMethodError
from libmtl_repmtl.training.collectives import (
    all_reduce_metric_state,
    any_rank,
    gather_objects,
    is_main,
    reduce_metric,
    reduce_sums,
    run_on_main,
)
from libmtl_repmtl.training.device import resolve_device
from libmtl_repmtl.training.dist_env import DistEnv
from libmtl_repmtl.training.sharding import (
    ShardSampler,
    make_eval_sampler,
    make_sampler,
    set_sampler_epoch,
    shard_loader,
)


# ---------------------------------------------------------------------------------------------- environment
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


def _process_device(device: str | torch.device, world: int, local_rank: int) -> torch.device:
    """This process's device: the one resolver's answer, ``cuda:LOCAL_RANK`` under torchrun with several
    processes; a CUDA device becomes the current one."""
    if world > 1 and ":" in str(device):
        raise RuntimeError(f"--device {device} names one GPU, but torchrun started {world} processes; use "
                           "--device cuda (each process takes cuda:LOCAL_RANK)")
    dev = resolve_device(device)
    if dev.type != "cuda":
        return dev
    if world > 1:
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK {local_rank} needs cuda:{local_rank} but only "
                               f"{torch.cuda.device_count()} CUDA device(s) are visible; lower --nproc_per_node")
        dev = torch.device("cuda", local_rank)
    torch.cuda.set_device(dev)
    return dev


def init_from_env(backend: str | None = None, device: str | torch.device = "auto") -> DistEnv:
    """Read torchrun's environment and initialise the default process group when ``WORLD_SIZE > 1``.

    Args:
        backend: ``"nccl"``, ``"gloo"`` or ``None`` (nccl when training on CUDA, gloo on the CPU).
        device: as :func:`~libmtl_repmtl.training.device.resolve_device` (``"auto"``, ``"cpu"``, ``"cuda"``,
            ``"cuda:N"``). Under torchrun with several processes each takes ``cuda:LOCAL_RANK`` on CUDA (an
            explicit ``cuda:N`` is refused there).

    Returns:
        The :class:`DistEnv`. Without torchrun's variables (or with ``WORLD_SIZE=1``): rank 0 of 1, no group.

    Raises:
        ValueError: the device request cannot be met (unknown, CUDA unavailable, no such CUDA device).
        RuntimeError: inconsistent variables (rank outside the world, missing MASTER_ADDR/PORT), ``cuda:N``
            with several processes, fewer CUDA devices than local ranks, or nccl requested for CPU training.
    """
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", rank if world > 1 else 0)
    if world < 1 or not 0 <= rank < world:
        raise RuntimeError(f"bad torchrun environment: RANK={rank}, WORLD_SIZE={world} (need 0 <= RANK < WORLD_SIZE)")
    dev = _process_device(device, world, local_rank)
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
        weighting: a class, or a name resolved by the plugin host. The class says whether it can run under
            DDP (:func:`libmtl_repmtl.libmtl.capabilities.ddp_compatible`: its ``ddp_compatible`` attribute, or
            for LibMTL's own classes their structure).

    Raises:
        ValueError: a gradient-manipulation method (MGDA, PCGrad, GradVac, CAGrad, IMTL, GradNorm, GradDrop,
            Nash-MTL, ...), an unknown name, or a class that does not declare ``ddp_compatible = True``.
    """
    try:
        cls = resolve_weighting(weighting)
    except UnknownMethodError as exc:
        raise ValueError(f"{exc} Under torchrun a weighting must also be DDP-compatible: one that combines the "
                         "per-task gradients of the shared parameters cannot be trained with DDP (use --weighting "
                         "RepMTL or a loss-weighting method, or train it in a single process); a class that "
                         "back-propagates one scalar combination of the task losses declares "
                         "`ddp_compatible = True`.") from None
    verdict = ddp_compatible(cls)
    if verdict is True:
        return
    label = cls.__name__
    if verdict is False:
        raise ValueError(
            f"weighting {label!r} cannot be trained with DistributedDataParallel: it combines the per-task "
            "gradients of the shared parameters (projections, min-norm solutions or gradient norms), but DDP "
            "all-reduces only the single summed gradient of each parameter, so no rank ever sees the global "
            "per-task gradients and the step would not be the method's step. Use --weighting RepMTL or a "
            f"loss-weighting method (EW, UW, DWA, GLS, RLW), or train {label} in a single process (without "
            "torchrun).")
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


__all__ = [
    "DDPModel", "DistEnv", "ShardSampler",
    "add_distributed_args", "all_reduce_metric_state", "any_rank", "barrier", "broadcast_buffers",
    "check_weighting_supports_ddp", "cleanup", "env_from_group", "gather_objects", "init_from_env", "is_main",
    "make_eval_sampler", "make_sampler", "reduce_metric", "reduce_sums", "run_on_main", "set_sampler_epoch",
    "shard_loader", "unwrap", "wrap_model",
]
