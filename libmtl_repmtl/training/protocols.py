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
* ``step.recompute_losses()``: the ``(T,)`` losses of the last batch drawn, again, without gradient and without
  touching the meter (after the step: the model has changed);
* ``step.model``, ``step.optimizer``, ``step.weight_args``, ``step.epoch``, ``step.batch_index``.

:func:`protocol_for` picks the protocol of a weighting class, in this order:

1. the class's own ``libmtl_step_protocol`` (a static method taking the context);
2. for a class of the installed LibMTL (or a subclass of one), an entry of :data:`LIBMTL_PROTOCOLS` (class
   name -> protocol), else the protocol LibMTL's own ``Trainer`` follows for it, as
   :func:`libmtl_repmtl.libmtl.host.protocol` observes it (never by version): ``loss_samples = k > 1`` gives
   :func:`several_samples` (``k`` batches, losses of shape ``(k, T)``: MoDo, SDMGrad), ``update_after_step``
   gives :func:`then_update` (FAMO: ``model.update_w(losses)`` after the step, the losses recomputed on the
   same batch);
3. :func:`single_sample`.

Bilevel weightings (the git version's MOML, FORUM, AutoLambda) have no class and no step: LibMTL's
``Trainer.train_bilevel`` runs its own loop (separate inner and outer batches of half the batch size, task
weights with their own optimiser). This package's trainer does not implement that loop;
:func:`trainable_weighting` refuses them with :class:`BilevelMethodError` before anything is built.

Two differences from LibMTL's ``Trainer``, both in what is reported and never in the update: with ``k`` loss
samples every sample's predictions enter the epoch's training metrics (LibMTL's: the last sample's), and the
losses FAMO's update recomputes after the step are not counted as training losses (LibMTL's loss meter counts
them).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from libmtl_repmtl.libmtl import host
from libmtl_repmtl.libmtl.capabilities import resolve_weighting


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
    _recompute_losses: Callable[[], torch.Tensor] | None = field(default=None, repr=False)

    def backward_and_step(self, losses: torch.Tensor, **extra: Any) -> Any:
        """The weighting's backward (``weight_args`` plus ``extra``) and the optimiser step; returns the task
        weights the weighting reports."""
        return self._backward_and_step(losses, {**self.weight_args, **extra})

    def recompute_losses(self) -> torch.Tensor:
        """``(T,)`` losses of the last batch :meth:`forward_losses` drew, recomputed by the current model without
        gradient; the meter is not updated.

        Raises:
            RuntimeError: the trainer offers no recomputation, or no batch was drawn in this step yet.
        """
        if self._recompute_losses is None:
            raise RuntimeError("this trainer's step context cannot recompute the losses of the last batch")
        return self._recompute_losses()


#: ``(step) -> (losses, weights)``.
StepProtocol = Callable[[StepContext], "tuple[torch.Tensor, Any]"]


class BilevelMethodError(host.NoClassError):
    """A bilevel weighting (run by LibMTL's ``Trainer.train_bilevel``), which this package's trainer refuses."""


def single_sample(step: StepContext) -> tuple[torch.Tensor, Any]:
    """The default: one batch's losses, checked, into the weighting's ``backward``, then the optimiser step."""
    losses = step.forward_losses()
    step.check(losses)
    return losses, step.backward_and_step(losses)


def several_samples(k: int) -> StepProtocol:
    """``k`` loss samples per step, as LibMTL's ``Trainer`` draws them for MoDo and SDMGrad: ``k`` batches,
    each checked, their losses stacked to ``(k, T)`` (row ``i`` from the ``i``-th batch) into ``backward``.
    The losses recorded for the step are the rows' mean, ``(T,)``.

    Raises:
        ValueError: ``k < 2``.
    """
    if int(k) < 2:
        raise ValueError(f"several_samples needs k >= 2 loss samples, got {k}; use single_sample for one")
    k = int(k)

    def protocol(step: StepContext) -> tuple[torch.Tensor, Any]:
        rows = []
        for _ in range(k):
            losses = step.forward_losses()
            step.check(losses)
            rows.append(losses)
        stacked = torch.stack(rows)
        return stacked.detach().mean(0), step.backward_and_step(stacked)

    protocol.__name__ = protocol.__qualname__ = f"several_samples_{k}"
    protocol.loss_samples = k  # read by tests and docs: how many batches a step draws
    return protocol


