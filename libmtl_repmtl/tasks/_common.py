"""Shared helpers of the losses and metrics (shape checks, resizing predictions to the label size)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def match_size(pred: Tensor, size: tuple[int, int]) -> Tensor:
    """``pred`` (``(B, C, h, w)``) bilinearly resized to ``size = (H, W)`` when ``(h, w) != (H, W)``.

    ``align_corners=True``, as the trainer's own upsampling (``registry.dense_process_preds``), so a prediction
    that already went through the trainer is left untouched and one that did not is resized the same way.
    """
    if pred.dim() != 4:
        raise ValueError(f"expected a prediction of shape (B, C, H, W), got {tuple(pred.shape)}")
    if tuple(pred.shape[-2:]) != tuple(size):
        pred = F.interpolate(pred.float(), size=tuple(size), mode="bilinear", align_corners=True)
    return pred


def check_batch(pred: Tensor, gt: Tensor, what: str) -> None:
    """Raise ``ValueError`` when ``pred`` and ``gt`` disagree on the batch size."""
    if pred.shape[0] != gt.shape[0]:
        raise ValueError(f"{what}: prediction batch {pred.shape[0]} != label batch {gt.shape[0]} "
                         f"(pred {tuple(pred.shape)}, gt {tuple(gt.shape)})")


def dense_target(gt: Tensor, channels: int, what: str) -> Tensor:
    """``gt`` as ``(B, channels, H, W)``: accepts ``(B, channels, H, W)`` or, for one channel, ``(B, H, W)``."""
    if gt.dim() == 3 and channels == 1:
        gt = gt.unsqueeze(1)
    if gt.dim() != 4 or gt.shape[1] != channels:
        raise ValueError(f"{what}: expected a target of shape (B, {channels}, H, W), got {tuple(gt.shape)}")
    return gt


def zero_loss(pred: Tensor) -> Tensor:
    """A zero that keeps ``pred``'s graph (used when a batch has no valid pixel)."""
    return pred.sum() * 0.0


__all__ = ["check_batch", "dense_target", "match_size", "zero_loss"]
