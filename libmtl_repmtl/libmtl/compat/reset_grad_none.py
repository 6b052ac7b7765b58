"""Post-import patch ``reset-grad-none``."""

from __future__ import annotations

from typing import Any

from libmtl_repmtl.libmtl.compat._common import _mark, _marked, tiny_parts


def _patch_reset_grad(libmtl: Any) -> bool:
    """Symptom: gradient-manipulation weightings (PCGrad, GradVac, CAGrad, MGDA, IMTL, GradNorm with
    parameter gradients) fail with ``AttributeError: 'NoneType' object has no attribute 'data'`` in
    ``AbsWeighting._reset_grad``.

    Cause: since torch 2.0, ``zero_grad()`` sets ``.grad`` to ``None`` by default; LibMTL 1.1.5's
    ``Trainer.train`` and ``zero_grad_share_params`` call it, and ``_reset_grad`` then assigns
    ``param.grad.data = ...``. Cure: ``_reset_grad`` copies the new gradient into ``.grad``, allocating it
    (with the parameter's dtype and device) where it is ``None``.
    Detected by calling ``_reset_grad`` on a stub whose shared parameters have no gradient.
    """
    base = libmtl.weighting.abstract_weighting.AbsWeighting
    if _marked(base.__dict__.get("_reset_grad"), "reset-grad-none"):
        return False
    holder_cls, torch = tiny_parts(libmtl)
    holder = holder_cls()
    holder._compute_grad_dim()
    try:
        holder._reset_grad(torch.zeros(holder.grad_dim))
        return False
    except AttributeError:
        pass

    def _reset_grad(self: Any, new_grads: Any) -> None:
        import torch

        start = 0
        with torch.no_grad():
            for param in self.get_share_params():
                n = param.numel()
                new = new_grads[start:start + n].reshape(param.shape).to(dtype=param.dtype, device=param.device)
                start += n
                if param.grad is None:
                    param.grad = new.clone()
                else:
                    param.grad.detach_()
                    param.grad.copy_(new)

    _reset_grad.__doc__ = "Set the shared parameters' gradients to ``new_grads`` (allocated where None; libmtl_repmtl)."
    base._reset_grad = _mark(_reset_grad, "reset-grad-none")
    return True
