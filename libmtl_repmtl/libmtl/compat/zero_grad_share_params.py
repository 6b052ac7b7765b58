"""Post-import patch ``zero-grad-share-params``."""

from __future__ import annotations

from typing import Any

from libmtl_repmtl.libmtl.compat._common import _mark, _marked, tiny_parts


def _patch_zero_grad_share_params(libmtl: Any) -> bool:
    """Symptom: after a gradient weighting's per-task gradients (``_compute_grad``), the shared parameters'
    ``.grad`` are ``None`` (freed and re-allocated for every task at every step), not zero tensors.

    Cause: ``AbsArchitecture.zero_grad_share_params`` calls ``self.encoder.zero_grad()``, which sets
    gradients to ``None`` since torch 2.0 (LibMTL 1.1.5 was written for the zeroing behaviour).
    Cure: zero the shared parameters' gradients in place (``get_share_params()``), keeping the tensors.
    Architectures that override the method (MTAN, MMoE, PLE) keep theirs; ``reset-grad-none`` makes that
    harmless. Detected by calling it on a stub whose shared parameter has a gradient.
    """
    base = libmtl.architecture.abstract_arch.AbsArchitecture
    if _marked(base.__dict__.get("zero_grad_share_params"), "zero-grad-share-params"):
        return False
    holder_cls, torch = tiny_parts(libmtl)
    holder = holder_cls()
    for p in holder.encoder.parameters():
        p.grad = torch.ones_like(p)
    base.zero_grad_share_params(holder)
    if all(p.grad is not None for p in holder.encoder.parameters()):
        return False

    def zero_grad_share_params(self: Any) -> None:
        for param in self.get_share_params():
            if param.grad is not None:
                param.grad.detach_()
                param.grad.zero_()

    zero_grad_share_params.__doc__ = "Zero the shared parameters' gradients in place (libmtl_repmtl)."
    base.zero_grad_share_params = _mark(zero_grad_share_params, "zero-grad-share-params")
    return True
