"""Training-step protocols: the named point of the loop through which a weighting with its own protocol runs.

Most weightings need one thing per step: the ``(T,)`` task losses of one batch, handed to their ``backward``,
then the optimiser step. Some need more (LibMTL's git version): MoDo and SDMGrad take several loss samples per
step (several batches), FAMO updates its weights with the losses after the step (``update_w``). The trainer's
:meth:`~libmtl_repmtl.training.loop.EpochLoop.train_step` therefore runs one **step protocol**: a callable
``protocol(step: StepContext) -> (losses, weights)``, where ``losses`` are the ``(T,)`` losses to record (the
meter, the loss checks) and ``weights`` the task weights to record (or ``None``).

A :class:`StepContext` offers the building blocks, each with the trainer's checks, precision policy and
distribution strategy already applied:

* ``step.forward_losses()``: draw the next training batch (every task's, multi-input) and return its ``(T,)``
  losses (call it ``k`` times for ``k`` loss samples; each call updates the meter);
* ``step.check(losses)``: refuse non-finite losses (agreed by every rank);
* ``step.backward_and_step(losses, **extra)``: the weighting's ``backward(losses, **weight_args, **extra)``
  and the optimiser step (the precision policy's; GradScaler with float16);
* ``step.model``, ``step.optimizer``, ``step.weight_args``, ``step.epoch``, ``step.batch_index``.

:func:`protocol_for` picks the protocol of a weighting class: the class's own ``libmtl_step_protocol``
(a static method taking the context) when it defines one, else :func:`single_sample`. A protocol for a
LibMTL class (which cannot carry the attribute) is added to :data:`LIBMTL_PROTOCOLS` (class name -> protocol).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class StepContext:
    """One training step's building blocks (see the module docstring)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    weight_args: Mapping[str, Any]
    epoch: int
    batch_index: int
    forward_losses: Callable[[], torch.Tensor]
    check: Callable[[torch.Tensor], None]
    _backward_and_step: Callable[[torch.Tensor, Mapping[str, Any]], Any] = field(repr=False)

    def backward_and_step(self, losses: torch.Tensor, **extra: Any) -> Any:
        """The weighting's backward (``weight_args`` plus ``extra``) and the optimiser step; returns the task
        weights the weighting reports."""
        return self._backward_and_step(losses, {**self.weight_args, **extra})


#: ``(step) -> (losses, weights)``.
StepProtocol = Callable[[StepContext], "tuple[torch.Tensor, Any]"]


def single_sample(step: StepContext) -> tuple[torch.Tensor, Any]:
    """The default: one batch's losses, checked, into the weighting's ``backward``, then the optimiser step."""
    losses = step.forward_losses()
    step.check(losses)
    return losses, step.backward_and_step(losses)


#: Protocols of LibMTL classes (which cannot define ``libmtl_step_protocol``), by class name.
LIBMTL_PROTOCOLS: dict[str, StepProtocol] = {}


def protocol_for(weighting: type) -> StepProtocol:
    """The step protocol of ``weighting`` (its ``libmtl_step_protocol``, a LibMTL class's entry in
    :data:`LIBMTL_PROTOCOLS`, else :func:`single_sample`)."""
    own = getattr(weighting, "libmtl_step_protocol", None)
    if callable(own):
        return own
    for k in weighting.__mro__:
        if k.__module__.split(".")[0] == "LibMTL" and k.__name__ in LIBMTL_PROTOCOLS:
            return LIBMTL_PROTOCOLS[k.__name__]
    return single_sample


__all__ = ["LIBMTL_PROTOCOLS", "StepContext", "StepProtocol", "protocol_for", "single_sample"]
