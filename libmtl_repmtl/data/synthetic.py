"""Small synthetic datasets in exactly the benchmarks' on-disk layouts (for tests and smoke runs on a CPU).

The real datasets cannot be downloaded on the project's machines; this writes stand-ins that the real
readers (:mod:`libmtl_repmtl.data.dense`, :mod:`libmtl_repmtl.data.office`) read unchanged::

    python -m libmtl_repmtl.data.synthetic nyuv2 OUT [--size 8] [--test-size 4] [--height 32 --width 48] [--seed 0]
    python -m libmtl_repmtl.data.synthetic cityscapes OUT [--label-dir label_7]
    python -m libmtl_repmtl.data.synthetic office-31 OUT [--size 8] [--test-size 4] [--classes 4]
    python -m libmtl_repmtl.data.synthetic office-home OUT

or from Python: ``generate("nyuv2", out, size=8)`` (returns ``Path(out)``).

Dense kinds (``ROOT/{train,val}/{image,label,depth[,normal]}/{i}.npy``; ``size`` train and ``test_size``
val items, default 8 / 4, at ``height x width``, default 32 x 48 for NYUv2 and 32 x 64 for Cityscapes):
each scene is a coarse grid of blocks, each block a class; the image colour of a pixel is its class's
colour, darkened with depth, plus a little noise; depth is a per-class level plus a vertical ramp; normals
are per-class unit vectors. About 5 % of the pixels are label ``-1``; about 3 % have depth ``0`` and, for
NYUv2, normal ``0`` (invalid). Arrays: image float32 H x W x 3 in [0, 1], label float32 H x W (integral, as in
the MTAN distributions), depth float32 H x W x 1, normal float32 H x W x 3.

Office kinds: per domain and split, the first lines of the shipped LibMTL split lists for the first
``classes`` labels (round-robin over those classes, ``size`` train and ``test_size`` val and test images), so
the relative paths are the real ones; each is written as a small JPEG (``image_side`` pixels square) whose
colour and stripe frequency depend on the label (plus a domain tint and noise). The matching split lists
(``<domain>_<split>.txt``, restricted to the written images) go to ``OUT`` itself, where the reader looks
first (``OfficeDataset(OUT, dataset, domain, split)``; ``examples/office/main.py --dataset_path OUT``). Train with a
batch size no larger than ``size`` (e.g. ``--bs 4`` for the default 8 images; incomplete training batches are
dropped).

Everything is deterministic given ``seed``.
"""

from __future__ import annotations

import argparse
import colorsys
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from libmtl_repmtl.data.office import OFFICE_DOMAINS, OFFICE_NUM_CLASSES, find_list_file, read_split_list

KINDS: tuple[str, ...] = ("nyuv2", "cityscapes", "office-31", "office-home")
_DENSE = {"nyuv2": {"classes": 13, "size": (32, 48), "normal": True, "depth": (0.5, 5.0)},
          "cityscapes": {"classes": 7, "size": (32, 64), "normal": False, "depth": (0.02, 0.3)}}


