"""Task metrics of the four benchmarks, as LibMTL :class:`AbsMetric` subclasses.

Protocol (LibMTL 1.1.5 and its git version): ``update_fun(pred, gt)`` once per evaluation batch,
``score_fun() -> list[float]`` at the end of the epoch (values in the order of the task dict's ``metrics``),
``reinit()`` before the next epoch. All metrics here accumulate *exact sufficient statistics* over the whole
epoch, so the score does not depend on how the data were batched:

=====================  ===========================================================  ==============  ======
metric class           values returned by ``score_fun()``                           units           better
=====================  ===========================================================  ==============  ======
:class:`SegMetric`     ``[mIoU, pixAcc]``                                           fractions 0..1  higher
:class:`DepthMetric`   ``[abs_err, rel_err]``                                       depth units /   lower
                                                                                    ratio
:class:`NormalMetric`  ``[mean, median, <11.25, <22.5, <30]``                       degrees x2,     lower x2,
                                                                                    fractions x3    higher x3
:class:`AccMetric`     ``[accuracy]``                                               fraction 0..1   higher
=====================  ===========================================================  ==============  ======

Fractions (not percent) are LibMTL's convention; :mod:`libmtl_repmtl.training.deltap` holds the single-task
baselines in the same units (the spec prints mIoU 53.50 = fraction 0.5350).

Definitions:

* **mIoU**: a ``C x C`` confusion matrix over all non-ignored pixels (label ``!= -1``) of the epoch;
  ``IoU_c = TP_c / (TP_c + FP_c + FN_c)`` for the classes present in the union (label or prediction); mIoU is
  their mean. **pixAcc** = correct / non-ignored pixels of the epoch.
* **abs_err** / **rel_err**: ``|pred - gt|`` and ``|pred - gt| / |gt|`` averaged over the valid pixels
  (``gt != 0``) of the *whole epoch* (pixel-weighted; LibMTL's example metric instead averages per-batch
  means weighted by batch size, which differs slightly when batches hold different numbers of valid pixels).
* **normal angles**: ``acos(<pred/|pred|, gt/|gt|>)`` in degrees on the valid pixels (``|gt| != 0``) of the
  epoch; mean, exact median (NumPy's: the average of the two middle values for an even count) and the
  fraction of pixels with angle ``< 11.25 / 22.5 / 30`` degrees. The angles are kept (float32, on the CPU)
  until :meth:`NormalMetric.score_fun`: ~290 MB for the full NYUv2 test split (654 x 288 x 384 pixels).

Predictions whose spatial size differs from the label's are bilinearly resized (``align_corners=True``)
before scoring. Metric updates run under ``torch.no_grad()``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from libmtl_repmtl.libmtl.bases import AbsMetric
from libmtl_repmtl.tasks._common import check_batch, dense_target, match_size

#: Angle thresholds (degrees) of the normal metric, in score order.
NORMAL_THRESHOLDS: tuple[float, float, float] = (11.25, 22.5, 30.0)


class SegMetric(AbsMetric):
    """Semantic segmentation: ``[mIoU, pixAcc]`` (fractions), from an epoch-wide confusion matrix.

    Args:
        num_classes: number of classes ``C`` (13 NYUv2, 7 Cityscapes).

    ``update_fun(pred, gt)``: ``pred`` float ``(B, C, h, w)`` logits (or scores); ``gt`` long ``(B, H, W)`` in
    ``{-1} ∪ [0, C-1]`` (``-1`` ignored).

    Attributes:
        confusion: int64 ``(C, C)`` tensor, ``confusion[true, predicted]`` pixel counts of the epoch so far.
    """

    #: Epoch sums, added over the ranks of a torchrun job (``training.collectives.reduce_metric``).
    ddp_sum_attrs: tuple[str, ...] = ("confusion",)

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)

    @torch.no_grad()
    def update_fun(self, pred: Tensor, gt: Tensor) -> None:
        check_batch(pred, gt, "segmentation metric")
        if gt.dim() == 4 and gt.shape[1] == 1:
            gt = gt[:, 0]
        if gt.dim() != 3:
            raise ValueError(f"segmentation metric: expected labels of shape (B, H, W), got {tuple(gt.shape)}")
        pred = match_size(pred.detach(), tuple(gt.shape[-2:]))
        if pred.shape[1] != self.num_classes:
            raise ValueError(f"segmentation metric: prediction has {pred.shape[1]} channels, expected "
                             f"{self.num_classes} classes")
        label = pred.argmax(dim=1).reshape(-1)
        gt = gt.reshape(-1).long().to(label.device)
        keep = (gt >= 0) & (gt < self.num_classes)
        idx = gt[keep] * self.num_classes + label[keep]
        counts = torch.bincount(idx, minlength=self.num_classes ** 2)
        self.confusion += counts.reshape(self.num_classes, self.num_classes).cpu()
        self.bs.append(int(pred.shape[0]))

    def score_fun(self) -> list[float]:
        conf = self.confusion.to(torch.float64)
        tp = conf.diag()
        union = conf.sum(0) + conf.sum(1) - tp
        total = conf.sum()
        if float(total) == 0.0:
            return [math.nan, math.nan]
        present = union > 0
        miou = float((tp[present] / union[present]).mean())
        return [miou, float(tp.sum() / total)]

    def reinit(self) -> None:
        super().reinit()
        self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)


class DepthMetric(AbsMetric):
    """Depth: ``[abs_err, rel_err]`` over the valid pixels (``gt != 0``) of the epoch, pixel-weighted.

    ``abs_err`` is in the dataset's depth units (metres for NYUv2); ``rel_err = |pred - gt| / |gt|`` is a ratio
    (not percent; Cityscapes' published 43.53 is this ratio on its inverse-depth targets).

    ``update_fun(pred, gt)``: ``pred`` float ``(B, 1, h, w)``; ``gt`` float ``(B, 1, H, W)`` or ``(B, H, W)``.
    """

    #: Epoch sums, added over the ranks of a torchrun job (``training.collectives.reduce_metric``).
    ddp_sum_attrs: tuple[str, ...] = ("abs_sum", "rel_sum", "count")

    def __init__(self) -> None:
        super().__init__()
        self.abs_sum = 0.0
        self.rel_sum = 0.0
        self.count = 0

    @torch.no_grad()
    def update_fun(self, pred: Tensor, gt: Tensor) -> None:
        check_batch(pred, gt, "depth metric")
        gt = dense_target(gt, 1, "depth metric")
        pred = match_size(pred.detach(), tuple(gt.shape[-2:]))
        valid = gt != 0
        g = gt[valid].double()
        err = (pred.to(gt.device)[valid].double() - g).abs()
        self.abs_sum += float(err.sum())
        self.rel_sum += float((err / g.abs()).sum())
        self.count += int(valid.sum())
        self.bs.append(int(pred.shape[0]))

    def score_fun(self) -> list[float]:
        if self.count == 0:
            return [math.nan, math.nan]
        return [self.abs_sum / self.count, self.rel_sum / self.count]

    def reinit(self) -> None:
        super().reinit()
        self.abs_sum, self.rel_sum, self.count = 0.0, 0.0, 0


class NormalMetric(AbsMetric):
    """Surface normals: ``[mean, median, <11.25, <22.5, <30]``: angle errors in degrees (mean, exact median)
    and the fractions of valid pixels below each threshold, over the valid pixels (``|gt| != 0``) of the epoch.

    ``update_fun(pred, gt)``: ``pred`` float ``(B, 3, h, w)`` (normalised here); ``gt`` float ``(B, 3, H, W)``.

    Memory: every valid pixel's angle is kept as float32 on the CPU until :meth:`score_fun` (4 bytes per
    pixel; ~290 MB for NYUv2's 654 test images at 288 x 384); :meth:`score_fun` needs one more copy of that
    size (the concatenation, partitioned in place for the median).
    """

    def __init__(self) -> None:
        super().__init__()
        self.angles: list[np.ndarray] = []

    @torch.no_grad()
    def update_fun(self, pred: Tensor, gt: Tensor) -> None:
        check_batch(pred, gt, "normal metric")
        gt = dense_target(gt, 3, "normal metric")
        pred = match_size(pred.detach(), tuple(gt.shape[-2:])).to(gt.device)
        if pred.shape[1] != 3:
            raise ValueError(f"normal metric: expected predictions of shape (B, 3, H, W), got {tuple(pred.shape)}")
        valid = gt.norm(p=2, dim=1) != 0  # (B, H, W)
        cos = (F.normalize(pred.double(), p=2, dim=1) * F.normalize(gt.double(), p=2, dim=1)).sum(dim=1)
        ang = torch.rad2deg(torch.acos(cos[valid].clamp(-1.0, 1.0)))
        self.angles.append(ang.float().cpu().numpy())
        self.bs.append(int(pred.shape[0]))

    def score_fun(self) -> list[float]:
        a = np.concatenate(self.angles) if self.angles else np.zeros(0, np.float32)
        if a.size == 0:
            return [math.nan] * (2 + len(NORMAL_THRESHOLDS))
        within = [float(np.count_nonzero(a < t)) / a.size for t in NORMAL_THRESHOLDS]
        mean = float(a.mean(dtype=np.float64))
        if len(self.angles) == 1:
            a = a.copy()  # keep the stored angles intact (score_fun may be called again)
        median = float(np.median(a, overwrite_input=True))  # partitions the concatenated copy in place
        return [mean, median, *within]

    def reinit(self) -> None:
        super().reinit()
        self.angles = []


class AccMetric(AbsMetric):
    """Classification accuracy ``[correct / total]`` (fraction) over the epoch.

    ``update_fun(pred, gt)``: ``pred`` float ``(B, K)`` logits; ``gt`` long ``(B,)``.
    """

    #: Epoch sums, added over the ranks of a torchrun job (``training.collectives.reduce_metric``).
    ddp_sum_attrs: tuple[str, ...] = ("correct", "total")

    def __init__(self) -> None:
        super().__init__()
        self.correct = 0
        self.total = 0

    @torch.no_grad()
    def update_fun(self, pred: Tensor, gt: Tensor) -> None:
        check_batch(pred, gt, "accuracy")
        if pred.dim() != 2 or gt.dim() != 1:
            raise ValueError(f"accuracy: expected pred (B, K) and gt (B,), got {tuple(pred.shape)} and "
                             f"{tuple(gt.shape)}")
        self.correct += int((pred.detach().argmax(dim=1) == gt.to(pred.device).long()).sum())
        self.total += int(gt.shape[0])
        self.bs.append(int(gt.shape[0]))

    def score_fun(self) -> list[float]:
        return [self.correct / self.total if self.total else math.nan]

    def reinit(self) -> None:
        super().reinit()
        self.correct, self.total = 0, 0


__all__ = ["AccMetric", "DepthMetric", "NORMAL_THRESHOLDS", "NormalMetric", "SegMetric"]
