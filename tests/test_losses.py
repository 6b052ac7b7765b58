"""Golden values of the task losses and LibMTL's loss protocol."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from libmtl_repmtl.tasks.losses import ClsLoss, DepthLoss, NormalLoss, SegLoss


def test_seg_loss_ignores_minus_one():
    # pixel 0: logits (0, 0), label 0 -> CE = log 2; pixel 1: label -1, ignored (its logits would give ~5)
    pred = torch.tensor([[[[0.0, 5.0]], [[0.0, 0.0]]]], requires_grad=True)  # (1, 2, 1, 2)
    gt = torch.tensor([[[0, -1]]])
    loss = SegLoss().compute_loss(pred, gt)
    assert loss.item() == pytest.approx(math.log(2))
    loss.backward()
    assert pred.grad[0, :, 0, 1].abs().sum() == 0  # no gradient from the ignored pixel


def test_seg_loss_all_ignored_is_zero_with_graph():
    pred = torch.randn(2, 3, 2, 2, requires_grad=True)
    loss = SegLoss().compute_loss(pred, torch.full((2, 2, 2), -1))
    assert loss.item() == 0.0
    loss.backward()
    assert pred.grad is not None


def test_depth_loss_valid_pixels():
    # gt [[2, 0], [4, 1]] (0 invalid), pred [[1, 5], [5, 1]]: |errors| on valid pixels 1, 1, 0 -> 2/3
    pred = torch.tensor([[[[1.0, 5.0], [5.0, 1.0]]]])
    gt = torch.tensor([[[[2.0, 0.0], [4.0, 1.0]]]])
    assert float(DepthLoss().compute_loss(pred, gt)) == pytest.approx(2 / 3)
    assert float(DepthLoss().compute_loss(pred, torch.zeros_like(gt))) == 0.0


def test_normal_loss_cosine():
    # pixel 0: pred (0,0,2) vs gt (0,0,1): cos 1; pixel 1: pred (0,1,0) vs gt (1,0,0): cos 0; pixel 2 invalid
    # loss = 1 - (1 + 0) / 2 = 0.5 (predictions are normalised inside)
    pred = torch.tensor([[0.0, 0, 2], [0, 1, 0], [1, 1, 1]]).T.reshape(1, 3, 1, 3)
    gt = torch.tensor([[0.0, 0, 1], [1, 0, 0], [0, 0, 0]]).T.reshape(1, 3, 1, 3)
    assert float(NormalLoss().compute_loss(pred, gt)) == pytest.approx(0.5)


def test_cls_loss():
    assert float(ClsLoss().compute_loss(torch.zeros(4, 2), torch.tensor([0, 1, 1, 0]))) == pytest.approx(math.log(2))


def test_dense_losses_resize_predictions():
    # a low-resolution prediction gives the same loss as the same prediction upsampled by hand
    torch.manual_seed(0)
    pred = torch.randn(2, 1, 4, 6)
    gt = torch.rand(2, 1, 8, 12) + 0.1
    up = F.interpolate(pred, size=(8, 12), mode="bilinear", align_corners=True)
    assert float(DepthLoss().compute_loss(pred, gt)) == pytest.approx(float(DepthLoss().compute_loss(up, gt)))
    seg_pred, seg_gt = torch.randn(2, 5, 4, 6), torch.randint(-1, 5, (2, 8, 12))
    seg_up = F.interpolate(seg_pred, size=(8, 12), mode="bilinear", align_corners=True)
    assert float(SegLoss().compute_loss(seg_pred, seg_gt)) == pytest.approx(float(SegLoss().compute_loss(seg_up,
                                                                                                          seg_gt)))


def test_libmtl_protocol_records_and_averages():
    loss_fn = DepthLoss()
    gt = torch.ones(2, 1, 2, 2)
    loss_fn._update_loss(torch.zeros(2, 1, 2, 2), gt)  # loss 1, batch 2
    loss_fn._update_loss(torch.full((1, 1, 2, 2), 4.0), gt[:1])  # loss 3, batch 1
    assert loss_fn._average_loss() == pytest.approx((1 * 2 + 3 * 1) / 3)
    loss_fn._reinit()
    assert loss_fn.record == [] and loss_fn.bs == []


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match="batch"):
        DepthLoss().compute_loss(torch.zeros(2, 1, 2, 2), torch.ones(3, 1, 2, 2))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        NormalLoss().compute_loss(torch.zeros(1, 3, 2, 2), torch.ones(1, 1, 2, 2))
