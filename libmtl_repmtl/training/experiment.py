"""``run_experiment``: one training run of a registered benchmark, shared by the example scripts and the harness.

Example::

    from libmtl_repmtl.training import run_experiment

    results = run_experiment("nyuv2", "RepMTL", "RepHPS", "/data/nyuv2", "runs/nyu_repmtl",
                             epochs=200, device="cuda", pretrained="imagenet")
    results["delta_p_task"], results["best_epoch"]
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import random
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from libmtl_repmtl.benchmarks import get
from libmtl_repmtl.libmtl.bases import LibMTL
from libmtl_repmtl.libmtl.capabilities import resolve_architecture
from libmtl_repmtl.training.amp import AmpConfig
from libmtl_repmtl.training.deltap import resolve_baseline
from libmtl_repmtl.training.device import resolve_device
from libmtl_repmtl.training.distributed import (
    DistEnv,
    barrier,
    check_weighting_supports_ddp,
    cleanup,
    init_from_env,
)
from libmtl_repmtl.training.options import run_options
from libmtl_repmtl.training.precision import precision_for
from libmtl_repmtl.training.protocols import trainable_weighting
from libmtl_repmtl.training.run_config import RunPlan, run_config
from libmtl_repmtl.training.settings import training_settings
from libmtl_repmtl.training.strategy import strategy_for
from libmtl_repmtl.training.trainer import MTLTrainer

importlib.import_module("LibMTL.config")  # after the compatibility layer (bases)

#: LibMTL flags that are not weighting hyper-parameters.
GENERAL_KEYS = frozenset({
    "seed", "gpu_id", "weighting", "arch", "rep_grad", "multi_input", "optim", "lr", "momentum", "weight_decay",
    "scheduler", "step_size", "gamma", "img_size", "num_experts", "num_nonzeros", "kgamma", "mode", "save_path",
    "load_path", "dataset_path", "bs", "epochs", "train_bs", "test_bs", "aug", "device", "pretrained", "resume",
    "baseline", "no_progress", "dataset", "list_dir", "encoder", "num_workers", "help", "eta_min", "T_max",
})


class ParallelMTLTrainer(MTLTrainer):
    """``MTLTrainer`` composed from command-line style settings: the strategy of ``dist_env``
    (:func:`~libmtl_repmtl.training.strategy.strategy_for`: DDP for a rank of a torchrun job) and the
    precision policy of ``amp`` (:func:`~libmtl_repmtl.training.precision.precision_for`).

    Keyword arguments (the others go to ``MTLTrainer``):
        dist_env: from :func:`~libmtl_repmtl.training.distributed.init_from_env` (default: one process).
        amp: ``"none"``, ``"bf16"``, ``"fp16"`` or an :class:`~libmtl_repmtl.training.amp.AmpConfig`.
        sync_bn: convert BatchNorm layers to ``SyncBatchNorm`` (CUDA, several processes).
        sampler_seed: seed of the training ``DistributedSampler`` (the run's seed, the same on every rank).

    Raises:
        ValueError: a weighting DDP cannot synchronise, ``dist_env`` on another device than the trainer, an
            AMP setting the device does not support, or ``sync_bn`` in a single process.
    """

    def __init__(self, *args: Any, dist_env: DistEnv | None = None, amp: Any = "none", sync_bn: bool = False,
                 sampler_seed: int = 0, **kwargs: Any) -> None:
        device = resolve_device(kwargs.pop("device", "auto"))
        super().__init__(*args, device=device, precision=precision_for(device, amp),
                         strategy=strategy_for(dist_env, sync_bn=sync_bn, sampler_seed=sampler_seed), **kwargs)


def libmtl_defaults() -> argparse.Namespace:
    """The defaults of every flag of ``LibMTL.config.LibMTL_args`` (plugin flags included once registered)."""
    ns, _ = LibMTL.config.LibMTL_args.parse_known_args([])
    return ns


def weight_args_for(weighting: type, params: argparse.Namespace | None = None,
                    overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``weight_args`` of a run: the plugin's ``libmtl_args(params)`` when the class defines it, else
    LibMTL's weighting flags (``T``, ``alpha``, ``mgda_gn``, ...) from ``params`` (defaults when ``None``);
    then ``overrides``."""
    params = params or libmtl_defaults()
    if hasattr(weighting, "libmtl_args"):
        out = dict(weighting.libmtl_args(params))
    else:
        libmtl_keys = {a.dest for a in LibMTL.config.LibMTL_args._actions}
        out = {k: v for k, v in vars(params).items()
               if k in libmtl_keys and k not in GENERAL_KEYS and not k.startswith(("RepMTL_", "RepHPS_"))}
    out.update(overrides or {})
    return out


def arch_args_for(architecture: type, params: argparse.Namespace | None = None,
                  overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``arch_args`` of a run: the plugin's ``libmtl_args(params)`` when defined, then ``overrides``."""
    out: dict[str, Any] = {}
    if hasattr(architecture, "libmtl_args"):
        out.update(architecture.libmtl_args(params or libmtl_defaults()))
    out.update(overrides or {})
    return out


def set_seed(seed: int, device: torch.device) -> None:
    """Seed Python, NumPy and torch (and make cuDNN deterministic on CUDA, as LibMTL)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if device.type == "cuda":
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def run_experiment(benchmark: str, weighting: str | type, arch: str | type, dataset_path: str | os.PathLike[str] | None,
                   save_path: str | os.PathLike[str], *, epochs: int | None = None, seed: int = 0,
                   device: str | torch.device = "auto", tasks: Sequence[str] | None = None,
                   weight_args: Mapping[str, Any] | None = None, arch_args: Mapping[str, Any] | None = None,
                   rep_grad: bool = False, baseline: str | os.PathLike[str] | Mapping[str, Any] | None = "spec",
                   resume: bool = False, progress: bool | None = None, verbose: bool = True,
                   params: argparse.Namespace | None = None, amp: str = "none", sync_bn: bool = False,
                   dist_backend: str | None = None, **options: Any) -> dict[str, Any]:
    """Train ``weighting`` x ``arch`` on a registered benchmark and write ``save_path/results.json``.

    Args:
        benchmark: a registry name (``nyuv2``, ``cityscapes``, ``office-31``, ``office-home`` or one added with
            :func:`libmtl_repmtl.benchmarks.register`).
        weighting: LibMTL weighting name or class (``EW``, ``RepMTL``, ...).
        arch: architecture name or class (``HPS``, ``RepHPS``, ...).
        dataset_path: dataset root (the layouts of the spec), or ``None`` for benchmarks that need none.
        save_path: run folder (``results.json``, ``best.pt``, ``last.pt``).
        epochs: default: the benchmark's (200 NYUv2/Cityscapes, 100 Office).
        seed: seeds Python, NumPy, torch and the training loaders' shuffling.
        device: ``auto`` / ``cpu`` / ``cuda`` / ``cuda:N``.
        tasks: train only these tasks (single-task baselines); default all.
        weight_args: weighting hyper-parameters overriding the defaults (e.g. ``{"RepMTL_lambda_tsr": 0.0}``).
        arch_args: architecture hyper-parameters.
        rep_grad: LibMTL's ``rep_grad``.
        baseline: Δp reference: ``spec``, ``none``, a JSON file or a mapping (see :func:`resolve_baseline`).
        resume: continue from ``save_path/last.pt`` when it exists (else start afresh).
        progress: progress display on stderr (``None``: when stderr is a terminal).
        verbose: print LibMTL's log lines.
        params: parsed command-line flags (the example scripts): read by plugin ``libmtl_args`` and
            LibMTL's weighting flags.
        amp: mixed precision, ``none`` (float32), ``bf16`` (CPU or CUDA) or ``fp16`` (CUDA, GradScaler).
        sync_bn: under torchrun, BatchNorm statistics over the global batch (CUDA).
        dist_backend: under torchrun, ``nccl`` / ``gloo`` (default: nccl on CUDA, gloo on the CPU).
        options: run settings ``train_bs`` (alias ``batch_size``), ``test_bs``, ``optim``, ``lr``,
            ``weight_decay``, ``momentum``, ``scheduler`` (``step`` / ``exp`` / ``cos`` / ``None``), ``step_size``,
            ``gamma``, ``encoder`` (``resnet50`` / ``resnet18`` / ``tiny``), ``pretrained`` (``imagenet`` /
            ``none`` / path; the CPU benchmarks: ``pretext`` / ``none`` / path), ``aug``, ``num_workers``, and
            benchmark-specific options (e.g. ``list_dir``, ``n_train``), all defaulting to the benchmark's
            :attr:`~Benchmark.defaults`. Only the generic run options
            (:data:`~libmtl_repmtl.training.options.RUN_OPTIONS`) and the benchmark's own
            (:attr:`~Benchmark.options`) are accepted, each coerced to its type; ``epochs`` a positive integer.
            Checked before anything is built (:func:`~libmtl_repmtl.training.options.run_options`).

    Launched by ``torchrun`` (``WORLD_SIZE > 1``), every process calls this with the same arguments: it joins
    the process group (and leaves it at the end when it started it), refuses weightings that DDP cannot
    synchronise, trains ``train_bs`` samples per process and step (global batch ``WORLD_SIZE x train_bs``),
    and rank 0 alone prints and writes files; see ``docs/distributed.md``.

    Returns:
        The results dict, as written to ``results.json`` (:mod:`~libmtl_repmtl.training.results`); under torchrun
        the same epoch records on every rank.
    """
    plan = _plan(benchmark, weighting, arch, dataset_path, epochs=epochs, seed=seed, tasks=tasks,
                 weight_args=weight_args, arch_args=arch_args, params=params, options=options)
    env, owned = _join_torchrun(plan.weighting, dist_backend, device)
    if env is not None:
        device = env.device
        if not env.is_main:
            verbose, progress = False, False  # rank 0 prints
    try:
        results = _run(plan, save_path, seed=int(seed), device=device, rep_grad=rep_grad, baseline=baseline,
                       resume=resume, progress=progress, verbose=verbose, params=params, amp=amp, sync_bn=sync_bn,
                       env=env)
    except BaseException:
        if owned and env is not None:
            cleanup(env)  # no barrier: a rank may be gone, and torchrun stops the others
        raise
    if owned and env is not None:
        # Every rank has finished its collectives before any closes its connections: a gloo peer that is still
        # inside one when the other side closes aborts its process.
        barrier(env)
        cleanup(env)
    return results


def planned_settings(benchmark: str, weighting: str | type, arch: str | type,
                     dataset_path: str | os.PathLike[str] | None, save_path: str | os.PathLike[str],
                     **kwargs: Any) -> dict[str, Any]:
    """The training settings (:func:`~libmtl_repmtl.training.settings.training_settings`) that
    ``run_experiment(benchmark, weighting, arch, dataset_path, save_path, **kwargs)`` would record, without
    building or training anything (the harness compares them with those of a finished run). Its defaults are
    ``run_experiment``'s; the device is taken as given (it is no training setting).

    Raises:
        ValueError: what ``run_experiment`` raises before building (unknown task, weighting or architecture).
    """
    call = inspect.signature(run_experiment).bind(benchmark, weighting, arch, dataset_path, save_path, **kwargs)
    call.apply_defaults()
    a = call.arguments
    plan = _plan(benchmark, weighting, arch, dataset_path, epochs=a["epochs"], seed=a["seed"], tasks=a["tasks"],
                 weight_args=a["weight_args"], arch_args=a["arch_args"], params=a["params"], options=a["options"])
    return training_settings(run_config(plan, save_path, device=str(a["device"]), rep_grad=a["rep_grad"],
                                        baseline=a["baseline"], resume=a["resume"], amp=a["amp"],
                                        world_size=max(_torchrun_world_size(), 1), params=a["params"]))


def _plan(benchmark: str, weighting: str | type, arch: str | type, dataset_path: str | os.PathLike[str] | None, *,
          epochs: int | None, seed: int, tasks: Sequence[str] | None, weight_args: Mapping[str, Any] | None,
          arch_args: Mapping[str, Any] | None, params: argparse.Namespace | None,
          options: Mapping[str, Any]) -> RunPlan:
    """What a run resolves from its arguments before building anything (merged options, tasks, classes and
    hyper-parameters).

    Raises:
        ValueError: an unknown task, weighting or architecture.
    """
    spec = get(benchmark)
    opts = run_options(spec, options, epochs=epochs, seed=seed, dataset_path=dataset_path)
    run_tasks = list(tasks) if tasks else list(spec.tasks)
    unknown = [t for t in run_tasks if t not in spec.tasks]
    if unknown:
        raise ValueError(f"{spec.name}: unknown task(s) {unknown}; tasks are {list(spec.tasks)}")
    wcls, acls = _methods(weighting, arch)
    return RunPlan(spec, opts, run_tasks, wcls, acls, weight_args_for(wcls, params, weight_args),
                   arch_args_for(acls, params, arch_args))


def _methods(weighting: str | type, arch: str | type) -> tuple[type, type]:
    """The weighting and architecture classes of a run, or one error naming every one that is wrong.

    Raises:
        ValueError: the weighting's or the architecture's own error when one is wrong (unknown, or a method this
            trainer refuses); both messages, one per line, when both are.
    """
    found: list[type] = []
    errors: list[ValueError] = []
    for resolve, name in ((trainable_weighting, weighting), (resolve_architecture, arch)):
        try:
            found.append(resolve(name))
        except ValueError as exc:
            errors.append(exc)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ValueError("\n".join(str(e) for e in errors)) from errors[0]
    return found[0], found[1]


def _join_torchrun(weighting: type, backend: str | None, device: str | torch.device) -> tuple[DistEnv | None, bool]:
    """In one of torchrun's processes: check the weighting (before anything is built), join the process group;
    returns this rank's environment and whether this call started the group. ``(None, False)`` otherwise."""
    if _torchrun_world_size() <= 1:
        return None, False
    check_weighting_supports_ddp(weighting)
    owned = not (dist.is_available() and dist.is_initialized())
    return init_from_env(backend, device), owned


def _torchrun_world_size() -> int:
    raw = os.environ.get("WORLD_SIZE", "1").strip() or "1"
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable WORLD_SIZE={raw!r} is not an integer (torchrun sets it)") from None


def _run(plan: RunPlan, save_path: str | os.PathLike[str], *, seed: int, device: str | torch.device, rep_grad: bool,
         baseline: Any, resume: bool, progress: bool | None, verbose: bool, params: argparse.Namespace | None,
         amp: str, sync_bn: bool, env: DistEnv | None) -> dict[str, Any]:
    """Build the data, model and trainer of one run and train (:func:`run_experiment` after the checks)."""
    spec, opts, run_tasks, wcls, acls, wargs, aargs = plan
    dev = resolve_device(device)
    AmpConfig.from_flag(dev, amp)  # refuse e.g. fp16 on the CPU before building anything
    if sync_bn and env is None:
        raise ValueError("--sync_bn needs several processes: launch with torchrun --nproc_per_node N (N > 1), "
                         "or drop the flag")
    set_seed(int(seed), dev)
    task_dict = spec.task_dict(run_tasks, opts)
    base, base_src = resolve_baseline(spec, baseline, task_dict)
    loaders = spec.dataloaders(run_tasks, opts)
    config = run_config(plan, save_path, device=str(dev), rep_grad=rep_grad, baseline=baseline, resume=resume,
                        amp=amp, world_size=env.world_size if env is not None else 1, params=params)
    optim_param, scheduler_param = config["optim_param"], config["scheduler_param"]
    args = (task_dict, wcls, acls, spec.encoder_class(opts), spec.decoders(run_tasks, opts), bool(rep_grad),
            spec.multi_input, optim_param, scheduler_param, save_path)
    kwargs: dict[str, Any] = dict(device=dev, baseline=base, baseline_source=base_src, config=config,
                                  process_preds_fn=spec.process_preds, resume=resume, progress=progress,
                                  verbose=verbose, weight_args=wargs, arch_args=aargs)
    if env is None and str(amp).lower() == "none" and not sync_bn:
        trainer: MTLTrainer = MTLTrainer(*args, **kwargs)  # one process, float32: the plain trainer
    else:
        trainer = ParallelMTLTrainer(*args, dist_env=env, amp=amp, sync_bn=sync_bn, sampler_seed=int(seed),
                                     **kwargs)
    trainer.train(loaders["train"], loaders["test"], int(opts["epochs"]), val_dataloaders=loaders.get("val"))
    return trainer.results()


__all__ = ["ParallelMTLTrainer", "arch_args_for", "libmtl_defaults", "planned_settings", "resolve_baseline",
           "run_experiment", "run_options", "set_seed", "weight_args_for"]
