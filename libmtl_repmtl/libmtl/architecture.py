"""``RepHPS``: hard parameter sharing that captures the shared representation for Rep-MTL.

LibMTL's ``HPS`` hands each head a detached copy of the representation only with ``--rep_grad``, and
LibMTL 1.1.5 then keeps the single-input representation once per task (a dict), so every per-task backward
walks the encoder again. ``RepHPS`` is ``HPS`` with:

* one captured tensor ``self.rep`` for single-input problems (a per-task dict for multi-input problems or
  encoders that return one representation per task), so the encoder is backpropagated exactly once;
* capture switched on by ``--rep_grad`` or by a weighting that declares ``needs_rep = True`` (``RepMTL``),
  so ``--rep_grad`` is not needed; with any other weighting it behaves exactly like ``HPS``;
* copies held in at least float32, so saliencies are never stored in half precision (under autocast the
  heads still run in low precision).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from libmtl_repmtl.core.saliency import working_dtype
from libmtl_repmtl.libmtl.bases import LibMTL

HPS = LibMTL.architecture.HPS


class RepHPS(HPS):  # type: ignore[misc, valid-type]
    """Hard parameter sharing with a single captured representation (see the module docstring).

    Args: as LibMTL's ``HPS``: ``task_name``, ``encoder_class`` (zero-argument callable returning the
    encoder module), ``decoders`` (``nn.ModuleDict`` task -> head), ``rep_grad``, ``multi_input``,
    ``device``, ``**kwargs``.

    After a forward pass with gradients enabled and capture on, ``self.rep`` holds the encoder output
    ``Z`` (``(B, C, ...)`` tensor, or a task -> tensor dict) and ``self.rep_tasks[task]`` the leaf copy
    head ``task`` read.
    """

    #: Tells ``RepMTL`` that this architecture captures the representation without ``--rep_grad``.
    captures_rep = True

    def __init__(self, task_name: list[str], encoder_class: Any, decoders: Any, rep_grad: bool,
                 multi_input: bool, device: Any, **kwargs: Any) -> None:
        super().__init__(task_name, encoder_class, decoders, rep_grad, multi_input, device, **kwargs)
        self.rep: Tensor | dict[str, Tensor] = {}
        self.rep_tasks: dict[str, Tensor] = {}

    def _capture_on(self) -> bool:
        return torch.is_grad_enabled() and (bool(self.rep_grad) or bool(getattr(self, "needs_rep", False)))

    def forward(self, inputs: Tensor, task_name: str | None = None) -> dict[str, Tensor]:
        """Run the encoder once and every (or the named) head.

        Args:
            inputs: the batch, e.g. ``(B, 3, H, W)``.
            task_name: multi-input problems: the task whose batch ``inputs`` is.

        Returns:
            task -> prediction.
        """
        s_rep = self.encoder(inputs)
        per_task = isinstance(s_rep, (list, tuple))
        shared = not (per_task or self.multi_input)
        capture = self._capture_on()
        if capture and not shared and not isinstance(self.rep, dict):
            self.rep = {}
        out: dict[str, Tensor] = {}
        for tn, task in enumerate(self.task_name):
            if task_name is not None and task != task_name:
                continue
            rep = s_rep[tn] if per_task else s_rep
            out[task] = self.decoders[task](self._capture(rep, task, shared) if capture else rep)
        return out

    def _capture(self, rep: Tensor, task: str, shared: bool) -> Tensor:
        if shared:
            self.rep = rep
        else:
            self.rep[task] = rep  # type: ignore[index]
        copy = rep.detach().to(working_dtype(rep.dtype)).requires_grad_()
        self.rep_tasks[task] = copy
        if copy.dtype != rep.dtype and not torch.is_autocast_enabled(rep.device.type):
            return copy.to(rep.dtype)
        return copy

    # LibMTL's HPS (1.1.5) routes rep_grad through this hook from its own forward; RepHPS does not use
    # it, but keep LibMTL's signature working for subclasses that call it.
    def _prepare_rep(self, rep: Tensor, task: str, same_rep: bool | None = None) -> Tensor:
        if not self._capture_on():
            return rep
        return self._capture(rep, task, bool(same_rep) and not self.multi_input)


__all__ = ["RepHPS"]
