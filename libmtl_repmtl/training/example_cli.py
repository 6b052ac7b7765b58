"""The command lines of ``examples/{nyuv2,cityscapes,office}/main.py`` (LibMTL's flags plus the run flags).

The parser starts from ``LibMTL.config.LibMTL_args`` (after ``libmtl_repmtl.register()``, so plugin
weightings/architectures are known), so every LibMTL flag keeps its meaning (``--weighting``, ``--arch``,
``--rep_grad``, ``--multi_input``, ``--optim``, ``--lr``, ``--weight_decay``, ``--scheduler``, ``--step_size``,
``--gamma``, ``--seed``, ``--gpu_id``, the weighting flags ``--T``, ``--alpha``, ...), and adds:

``--dataset_path``, ``--save_path``, ``--epochs``, ``--train_bs``, ``--test_bs``, ``--aug`` (NYUv2, Cityscapes;
refused for Office, which has no augmentation), ``--device``,
``--pretrained imagenet|none|PATH``, ``--resume``, ``--baseline spec|none|FILE``, ``--no_progress``,
``--encoder`` (``resnet50``/``resnet18`` or ``tiny`` for quick CPU checks), ``--tasks``, ``--num_workers``,
``--amp none|bf16|fp16``, ``--sync_bn`` and ``--dist_backend nccl|gloo`` (under ``torchrun``), and for Office
``--dataset office-31|office-home``, ``--list_dir``, ``--image_size`` and LibMTL's ``--bs`` (every split's batch
size), for Cityscapes LibMTL's ``--train_mode train|trainval``; plus the ``--<Plugin>_<key>`` flags of
the chosen weighting/architecture (e.g. ``--RepMTL_lambda_tsr``).

Defaults reproduce the paper's setups (see :mod:`libmtl_repmtl.benchmarks`).
Exit status: 0 done, 1 training failed (a NaN loss, a run file that could not be written, e.g. a full disk), 2 bad
arguments, missing files or bad data (a corrupt or malformed file, NaN/Inf or out-of-range labels in a batch, an
empty split; the message names the file, or the split, epoch, batch and task), 130 interrupted.

Data-parallel: ``torchrun --nproc_per_node N examples/nyuv2/main.py ...`` (``--train_bs`` per process; rank 0
prints and writes; see ``docs/distributed.md``).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from collections.abc import Sequence
from typing import Any

import libmtl_repmtl

libmtl_repmtl.register()  # the plugin flags join LibMTL.config before this module builds its parser

from libmtl_repmtl.benchmarks import BenchmarkSetupError, get  # noqa: E402
from libmtl_repmtl.core.config import RepMTLConfig  # noqa: E402
from libmtl_repmtl.data.office import OFFICE_DOMAINS  # noqa: E402
from libmtl_repmtl.libmtl.bases import LibMTL  # noqa: E402
from libmtl_repmtl.libmtl.capabilities import resolve_architecture, resolve_weighting  # noqa: E402
from libmtl_repmtl.libmtl.weighting import RepMTL  # noqa: E402
from libmtl_repmtl.models.pretrained import PretrainedWeightsError  # noqa: E402
from libmtl_repmtl.training.amp import add_amp_args  # noqa: E402
from libmtl_repmtl.training.distributed import add_distributed_args  # noqa: E402
from libmtl_repmtl.training.experiment import run_experiment  # noqa: E402
from libmtl_repmtl.training.io import RunFileWriteError  # noqa: E402
from libmtl_repmtl.training.trainer import NonFiniteLossError  # noqa: E402

#: The example scripts' benchmark families.
FAMILIES = ("nyuv2", "cityscapes", "office")


def build_parser(family: str, argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser of ``examples/<family>/main.py`` (``family``: ``nyuv2``, ``cityscapes`` or ``office``).

    ``argv`` is pre-read for ``--weighting`` / ``--arch`` so that their plugin flags can be added."""
    if family not in FAMILIES:
        raise ValueError(f"unknown example {family!r}; choose from {FAMILIES}")
    spec = get("office-31" if family == "office" else family)
    d = spec.defaults
    parser = argparse.ArgumentParser(
        description=f"Train a LibMTL weighting/architecture on {family} (Rep-MTL project's example).",
        conflict_handler="resolve")
    # Copy LibMTL's flags instead of using ``parents=``: argparse's "resolve" handler would otherwise strip
    # option strings from the action objects shared with LibMTL's module-level parser (e.g. its -h/--help).
    for action in LibMTL.config.LibMTL_args._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        clone = copy.copy(action)
        clone.option_strings = list(action.option_strings)
        parser._add_action(clone)
    run = parser.add_argument_group("run")
    run.add_argument("--dataset_path", type=str, required=True, help="dataset root (the spec's layout)")
    run.add_argument("--save_path", type=str, required=True,
                     help="run folder: results.json, best.pt, last.pt (written atomically)")
    run.add_argument("--epochs", type=int, default=d["epochs"], help="training epochs (default %(default)s)")
    run.add_argument("--train_bs", type=int, default=d["train_bs"], help="training batch size (default %(default)s)")
    run.add_argument("--test_bs", type=int, default=d["test_bs"], help="evaluation batch size (default %(default)s)")
    run.add_argument("--aug", action="store_true", default=False, help="data augmentation (dense: scale-crop+flip)")
    run.add_argument("--device", type=str, default="auto",
                     help="auto (CUDA if available, else CPU), cpu, cuda or cuda:N (default %(default)s; "
                          "LibMTL's --gpu_id N means cuda:N when --device is auto)")
    run.add_argument("--pretrained", type=str, default=d["pretrained"],
                     help="encoder initialisation: imagenet (local torchvision file, never downloaded), none, or "
                          "a state dict PATH (default %(default)s)")
    run.add_argument("--encoder", type=str, default=d["encoder"], choices=(d["encoder"], "tiny"),
                     help="encoder variant; 'tiny' = same structure, few channels (quick CPU checks)")
    run.add_argument("--resume", action="store_true", default=False,
                     help="continue an interrupted run from SAVE_PATH/last.pt")
    run.add_argument("--baseline", type=str, default="spec",
                     help="Δp reference: spec (the paper's single-task rows), none, or a JSON FILE "
                          "{task: {metric: value}} (default %(default)s)")
    run.add_argument("--no_progress", action="store_true", default=False, help="no progress display on stderr")
    run.add_argument("--tasks", nargs="+", default=None, help="train only these tasks (single-task runs)")
    run.add_argument("--num_workers", type=int, default=0, help="DataLoader workers (default %(default)s)")
    add_amp_args(run)
    add_distributed_args(parser)
    if family == "cityscapes":
        run.add_argument("--train_mode", type=str, default="train", choices=("train", "trainval"),
                         help="LibMTL's flag: train on train/ (default) or on train/ + val/ (trainval)")
    if family == "office":
        run.add_argument("--dataset", type=str, default="office-31", choices=tuple(OFFICE_DOMAINS),
                         help="office-31 or office-home (default %(default)s)")
        run.add_argument("--list_dir", type=str, default=None,
                         help="folder with <domain>_{train,val,test}.txt (default: those in --dataset_path, else the "
                              "shipped lists)")
        run.add_argument("--image_size", type=int, default=224,
                         help="side of the square resize of the images (default %(default)s, the paper's)")
        run.add_argument("--bs", type=int, default=None,
                         help="LibMTL's office flag: the batch size of every split (sets --train_bs and --test_bs)")
    parser.set_defaults(optim=d["optim"], lr=d["lr"], weight_decay=d["weight_decay"], scheduler=d["scheduler"],
                        step_size=d.get("step_size", 100), gamma=d.get("gamma", 0.5),
                        multi_input=spec.multi_input)
    pre, _ = parser.parse_known_args(list(argv) if argv is not None else sys.argv[1:])
    for name, resolve in ((getattr(pre, "weighting", None), resolve_weighting),
                          (getattr(pre, "arch", None), resolve_architecture)):
        try:
            cls = resolve(name) if name else None
        except ValueError:
            continue  # reported properly after parsing
        if cls is not None and hasattr(cls, "libmtl_add_args"):
            cls.libmtl_add_args(parser)
    return parser


