"""Golden values of the task metrics (tiny tensors, numbers worked out by hand in the comments)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from libmtl_repmtl.benchmarks import get
from libmtl_repmtl.tasks.metrics import AccMetric, DepthMetric, NormalMetric, SegMetric

#: The spec's task -> metric names (score order) and higher-is-better flags of the paper's benchmarks.
METRIC_NAMES = {
    "nyuv2": {"segmentation": ["mIoU", "pixAcc"], "depth": ["abs_err", "rel_err"],
              "normal": ["mean", "median", "<11.25", "<22.5", "<30"]},
    "cityscapes": {"segmentation": ["mIoU", "pixAcc"], "depth": ["abs_err", "rel_err"]},
    "office-31": {d: ["Acc"] for d in ("amazon", "dslr", "webcam")},
    "office-home": {d: ["Acc"] for d in ("Art", "Clipart", "Product", "Real_World")},
}
HIGHER_BETTER = {
    "nyuv2": {"segmentation": [1, 1], "depth": [0, 0], "normal": [0, 0, 1, 1, 1]},
    "cityscapes": {"segmentation": [1, 1], "depth": [0, 0]},
    "office-31": {d: [1] for d in METRIC_NAMES["office-31"]},
    "office-home": {d: [1] for d in METRIC_NAMES["office-home"]},
}


def task_dict(benchmark):
    """The registered benchmark's LibMTL task dict of all its tasks."""
    return get(benchmark).full_task_dict()


def _logits(labels: torch.Tensor, classes: int) -> torch.Tensor:
    """One-hot 'logits' (B, C, H, W) whose argmax is ``labels`` (B, H, W)."""
    return F.one_hot(labels, classes).permute(0, 3, 1, 2).float()


# gt   = [[0, 0, 1],      pred = [[0, 1, 1],
#         [2, -1, 1]]             [2, 2, 0]]
# non-ignored pixels (5): (0,0) 0->0 ok, (0,1) 0->1, (0,2) 1->1 ok, (1,0) 2->2 ok, (1,2) 1->0
# class 0: TP 1, FP 1 (pixel (1,2)), FN 1 (pixel (0,1)) -> IoU 1/3
# class 1: TP 1, FP 1 (pixel (0,1)), FN 1 (pixel (1,2)) -> IoU 1/3
# class 2: TP 1, FP 0 (the ignored pixel does not count), FN 0 -> IoU 1
# mIoU = (1/3 + 1/3 + 1) / 3 = 5/9; pixAcc = 3/5
GT_SEG = torch.tensor([[[0, 0, 1], [2, -1, 1]]])
PRED_SEG = torch.tensor([[[0, 1, 1], [2, 2, 0]]])


def test_seg_metric_golden():
    m = SegMetric(3)
    m.update_fun(_logits(PRED_SEG, 3), GT_SEG)
    miou, acc = m.score_fun()
    assert miou == pytest.approx(5 / 9)
    assert acc == pytest.approx(3 / 5)


def test_seg_metric_absent_class_excluded_and_batching_invariant():
    # A 4th class that appears in neither label nor prediction has no union: it is left out (still 5/9).
    m = SegMetric(4)
    m.update_fun(_logits(PRED_SEG, 4), GT_SEG)
    assert m.score_fun() == pytest.approx([5 / 9, 3 / 5])
    # Same pixels split over two updates (row by row): the confusion matrix, hence the score, is identical.
    m2 = SegMetric(4)
    m2.update_fun(_logits(PRED_SEG[:, :1], 4), GT_SEG[:, :1])
    m2.update_fun(_logits(PRED_SEG[:, 1:], 4), GT_SEG[:, 1:])
    assert m2.score_fun() == pytest.approx([5 / 9, 3 / 5])
    m2.reinit()
    assert all(math.isnan(v) for v in m2.score_fun())
    assert m2.bs == [] and m2.record == []