def _palette(n: int) -> np.ndarray:
    """``n`` well-separated RGB colours in [0.1, 0.9] (float32, ``(n, 3)``)."""
    cols = [colorsys.hsv_to_rgb(i / n, 0.55 + 0.35 * (i % 2), 0.9 - 0.3 * ((i // 2) % 2)) for i in range(n)]
    return (0.1 + 0.8 * np.asarray(cols, dtype=np.float64)).astype(np.float32)


def _class_normals(n: int, rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=(n, 3))
    v[:, 2] = np.abs(v[:, 2]) + 0.5
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def _dense_item(rng: np.random.Generator, h: int, w: int, classes: int, palette: np.ndarray,
                levels: np.ndarray, normals: np.ndarray | None, depth_range: tuple[float, float]
                ) -> dict[str, np.ndarray]:
    gh, gw = 4, 6
    cells = rng.integers(0, classes, size=(gh, gw))
    rows = np.minimum(np.arange(h) * gh // h, gh - 1)
    cols = np.minimum(np.arange(w) * gw // w, gw - 1)
    label = cells[rows][:, cols].astype(np.int64)
    lo, hi = depth_range
    ramp = (np.arange(h, dtype=np.float32) / max(h - 1, 1))[:, None] * 0.2 * (hi - lo)
    depth = (levels[label] + ramp).astype(np.float32)
    shade = 1.0 - 0.35 * (depth - lo) / (hi - lo)
    image = palette[label] * shade[..., None] + rng.normal(0.0, 0.03, size=(h, w, 3))
    image = np.clip(image, 0.0, 1.0).astype(np.float32)
    ignore = rng.random((h, w)) < 0.05
    invalid = rng.random((h, w)) < 0.03
    depth[invalid] = 0.0
    out = {"image": image, "label": np.where(ignore, -1, label).astype(np.float32), "depth": depth[..., None]}
    if normals is not None:
        normal = normals[label].copy()
        normal[invalid] = 0.0
        out["normal"] = normal.astype(np.float32)
    return out


def _generate_dense(kind: str, out: Path, size: int, test_size: int, height: int | None, width: int | None,
                    seed: int, label_dir: str) -> None:
    cfg = _DENSE[kind]
    h, w = int(height or cfg["size"][0]), int(width or cfg["size"][1])
    if h < 4 or w < 4:
        raise ValueError(f"height and width must be >= 4, got {h} x {w}")
    classes = int(cfg["classes"])
    if kind == "cityscapes" and label_dir not in ("label", "label_7"):
        raise ValueError(f"label_dir must be 'label' or 'label_7', got {label_dir!r}")
    lab_folder = label_dir if kind == "cityscapes" else "label"
    rng = np.random.default_rng(seed)
    palette = _palette(classes)
    lo, hi = cfg["depth"]
    levels = np.linspace(lo, hi * 0.8, classes).astype(np.float32)[rng.permutation(classes)]
    normals = _class_normals(classes, rng) if cfg["normal"] else None
    for split, n in (("train", size), ("val", test_size)):
        folders = {"image": "image", "label": lab_folder, "depth": "depth"}
        if normals is not None:
            folders["normal"] = "normal"
        for f in folders.values():
            (out / split / f).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            item = _dense_item(rng, h, w, classes, palette, levels, normals, (lo, hi))
            for key, folder in folders.items():
                np.save(out / split / folder / f"{i}.npy", item[key], allow_pickle=False)


def _office_image(rng: np.random.Generator, label: int, classes: int, domain_index: int, side: int) -> np.ndarray:
    base = _palette(max(classes, 2))[label]
    tint = np.asarray([0.06, -0.04, 0.02], dtype=np.float32) * (domain_index - 1)
    x = np.arange(side, dtype=np.float32) / side
    freq = 1 + label % 5
    stripes = 0.15 * np.sign(np.sin(2 * np.pi * freq * x))[None, :, None]
    if (label // 5) % 2:
        stripes = stripes.transpose(1, 0, 2)
    img = base[None, None, :] + tint + stripes + rng.normal(0.0, 0.04, size=(side, side, 3))
    return (np.clip(img, 0.0, 1.0) * 255).round().astype(np.uint8)


def _pick(entries: Sequence[tuple[str, int]], classes: int, n: int) -> list[tuple[str, int]]:
    by_class: dict[int, list[tuple[str, int]]] = {c: [] for c in range(classes)}
    for rel, lab in entries:
        if lab < classes:
            by_class[lab].append((rel, lab))
    picked: list[tuple[str, int]] = []
    depth = 0
    while len(picked) < n and any(len(v) > depth for v in by_class.values()):
        for c in range(classes):
            if len(picked) < n and len(by_class[c]) > depth:
                picked.append(by_class[c][depth])
        depth += 1
    return picked


def _generate_office(kind: str, out: Path, size: int, test_size: int, seed: int, classes: int,
                     image_side: int) -> None:
    from PIL import Image


    if not 1 <= classes <= OFFICE_NUM_CLASSES[kind]:
        raise ValueError(f"classes must be in [1, {OFFICE_NUM_CLASSES[kind]}], got {classes}")
    rng = np.random.default_rng(seed)
    for d_idx, domain in enumerate(OFFICE_DOMAINS[kind]):
        for split in ("train", "val", "test"):
            n = size if split == "train" else test_size
            entries = read_split_list(find_list_file(kind, domain, split), OFFICE_NUM_CLASSES[kind])
            picked = _pick(entries, classes, n)
            if len(picked) < n:
                raise ValueError(f"{kind} {domain}/{split}: only {len(picked)} listed images among the first "
                                 f"{classes} classes; lower the size or raise --classes")
            lines = []
            for rel, lab in picked:
                path = out / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(_office_image(rng, lab, classes, d_idx, image_side)).save(path, format="JPEG",
                                                                                          quality=92)
                lines.append(f"{rel} {lab}\n")
            (out / f"{domain}_{split}.txt").write_text("".join(lines), encoding="utf-8")


def generate(kind: str, out: str | os.PathLike[str], *, size: int = 8, test_size: int | None = None,
             height: int | None = None, width: int | None = None, seed: int = 0, label_dir: str = "label_7",
             classes: int = 4, image_side: int = 32) -> Path:
    """Write a small synthetic dataset of ``kind`` (``nyuv2``, ``cityscapes``, ``office-31``, ``office-home``)
    into ``out`` (created if needed) and return ``Path(out)``.

    Args:
        size: training items (dense) / training images per domain (Office).
        test_size: val items (dense) / val and test images per domain (Office); default ``max(1, size // 2)``.
        height, width: dense resolution (default 32 x 48 NYUv2, 32 x 64 Cityscapes).
        seed: random seed (output is deterministic given it).
        label_dir: Cityscapes label folder name, ``label_7`` or ``label``.
        classes: Office: how many of the first classes to draw images from.
        image_side: Office: side of the written JPEGs (the reader resizes to 224).

    Raises:
        ValueError: unknown kind or invalid sizes.
    """
    key = re.sub(r"[^a-z0-9]", "", str(kind).lower())
    k = next((n for n in KINDS if re.sub(r"[^a-z0-9]", "", n) == key), None)
    if k is None:
        raise ValueError(f"unknown kind {kind!r}; expected one of {list(KINDS)}")
    if int(size) < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    ts = max(1, int(size) // 2) if test_size is None else int(test_size)
    if ts < 1:
        raise ValueError(f"test_size must be >= 1, got {test_size}")
    root = Path(os.fspath(out)).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    if k in _DENSE:
        _generate_dense(k, root, int(size), ts, height, width, int(seed), label_dir)
    else:
        _generate_office(k, root, int(size), ts, int(seed), int(classes), int(image_side))
    return root


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m libmtl_repmtl.data.synthetic KIND OUT [options]``."""
    p = argparse.ArgumentParser(prog="python -m libmtl_repmtl.data.synthetic",
                                description="Write a small synthetic dataset in a benchmark's on-disk layout.")
    p.add_argument("kind", choices=KINDS)
    p.add_argument("out", help="output folder (created)")
    p.add_argument("--size", type=int, default=8, help="train items (dense) / train images per domain (Office)")
    p.add_argument("--test-size", "--test_size", dest="test_size", type=int, default=None,
                   help="val/test items (default size // 2)")
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--label-dir", "--label_dir", dest="label_dir", default="label_7", choices=("label", "label_7"),
                   help="Cityscapes label folder name")
    p.add_argument("--classes", type=int, default=4, help="Office: number of classes to draw images from")
    p.add_argument("--image-side", "--image_side", dest="image_side", type=int, default=32,
                   help="Office: side of the JPEGs")
    a = p.parse_args(argv)
    try:
        root = generate(a.kind, a.out, size=a.size, test_size=a.test_size, height=a.height, width=a.width,
                        seed=a.seed, label_dir=a.label_dir, classes=a.classes, image_side=a.image_side)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(root)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