def _device(params: argparse.Namespace) -> str:
    if params.device == "auto" and str(getattr(params, "gpu_id", "0")) not in ("0", ""):
        import torch

        if torch.cuda.is_available():
            return f"cuda:{params.gpu_id}"
    return params.device


def _apply_bs(params: argparse.Namespace) -> None:
    """LibMTL's office ``--bs``: one batch size for every split (an explicit, different --train_bs/--test_bs is
    an error, not silently overridden)."""
    if params.bs is None:
        return
    if params.bs < 1:
        raise ValueError(f"--bs must be a positive batch size, got {params.bs}")
    defaults = get(params.dataset).defaults
    for flag in ("train_bs", "test_bs"):
        value = getattr(params, flag)
        if value != defaults[flag] and value != params.bs:
            raise ValueError(f"--bs {params.bs} and --{flag} {value} disagree: give --bs (every split) or "
                             f"--train_bs/--test_bs, not both")
        setattr(params, flag, params.bs)


def _refuse_unsupported(params: argparse.Namespace) -> None:
    """LibMTL's git version's ``--mode test`` / ``--load_path`` (evaluate or start from a checkpoint) are not
    implemented by these examples: refuse them rather than train as if they were absent."""
    if getattr(params, "mode", "train") not in (None, "train"):
        raise ValueError(f"--mode {params.mode}: these examples only train (LibMTL's --mode test, evaluation of a "
                         f"checkpoint, is not supported); drop --mode")
    if getattr(params, "load_path", None):
        raise ValueError("--load_path is not supported by these examples; to continue an interrupted run use "
                         "--resume (it reads SAVE_PATH/last.pt)")


