"""Post-import patch ``grad2vec-device``."""

from __future__ import annotations

from typing import Any

from libmtl_repmtl.libmtl.compat._common import _mark, _marked, tiny_parts


def _patch_grad2vec(libmtl: Any) -> bool:
    """Symptom: per-task gradients of the shared parameters are gathered in a float32 CPU tensor whatever the
    parameters' device and dtype (a device -> host -> device round trip per task and step on GPU; float64
    models lose precision).

    Cause: ``AbsWeighting._grad2vec`` builds ``torch.zeros(self.grad_dim)`` (default dtype, CPU).
    Cure: build it with the shared parameters' dtype and device.
    Detected by calling ``_grad2vec`` on a stub with float64 parameters.
    """
    base = libmtl.weighting.abstract_weighting.AbsWeighting
    if _marked(base.__dict__.get("_grad2vec"), "grad2vec-device"):
        return False
    holder_cls, torch = tiny_parts(libmtl)
    holder = holder_cls(torch.float64)
    for p in holder.encoder.parameters():
        p.grad = torch.ones_like(p)
    holder._compute_grad_dim()
    if holder._grad2vec().dtype == torch.float64:
        return False

    def _grad2vec(self: Any) -> Any:
        import torch

        params = list(self.get_share_params())
        like = params[0] if params else torch.zeros(0)
        grad = torch.zeros(self.grad_dim, dtype=like.dtype, device=like.device)
        start = 0
        for param in params:
            n = param.numel()
            if param.grad is not None:
                grad[start:start + n] = param.grad.detach().reshape(-1)
            start += n
        return grad

    _grad2vec.__doc__ = "Flatten the shared parameters' gradients (their dtype and device; libmtl_repmtl)."
    base._grad2vec = _mark(_grad2vec, "grad2vec-device")
    return True
