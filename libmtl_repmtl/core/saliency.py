"""Task objectives and task saliencies (gradients of the task objectives w.r.t. the representation).

Shapes: ``T`` tasks, batch ``B``, ``C`` channels, any number of spatial dimensions (``N`` positions once
flattened; ``N = 1`` for a pooled ``B x C`` representation).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor

from libmtl_repmtl.core.config import LOG_EPS

_WARNED: set[str] = set()


def warn_once(key: str, message: str) -> None:
    """Emit ``message`` as a ``UserWarning`` once per process for ``key``."""
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(message, UserWarning, stacklevel=3)


def task_objectives(losses: Tensor | Sequence[Tensor], log_loss: bool = True) -> Tensor:
    """Per-task objectives ``l_t``.

    Args:
        losses: ``(T,)`` tensor (or a sequence of ``T`` scalars) of batch-mean task losses ``L_t``.
        log_loss: ``l_t = log(L_t + 1e-8)`` if true (DB-MTL's transform), else ``l_t = L_t``.

    Returns:
        ``(T,)`` tensor of objectives, differentiable w.r.t. the losses.
    """
    stacked = losses if isinstance(losses, Tensor) else torch.stack([torch.as_tensor(x) for x in losses])
    stacked = stacked.reshape(-1)
    return torch.log(stacked + LOG_EPS) if log_loss else stacked


def working_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the saliency terms are computed in: ``dtype`` promoted to at least float32."""
    return torch.promote_types(dtype, torch.float32)


def task_saliencies(
    objectives: Tensor,
    reps: Sequence[Tensor],
    create_graph: bool = True,
) -> list[Tensor]:
    """All task saliencies ``S_t = d l_t / d Z_t`` in ONE backward pass through the heads.

    ``reps[t]`` is the representation head ``t`` read (a detached leaf copy of the shared ``Z`` per
    head, LibMTL's ``rep_grad`` mechanism). Because ``l_t`` depends on ``reps[t]`` only, differentiating
    ``sum_t l_t`` w.r.t. all copies at once yields every ``S_t``.

    Args:
        objectives: ``(T,)`` task objectives.
        reps: ``T`` tensors, each ``(B_t, C, *spatial)``, that require grad.
        create_graph: keep the graph so that functions of ``S_t`` can be differentiated (second order).

    Returns:
        ``T`` tensors shaped like ``reps``, in at least float32 (zeros where a head ignores its input).
    """
    if objectives.shape != (len(reps),):
        raise ValueError(
            f"expected {len(reps)} objectives (one per representation), got shape {tuple(objectives.shape)}"
        )
    for t, r in enumerate(reps):
        if not r.requires_grad:
            raise ValueError(
                f"representation {t} does not require grad: each head must read a leaf copy of the shared "
                "representation (LibMTL --rep_grad, or --arch RepHPS)"
            )
    grads = torch.autograd.grad(objectives.sum(), list(reps), create_graph=create_graph, allow_unused=True)
    out = []
    for g, r in zip(grads, reps):
        g = torch.zeros_like(r) if g is None else g
        out.append(g.to(working_dtype(g.dtype)))
    return out


def stack_saliencies(saliencies: Sequence[Tensor]) -> Tensor:
    """Stack per-task saliencies into ``(T, B, C, N)``, in at least float32.

    Multi-input tasks may arrive with different batch sizes ``B_t``: the per-sample terms then use the
    first ``min_t B_t`` samples of each task (warned once).

    Raises:
        ValueError: channel or spatial shapes differ across tasks, or a saliency has fewer than 2 dims.
    """
    if len(saliencies) == 0:
        raise ValueError("no saliencies given")
    shapes = [tuple(s.shape) for s in saliencies]
    if any(len(s) < 2 for s in shapes):
        raise ValueError(f"saliencies must be (B, C, ...) tensors, got shapes {shapes}")
    if len({s[1:] for s in shapes}) != 1:
        raise ValueError(
            f"the task representations must have the same (C, *spatial) shape to be compared, got {shapes}"
        )
    batch = min(s[0] for s in shapes)
    if any(s[0] != batch for s in shapes):
        warn_once(
            "unequal-batch",
            f"Rep-MTL: task batches have different sizes {[s[0] for s in shapes]}; the per-sample TSR/CSA "
            f"terms use the first {batch} samples of each task",
        )
    dtype = working_dtype(saliencies[0].dtype)
    return torch.stack([s[:batch].reshape(batch, s.shape[1], -1).to(dtype) for s in saliencies])


def global_rescale(stacked: Tensor) -> Tensor:
    """Divide all saliencies by one detached global factor (their max absolute entry).

    TSR and CSA are invariant to one global positive scale of all saliencies, so this is exact; it keeps
    the tiny saliency values (often < 1e-6) and their fourth powers in CSA far from float32 underflow.
    Per-task or per-sample rescaling would NOT be exact.
    """
    scale = stacked.detach().abs().amax()
    return stacked / torch.where(scale > 0, scale, torch.ones_like(scale))
