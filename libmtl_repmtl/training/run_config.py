"""A run's recorded configuration: the ``config`` dict that ``results.json``, ``best.pt`` and ``last.pt`` hold.

:func:`run_config` builds it from a :class:`RunPlan` (what :func:`~libmtl_repmtl.training.experiment.run_experiment`
resolved from its arguments: merged options, tasks, classes, hyper-parameters) and the call's remaining
arguments; :func:`optimiser_params` derives the trainer's ``optim_param`` / ``scheduler_param`` from the options.
Both the run (which records it) and whoever asks what a run would record
(:func:`~libmtl_repmtl.training.experiment.planned_settings`) go through here;
:mod:`~libmtl_repmtl.training.settings` says which of its keys define what is trained.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from typing import Any, NamedTuple

from libmtl_repmtl.benchmarks import Benchmark


class RunPlan(NamedTuple):
    """What a run resolved from its arguments before building anything."""

    spec: Benchmark
    opts: dict[str, Any]  # merged options (training.experiment.run_options)
    tasks: list[str]
    weighting: type
    arch: type
    weight_args: dict[str, Any]
    arch_args: dict[str, Any]


def optimiser_params(opts: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The trainer's ``optim_param`` and ``scheduler_param`` (``None``: no scheduler) of merged options."""
    optim_param = {"optim": opts["optim"], "lr": float(opts["lr"]), "weight_decay": float(opts["weight_decay"])}
    if opts["optim"] == "sgd":
        optim_param["momentum"] = float(opts["momentum"])
    scheduler_param: dict[str, Any] | None = None
    if opts.get("scheduler"):
        scheduler_param = {"scheduler": opts["scheduler"]}
        if opts["scheduler"] == "step":
            scheduler_param.update(step_size=int(opts["step_size"]), gamma=float(opts["gamma"]))
        elif opts["scheduler"] == "exp":
            scheduler_param.update(gamma=float(opts["gamma"]))
        elif opts["scheduler"] == "cos":
            scheduler_param.update(T_max=int(opts.get("T_max") or opts["epochs"]))
    return optim_param, scheduler_param


def run_config(plan: RunPlan, save_path: str | os.PathLike[str], *, device: str, rep_grad: bool, baseline: Any,
               resume: bool, amp: str, world_size: int, params: argparse.Namespace | None) -> dict[str, Any]:
    """The configuration a run records: its identity, paths, device, the Δp baseline's name (``"mapping"`` for
    a mapping), the hyper-parameters, ``optim_param`` / ``scheduler_param``, every merged option, ``amp``,
    ``world_size`` and, for the example scripts, the parsed command line (``argv_params``)."""
    opts = plan.opts
    optim_param, scheduler_param = optimiser_params(opts)
    config = {"benchmark": plan.spec.name, "weighting": plan.weighting.__name__, "arch": plan.arch.__name__,
              "dataset_path": opts["dataset_path"], "save_path": str(save_path), "tasks": list(plan.tasks),
              "seed": int(opts["seed"]), "device": str(device), "rep_grad": bool(rep_grad),
              "multi_input": plan.spec.multi_input, "resume": bool(resume),
              "baseline": baseline if not isinstance(baseline, Mapping) else "mapping",
              "weight_args": plan.weight_args, "arch_args": plan.arch_args, "optim_param": optim_param,
              "scheduler_param": scheduler_param,
              **{k: v for k, v in opts.items() if k not in {"dataset_path", "seed"}}}
    config.update(amp=str(amp), world_size=int(world_size))
    if params is not None:
        config["argv_params"] = dict(vars(params))
    return config


__all__ = ["RunPlan", "optimiser_params", "run_config"]
