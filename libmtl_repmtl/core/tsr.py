"""TSR: task-specific saliency regulation (an entropy penalty, minimised).

1. per-position task magnitude: ``u_t[b, n] = |mean_c S_t[b, c, n]|`` (``channel_mean="signed"``: the channel
   mean, sign kept, then its magnitude) or ``u_t[b, n] = mean_c |S_t[b, c, n]|`` (``channel_mean="abs"``);
2. per position ``i = (b, n)``, L1-normalise across tasks: ``P[i, t] = u_t[i] / sum_k u_k[i]``;
3. ``L_tsr = mean_i ( - sum_t P[i, t] log P[i, t] )``.

Positions where every task's channel-mean saliency is exactly 0 have no distribution; they contribute
entropy 0 (and no gradient). ``0 log 0 = 0``. With ``T = 1`` the term is identically 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from libmtl_repmtl.core.config import CHOICES
from libmtl_repmtl.core.saliency import global_rescale, stack_saliencies


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` where ``den > 0``, else 0, with finite gradients everywhere."""
    ok = den > 0
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(num))


def channel_magnitudes(stacked: Tensor, channel_mean: str = "signed") -> Tensor:
    """Per-position task magnitudes ``u_t``: ``|mean_c S|`` (``"signed"``) or ``mean_c |S|`` (``"abs"``).

    Args:
        stacked: ``(T, B, C, N)`` saliencies.
        channel_mean: ``"signed"`` or ``"abs"`` (:data:`libmtl_repmtl.core.config.CHOICES`).

    Returns:
        ``(T, B, N)``, non-negative.
    """
    if channel_mean == "signed":
        return stacked.mean(dim=2).abs()
    if channel_mean == "abs":
        return stacked.abs().mean(dim=2)
    raise ValueError(f"TSR channel_mean must be one of {CHOICES['tsr_channel_mean']}, got {channel_mean!r}")


def task_distribution(stacked: Tensor, channel_mean: str = "signed") -> Tensor:
    """Per-position task distribution ``P``.

    Args:
        stacked: ``(T, B, C, N)`` saliencies.
        channel_mean: how the channels are reduced (:func:`channel_magnitudes`).

    Returns:
        ``(T, B, N)``; sums to 1 over tasks at every position with any non-zero saliency, else all 0.
    """
    mag = channel_magnitudes(stacked, channel_mean)
    return _safe_div(mag, mag.sum(dim=0, keepdim=True))


def entropy_map(stacked: Tensor, channel_mean: str = "signed") -> Tensor:
    """Per-position entropy ``- sum_t P log P`` of the task distribution.

    Args:
        stacked: ``(T, B, C, N)`` saliencies.
        channel_mean: how the channels are reduced (:func:`channel_magnitudes`).

    Returns:
        ``(B, N)`` entropies in ``[0, log T]``.
    """
    p = task_distribution(stacked, channel_mean)
    log_p = torch.log(torch.where(p > 0, p, torch.ones_like(p)))
    return -(p * log_p).sum(dim=0)


def tsr_loss(saliencies: Sequence[Tensor] | Tensor, channel_mean: str = "signed") -> Tensor:
    """The TSR entropy penalty ``L_tsr``.

    Args:
        saliencies: ``T`` tensors ``(B, C, *spatial)`` (or ``(B, C)``), or an already stacked
            ``(T, B, C, N)`` tensor.
        channel_mean: how the channels are reduced (:func:`channel_magnitudes`).

    Returns:
        Scalar in ``[0, log T]``, in at least float32, differentiable w.r.t. the saliencies.
    """
    stacked = saliencies if isinstance(saliencies, Tensor) else stack_saliencies(saliencies)
    if stacked.shape[0] < 2:
        return stacked.sum() * 0.0
    return entropy_map(global_rescale(stacked), channel_mean).mean()


def tsr_entropy_map(saliencies: Sequence[Tensor], channel_mean: str = "signed") -> Tensor:
    """The TSR entropy map for pictures: ``(B, *spatial)`` per-position entropies (detached)."""
    stacked = stack_saliencies([s.detach() for s in saliencies])
    spatial = saliencies[0].shape[2:]
    return entropy_map(global_rescale(stacked), channel_mean).reshape(stacked.shape[1], *spatial)


__all__ = ["channel_magnitudes", "entropy_map", "task_distribution", "tsr_entropy_map", "tsr_loss"]
