"""The parts a trainer is built from: the composed LibMTL model, the optimiser and scheduler, the meter.

* :func:`compose_model`: ``class MTLmodel(architecture, weighting)`` on a device, as LibMTL's ``Trainer``
  composes it, with the shared parameters' gradients pre-allocated (LibMTL's weightings write into
  ``param.grad.data``) and kept allocated by ``zero_grad_share_params``;
* :func:`build_optimizer`: optimiser and scheduler from LibMTL-style parameter dicts;
* :func:`make_meter`: LibMTL's ``_PerformanceMeter`` (its construction banner silenced unless ``verbose``).

The run's peak memory: :mod:`~libmtl_repmtl.training.memory`.
"""

from __future__ import annotations

import contextlib
import importlib
import io
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from libmtl_repmtl.libmtl.bases import LibMTL  # noqa: F401 - the compatibility layer runs before LibMTL's modules
from libmtl_repmtl.training.options import check_run_settings

_PerformanceMeter = importlib.import_module("LibMTL._record")._PerformanceMeter
count_parameters = importlib.import_module("LibMTL.utils").count_parameters

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
    "adagrad": torch.optim.Adagrad, "rmsprop": torch.optim.RMSprop,
}
SCHEDULERS: dict[str, Callable[..., Any]] = {
    "step": torch.optim.lr_scheduler.StepLR, "exp": torch.optim.lr_scheduler.ExponentialLR,
    "cos": torch.optim.lr_scheduler.CosineAnnealingLR,
}


def _zero_grad_share_params(self: nn.Module) -> None:
    """LibMTL's weightings write into ``param.grad.data`` afterwards: keep the tensors, zero them."""
    for p in self.get_share_params():
        if p.grad is not None:
            p.grad.detach_()
            p.grad.zero_()


def compose_model(weighting: type, architecture: type, encoder_class: Callable[[], nn.Module],
                  decoders: Mapping[str, nn.Module], task_name: Sequence[str], *, rep_grad: bool, multi_input: bool,
                  device: torch.device, arch_args: Mapping[str, Any], verbose: bool = False) -> nn.Module:
    """``MTLmodel(architecture, weighting)`` on ``device`` (``init_param`` called, shared gradients allocated)."""

    def __init__(self: Any, task_name: list[str], encoder_class: Any, decoders: Any, rep_grad: bool,
                 multi_input: bool, device: torch.device, kwargs: dict[str, Any]) -> None:
        super(model_class, self).__init__(task_name, encoder_class, decoders, rep_grad, multi_input, device,
                                          **kwargs)
        self.init_param()

    model_class = type("MTLmodel", (architecture, weighting),
                       {"__init__": __init__, "zero_grad_share_params": _zero_grad_share_params,
                        "__module__": __name__})
    if not isinstance(decoders, nn.ModuleDict):
        decoders = nn.ModuleDict(dict(decoders))
    model = model_class(list(task_name), encoder_class, decoders, bool(rep_grad), bool(multi_input), device,
                        dict(arch_args)).to(device)
    for p in model.get_share_params():
        if p.requires_grad and p.grad is None:
            p.grad = torch.zeros_like(p)
    if verbose:
        count_parameters(model)
    return model


def build_optimizer(model: nn.Module, optim_param: Mapping[str, Any],
                    scheduler_param: Mapping[str, Any] | None) -> tuple[torch.optim.Optimizer, Any]:
    """Optimiser (``{"optim": name, **kwargs}``) and scheduler (``{"scheduler": name, **kwargs}`` or ``None``).

    Raises:
        ValueError: an unknown optimiser or scheduler name (the message lists the known ones), or a
            ``step_size`` / ``gamma`` the scheduler cannot use (not a positive integer / finite positive number).
    """
    params = dict(optim_param)
    name = str(params.pop("optim", "adam")).lower()
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose from {sorted(OPTIMIZERS)}")
    optimizer = OPTIMIZERS[name](model.parameters(), **params)
    scheduler = None
    if scheduler_param is not None and scheduler_param.get("scheduler"):
        sp = dict(scheduler_param)
        sname = str(sp.pop("scheduler")).lower()
        if sname not in SCHEDULERS:
            raise ValueError(f"unknown scheduler {sname!r}; choose from {sorted(SCHEDULERS)}")
        check_run_settings({"scheduler": sname, **sp})
        scheduler = SCHEDULERS[sname](optimizer, **sp)
    return optimizer, scheduler


def make_meter(task_dict: Mapping[str, Any], multi_input: bool, verbose: bool) -> Any:
    """LibMTL's ``_PerformanceMeter`` for ``task_dict``."""
    if verbose:
        return _PerformanceMeter(task_dict, multi_input)
    with contextlib.redirect_stdout(io.StringIO()):
        return _PerformanceMeter(task_dict, multi_input)


__all__ = ["OPTIMIZERS", "SCHEDULERS", "build_optimizer", "compose_model", "make_meter"]