def _refuse_foreign_repmtl_flags(params: argparse.Namespace) -> None:
    """``--RepMTL_<field>`` flags set away from their defaults are Rep-MTL's settings: with a weighting that is not
    RepMTL (or a subclass) nothing reads them, so they are refused instead of silently ignored. An unknown
    ``--weighting`` is left to its own error."""
    changed = [f"--{k}" for k, default in RepMTLConfig().to_weight_args().items()
               if hasattr(params, k) and getattr(params, k) != default]
    if not changed:
        return
    try:
        weighting = resolve_weighting(params.weighting)
    except ValueError:
        return
    if not issubclass(weighting, RepMTL):
        raise ValueError(f"{', '.join(changed)}: Rep-MTL's settings, but --weighting {params.weighting} does not "
                         "read them; drop them or use --weighting RepMTL")


def options_from_args(family: str, params: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The benchmark name and ``run_experiment`` keyword arguments of parsed flags."""
    _refuse_unsupported(params)
    _refuse_foreign_repmtl_flags(params)
    if family == "office":
        benchmark = params.dataset
        if not params.multi_input:
            raise ValueError("Office-31/Office-Home are multi-input problems: pass --multi_input")
        _apply_bs(params)
    else:
        benchmark = family
        if params.multi_input:
            raise ValueError(f"{family} is a single-input problem: drop --multi_input")
    opts: dict[str, Any] = dict(
        epochs=params.epochs, seed=params.seed, device=_device(params), tasks=params.tasks,
        rep_grad=bool(params.rep_grad), baseline=params.baseline, resume=params.resume,
        progress=False if params.no_progress else None, params=params,
        train_bs=params.train_bs, test_bs=params.test_bs, optim=params.optim, lr=params.lr,
        weight_decay=params.weight_decay, momentum=params.momentum, scheduler=params.scheduler,
        step_size=params.step_size, gamma=params.gamma, encoder=params.encoder,
        pretrained=params.pretrained, num_workers=params.num_workers, amp=params.amp, sync_bn=params.sync_bn,
        dist_backend=params.dist_backend)
    if family != "office" or params.aug:
        opts.update(aug=params.aug)  # Office reads no --aug: given, run_experiment refuses it
    if family == "office":
        opts.update(list_dir=params.list_dir, image_size=params.image_size)
    if family == "cityscapes":
        opts.update(train_mode=params.train_mode)
    return benchmark, opts


def main(family: str, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), train, and return the exit status."""

    argv = list(argv) if argv is not None else sys.argv[1:]
    parser = build_parser(family, argv)
    params = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0") or 0) if os.environ.get("WORLD_SIZE", "1") not in ("", "1") else 0
    where = f" (rank {rank})" if rank else ""
    try:
        benchmark, opts = options_from_args(family, params)
        results = run_experiment(benchmark, params.weighting, params.arch, params.dataset_path, params.save_path,
                                 **opts)
    except KeyboardInterrupt:
        if rank == 0:
            print(f"\ninterrupted; results so far are in {params.save_path}/results.json. Continue with the same "
                  "command plus --resume.", file=sys.stderr)
        return 130
    except (NonFiniteLossError, RunFileWriteError) as exc:
        print(f"error{where}: {exc}", file=sys.stderr)
        return 1
    except (PretrainedWeightsError, BenchmarkSetupError, ValueError, KeyError, FileNotFoundError) as exc:
        print(f"error{where}: {exc}", file=sys.stderr)
        return 2
    if rank != 0:
        return 0  # rank 0 reports (the results are the same on every rank)
    best = results.get("best_epoch")
    print(f"done: {results['epochs_done']} epoch(s); best epoch {best} "
          f"({results['best_epoch_selection']}); Δp_task best {_fmt(results.get('delta_p_task'))}, "
          f"last {_fmt(results.get('delta_p_task_last'))}; results in {params.save_path}/results.json")
    return 0


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{float(v):+.2f}%"


__all__ = ["FAMILIES", "build_parser", "main", "options_from_args"]