def test_seg_metric_resizes_low_resolution_predictions():
    # A constant class-1 prediction at 1 x 2 is upsampled to the 2 x 3 labels: every pixel predicts 1.
    gt = torch.tensor([[[1, 1, 0], [1, -1, 1]]])
    pred = torch.zeros(1, 2, 1, 2)
    pred[:, 1] = 5.0
    m = SegMetric(2)
    m.update_fun(pred, gt)
    # class 1: TP 4, FP 1 (the true-0 pixel), FN 0 -> 4/5; class 0: TP 0, FN 1 -> 0; mIoU 0.4; pixAcc 4/5
    assert m.score_fun() == pytest.approx([0.4, 0.8])


def test_depth_metric_golden_pixel_weighted():
    # gt = [[2, 0], [4, 1]] (0 invalid), pred = [[1, 5], [5, 1]]
    # valid errors |p-g|: 1, 1, 0 -> sum 2; relative: 1/2, 1/4, 0 -> sum 0.75; 3 pixels
    m = DepthMetric()
    m.update_fun(torch.tensor([[[[1.0, 5.0], [5.0, 1.0]]]]), torch.tensor([[[[2.0, 0.0], [4.0, 1.0]]]]))
    assert m.score_fun() == pytest.approx([2 / 3, 0.25])
    # second batch, one pixel: gt 1, pred 3 -> error 2, relative 2.
    # Epoch (pixel-weighted over 4 pixels): abs (2 + 2) / 4 = 1.0, rel (0.75 + 2) / 4 = 0.6875
    m.update_fun(torch.tensor([[[[3.0]]]]), torch.tensor([[[1.0]]]))  # (B, H, W) target accepted
    assert m.score_fun() == pytest.approx([1.0, 0.6875])


def _unit(deg: float) -> list[float]:
    r = math.radians(deg)
    return [math.cos(r), math.sin(r), 0.0]


def test_normal_metric_golden():
    # 5 pixels in a row; gt (1,0,0) except the first (0,0,1) and the last (0,0,0) = invalid.
    # angles: pixel 0 pred (0,0,3) vs (0,0,1) -> 0; pixel 1 -> 20; pixel 2 -> 25; pixel 3 pred (0,1,0) -> 90;
    # pixel 4 invalid. mean = 135 / 4 = 33.75; median of [0, 20, 25, 90] = (20 + 25) / 2 = 22.5
    # < 11.25: 1/4; < 22.5: 2/4; < 30: 3/4
    gt = torch.tensor([[0, 0, 1], [1, 0, 0], [1, 0, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.float32)
    pred = torch.tensor([[0, 0, 3], _unit(20), [2 * v for v in _unit(25)], [0, 1, 0], [1, 2, 3]],
                        dtype=torch.float32)
    to_map = lambda t: t.T.reshape(1, 3, 1, 5)  # noqa: E731
    m = NormalMetric()
    m.update_fun(to_map(pred), to_map(gt))
    mean, median, a, b, c = m.score_fun()
    assert mean == pytest.approx(33.75, abs=1e-4)
    assert median == pytest.approx(22.5, abs=1e-4)
    assert [a, b, c] == pytest.approx([0.25, 0.5, 0.75])


def test_normal_metric_median_exact_across_batches():
    # odd count over two batches: angles [0, 90] then [20] -> median 20 (not a per-batch average)
    gt = torch.tensor([[1.0, 0, 0]]).T.reshape(1, 3, 1, 1)
    m = NormalMetric()
    m.update_fun(torch.cat([gt, torch.tensor([[0.0, 1, 0]]).T.reshape(1, 3, 1, 1)]), torch.cat([gt, gt]))
    m.update_fun(torch.tensor([_unit(20)]).T.reshape(1, 3, 1, 1), gt)
    assert m.score_fun()[1] == pytest.approx(20.0, abs=1e-4)
    assert m.score_fun()[0] == pytest.approx(110 / 3, abs=1e-4)


def test_accuracy_golden():
    # argmax per row: 1, 0, 2, 0 vs labels 1, 1, 2, 2 -> 2 / 4
    pred = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.0, 0.0, 1.0], [0.5, 0.2, 0.3]])
    m = AccMetric()
    m.update_fun(pred, torch.tensor([1, 1, 2, 2]))
    assert m.score_fun() == [0.5]
    m.update_fun(pred[:1], torch.tensor([1]))  # 3 / 5 over the epoch
    assert m.score_fun() == [pytest.approx(0.6)]


