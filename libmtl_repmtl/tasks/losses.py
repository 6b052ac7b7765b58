"""Task losses of the four benchmarks, as LibMTL :class:`AbsLoss` subclasses.

LibMTL calls ``loss_fn._update_loss(pred, gt)`` once per batch (it calls :meth:`compute_loss`, records the
value and the batch size, and returns the differentiable loss), ``_average_loss()`` at the end of an epoch
and ``_reinit()`` before the next one. Every loss here returns a scalar tensor that is a *mean* over the
batch's valid elements.

Dense losses accept predictions at any spatial size: when ``pred``'s ``(h, w)`` differs from the label's
``(H, W)`` the prediction is bilinearly resized first (``align_corners=True``). The trainer normally
upsamples already, so this is only a safety net.

A batch without any valid pixel (every label ``-1``, every depth ``0``, every normal ``0``) gives a zero loss
that keeps the graph (instead of the ``nan`` of a mean over nothing).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from libmtl_repmtl.libmtl.bases import AbsLoss
from libmtl_repmtl.tasks._common import check_batch, dense_target, match_size, zero_loss

#: Label value ignored by the segmentation loss and metrics.
IGNORE_INDEX: int = -1


class SegLoss(AbsLoss):
    """Pixel-wise cross-entropy, ``ignore_index = -1``, mean over the non-ignored pixels.

    ``compute_loss(pred, gt)``: ``pred`` float ``(B, C, h, w)`` logits; ``gt`` long ``(B, H, W)`` with values
    in ``{-1} ∪ [0, C-1]``. Returns a scalar.
    """

    #: Label value the loss skips (the trainer's label-range check reads it).
    ignore_index: int = IGNORE_INDEX

    def compute_loss(self, pred: Tensor, gt: Tensor) -> Tensor:
        check_batch(pred, gt, "segmentation loss")
        if gt.dim() == 4 and gt.shape[1] == 1:
            gt = gt[:, 0]
        if gt.dim() != 3:
            raise ValueError(f"segmentation loss: expected labels of shape (B, H, W), got {tuple(gt.shape)}")
        pred = match_size(pred, tuple(gt.shape[-2:]))
        gt = gt.long()
        if not bool((gt != IGNORE_INDEX).any()):
            return zero_loss(pred)
        return F.cross_entropy(pred, gt, ignore_index=IGNORE_INDEX)


class DepthLoss(AbsLoss):
    """L1 over the valid pixels (``gt != 0``): ``sum(|pred - gt| * valid) / sum(valid)``.

    ``compute_loss(pred, gt)``: ``pred`` float ``(B, 1, h, w)``; ``gt`` float ``(B, 1, H, W)`` (or ``(B, H, W)``),
    ``0`` = invalid. Returns a scalar.
    """

    def compute_loss(self, pred: Tensor, gt: Tensor) -> Tensor:
        check_batch(pred, gt, "depth loss")
        gt = dense_target(gt, 1, "depth loss")
        pred = match_size(pred, tuple(gt.shape[-2:]))
        valid = (gt != 0).to(pred.dtype)
        n = valid.sum()
        if float(n) == 0.0:
            return zero_loss(pred)
        return ((pred - gt).abs() * valid).sum() / n


class NormalLoss(AbsLoss):
    """``1 - cosine`` between predicted and true normals, mean over the valid pixels (``gt``'s L2 norm != 0).

    Predictions are L2-normalised over channels here (a no-op when the trainer normalised them already);
    the targets are normalised too, so the loss is exactly ``1 - cos`` even for slightly non-unit targets.

    ``compute_loss(pred, gt)``: ``pred`` float ``(B, 3, h, w)``; ``gt`` float ``(B, 3, H, W)``. Returns a scalar
    in ``[0, 2]``.
    """

    def compute_loss(self, pred: Tensor, gt: Tensor) -> Tensor:
        check_batch(pred, gt, "normal loss")
        gt = dense_target(gt, 3, "normal loss")
        pred = match_size(pred, tuple(gt.shape[-2:]))
        if pred.shape[1] != 3:
            raise ValueError(f"normal loss: expected predictions of shape (B, 3, H, W), got {tuple(pred.shape)}")
        valid = gt.norm(p=2, dim=1) != 0  # (B, H, W)
        n = valid.sum()
        if int(n) == 0:
            return zero_loss(pred)
        cos = (F.normalize(pred, p=2, dim=1) * F.normalize(gt.to(pred.dtype), p=2, dim=1)).sum(dim=1)
        return 1.0 - (cos * valid.to(pred.dtype)).sum() / n.to(pred.dtype)


class ClsLoss(AbsLoss):
    """Cross-entropy for classification, mean over the batch.

    ``compute_loss(pred, gt)``: ``pred`` float ``(B, K)`` logits; ``gt`` long ``(B,)`` in ``[0, K-1]``. Returns a
    scalar.
    """

    def compute_loss(self, pred: Tensor, gt: Tensor) -> Tensor:
        check_batch(pred, gt, "classification loss")
        if pred.dim() != 2 or gt.dim() != 1:
            raise ValueError(f"classification loss: expected pred (B, K) and gt (B,), got {tuple(pred.shape)} "
                             f"and {tuple(gt.shape)}")
        return F.cross_entropy(pred, gt.long())


__all__ = ["ClsLoss", "DepthLoss", "IGNORE_INDEX", "NormalLoss", "SegLoss"]