def then_update(base: StepProtocol, method: str) -> StepProtocol:
    """``base``, then ``model.<method>(losses)`` with the losses of the step's last batch recomputed without
    gradient after the optimiser step, as LibMTL's ``Trainer`` calls FAMO's ``update_w``.

    Raises:
        AttributeError: (at the step) the model has no callable ``method``.
    """

    def protocol(step: StepContext) -> tuple[torch.Tensor, Any]:
        losses, weights = base(step)
        update = getattr(step.model, method, None)
        if not callable(update):
            raise AttributeError(f"the weighting's protocol calls model.{method}(losses) after the optimiser step, "
                                 f"but the model ({type(step.model).__name__}) has no method {method!r}")
        with torch.no_grad():
            update(step.recompute_losses().detach())
        return losses, weights

    protocol.__name__ = protocol.__qualname__ = f"{getattr(base, '__name__', 'protocol')}_then_{method}"
    protocol.update_after_step = method  # read by tests and docs: the update after the step
    return protocol


#: Protocols of LibMTL classes (which cannot define ``libmtl_step_protocol``) that override what
#: :func:`libmtl_repmtl.libmtl.host.protocol` observes, by class name.
LIBMTL_PROTOCOLS: dict[str, StepProtocol] = {}


def _libmtl_class(weighting: type) -> type | None:
    """The first class of ``weighting``'s MRO that is a weighting of the installed LibMTL under its own name."""
    module = sys.modules.get("LibMTL.weighting")
    for k in weighting.__mro__:
        if k.__module__.split(".")[0] == "LibMTL" and module is not None and vars(module).get(k.__name__) is k:
            return k
    return None


def from_host(name: str) -> StepProtocol:
    """The protocol LibMTL's ``Trainer`` follows for its weighting ``name`` (:func:`host.protocol`)."""
    info = host.protocol(name)
    base = several_samples(info.loss_samples) if info.loss_samples > 1 else single_sample
    return then_update(base, info.update_after_step) if info.update_after_step else base


def protocol_for(weighting: type) -> StepProtocol:
    """The step protocol of the weighting class ``weighting`` (see the module docstring for the order)."""
    own = getattr(weighting, "libmtl_step_protocol", None)
    if callable(own):
        return own
    libmtl_cls = _libmtl_class(weighting)
    if libmtl_cls is None:
        return single_sample
    if libmtl_cls.__name__ in LIBMTL_PROTOCOLS:
        return LIBMTL_PROTOCOLS[libmtl_cls.__name__]
    return from_host(libmtl_cls.__name__)


def bilevel_message(name: str) -> str:
    """Why this package's trainer refuses the bilevel weighting ``name``, and what to use instead."""
    info = host.protocol(name)
    return (f"weighting {name!r} (--weighting) is a bilevel method: LibMTL's Trainer runs it with its own loop "
            f"(train_bilevel: separate inner and outer batches of half the batch size, softmax task weights "
            f"trained by their own optimiser; flags {sorted(info.weight_args)}), which this package's trainer does "
            f"not implement. Run it with LibMTL's own Trainer, e.g. LibMTL's example script: libmtl-repmtl run "
            f"<LibMTL checkout>/examples/nyuv2/main.py --weighting {name} --arch HPS ... (see docs/compat.md), "
            f"or choose another weighting (libmtl-repmtl list).")


def trainable_weighting(weighting: str | type) -> type:
    """The weighting class this package's trainer runs for ``weighting`` (a class, or a name through the host).

    Raises:
        BilevelMethodError: a bilevel method of the installed LibMTL (MOML, FORUM, AutoLambda in its git
            version), refused with the reason and what to use instead.
        libmtl_repmtl.libmtl.host.UnknownMethodError: an unknown name (the message lists every name).
    """
    if isinstance(weighting, str) and weighting in host.bilevel_methods():
        raise BilevelMethodError(bilevel_message(weighting))
    return resolve_weighting(weighting)


__all__ = ["LIBMTL_PROTOCOLS", "BilevelMethodError", "StepContext", "StepProtocol", "bilevel_message", "from_host",
           "protocol_for", "several_samples", "single_sample", "then_update", "trainable_weighting"]