@pytest.mark.parametrize("bench", ["nyuv2", "cityscapes", "office-31", "office-home"])
def test_task_dicts(bench):
    td = task_dict(bench)
    assert list(td) == list(METRIC_NAMES[bench])
    for t, d in td.items():
        assert set(d) == {"metrics", "metrics_fn", "loss_fn", "weight"}
        assert d["metrics"] == METRIC_NAMES[bench][t]
        assert d["weight"] == HIGHER_BETTER[bench][t]
        assert len(d["weight"]) == len(d["metrics"])
    assert td is not task_dict(bench)  # fresh objects every call
    assert task_dict(bench)[next(iter(td))]["metrics_fn"] is not td[next(iter(td))]["metrics_fn"]


def test_task_dict_names_and_units():
    td = task_dict("NYUv2")
    assert td["normal"]["weight"] == [0, 0, 1, 1, 1] and td["depth"]["weight"] == [0, 0]
    assert task_dict("Office_Home").keys() == {"Art", "Clipart", "Product", "Real_World"}
    with pytest.raises(ValueError, match="unknown benchmark"):
        task_dict("imagenet")
    # fraction units: a perfect segmentation scores 1.0, not 100
    seg = td["segmentation"]["metrics_fn"]
    seg.update_fun(_logits(PRED_SEG.clamp(min=0), 13), PRED_SEG)
    assert seg.score_fun() == [1.0, 1.0]


def test_metrics_match_brute_force_and_ignore_batching():
    """Random data: the metrics equal plain NumPy formulas over all pixels, whatever the batching."""
    import numpy as np

    g = torch.Generator().manual_seed(0)
    seg_pred, seg_gt = torch.randn(6, 5, 4, 7, generator=g), torch.randint(-1, 5, (6, 4, 7), generator=g)
    d_pred, d_gt = torch.rand(6, 1, 4, 7, generator=g), torch.rand(6, 1, 4, 7, generator=g) + 0.1
    d_gt[d_gt < 0.3] = 0.0
    n_pred, n_gt = torch.randn(6, 3, 4, 7, generator=g), torch.randn(6, 3, 4, 7, generator=g)
    n_gt[:, :, 0, 0] = 0.0

    lab, gt = seg_pred.argmax(1).numpy().ravel(), seg_gt.numpy().ravel()
    keep = gt >= 0
    ious = []
    for c in range(5):
        tp = np.sum((lab == c) & (gt == c) & keep)
        union = np.sum(((lab == c) | (gt == c)) & keep)
        if union:
            ious.append(tp / union)
    want_seg = [np.mean(ious), np.mean(lab[keep] == gt[keep])]
    dp, dg = d_pred.numpy().ravel(), d_gt.numpy().ravel()
    v = dg != 0
    want_depth = [np.mean(np.abs(dp[v] - dg[v])), np.mean(np.abs(dp[v] - dg[v]) / dg[v])]
    a = n_pred.permute(0, 2, 3, 1).reshape(-1, 3).double().numpy()
    b = n_gt.permute(0, 2, 3, 1).reshape(-1, 3).double().numpy()
    v = np.linalg.norm(b, axis=1) != 0
    cos = np.sum(a[v] * b[v], 1) / np.linalg.norm(a[v], axis=1) / np.linalg.norm(b[v], axis=1)
    ang = np.degrees(np.arccos(np.clip(cos, -1, 1)))
    want_normal = [ang.mean(), np.median(ang), *(np.mean(ang < t) for t in (11.25, 22.5, 30))]

    for splits in ([6], [1, 5], [2, 2, 2]):
        ms = SegMetric(5), DepthMetric(), NormalMetric()
        start = 0
        for n in splits:
            sl = slice(start, start + n)
            ms[0].update_fun(seg_pred[sl], seg_gt[sl])
            ms[1].update_fun(d_pred[sl], d_gt[sl])
            ms[2].update_fun(n_pred[sl], n_gt[sl])
            start += n
        assert ms[0].score_fun() == pytest.approx(want_seg)
        assert ms[1].score_fun() == pytest.approx(want_depth)
        assert ms[2].score_fun() == pytest.approx(want_normal, abs=1e-4)
