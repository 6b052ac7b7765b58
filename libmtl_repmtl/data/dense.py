"""Readers of the dense benchmarks' preprocessed ``.npy`` layouts (NYUv2, Cityscapes) and NYUv2 augmentation.

Layout (as distributed for MTAN / LibMTL)::

    ROOT/train/image/{i}.npy   H x W x 3 float              (i = 0 .. N-1, N counted from image/)
    ROOT/train/label/{i}.npy   H x W      (int or integral float; -1 = ignore)
    ROOT/train/depth/{i}.npy   H x W x 1 float (0 = invalid; H x W accepted too)
    ROOT/train/normal/{i}.npy  H x W x 3 float (0 = invalid)                      [NYUv2 only]
    ROOT/val/...               the test split ('test' and 'val' both read val/)

Cityscapes' label folder is ``label_7/`` in some distributions and ``label/`` in others; both are accepted
(``label_7/`` wins when both exist, since ``label/`` may then hold another class set).

Items are ``(image, targets)``, the format of LibMTL's single-input trainer:

* ``image``: float32 ``(3, H, W)``
* ``targets['segmentation']``: int64 ``(H, W)`` in ``{-1} ∪ [0, C-1]``
* ``targets['depth']``: float32 ``(1, H, W)``
* ``targets['normal']``: float32 ``(3, H, W)`` (NYUv2)

Validation: the constructor checks that the split folder exists, is non-empty, that ``image/`` holds exactly
``0.npy .. N-1.npy`` and that every other task folder has the same files (directory listings only; no file
is opened). Each item is validated when loaded: readable ``.npy`` (``allow_pickle=False``), dtype, shape,
matching spatial sizes, finite values, label range. Every error names the file and says how to fix it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

#: Default zoom factors of the NYUv2 random scale-crop.
DEFAULT_SCALES: tuple[float, ...] = (1.0, 1.2, 1.5)


class DatasetFormatError(ValueError):
    """A dataset file or folder does not match the expected layout (the message names it and the fix)."""


# ---------------------------------------------------------------------------------------------- augmentation
class RandomScaleCrop:
    """Random scale-crop and horizontal flip for dense multi-task samples (MTAN-style NYUv2 augmentation).

    With probability 1 a zoom factor ``s`` is drawn uniformly from ``scales``; a random ``(H/s) x (W/s)`` window
    is cropped and resized back to ``H x W`` (the image bilinearly with ``align_corners=True``, the targets
    with nearest-neighbour sampling so that labels stay integral and invalid pixels stay invalid). Zooming in
    by ``s`` brings the scene ``s`` times closer, so **depth is divided by** ``s`` (invalid ``0`` stays ``0``).
    Then, with probability ``flip_p``, everything is flipped left-right and the **normals' x component is
    negated** (zeros stay zeros).

    Call: ``aug(image, targets) -> (image, targets)`` with ``image`` float ``(3, H, W)`` and ``targets`` a dict
    ``task -> tensor``: ``segmentation`` ``(H, W)`` (long), ``depth`` ``(1, H, W)``, ``normal`` ``(3, H, W)``;
    other keys are treated like segmentation maps if 2-D and like depth-free dense maps otherwise. Shapes and
    dtypes are preserved.

    Args:
        scales: zoom factors (each >= 1).
        flip_p: probability of the horizontal flip.
        generator: optional ``torch.Generator`` for reproducible draws (default: torch's global RNG, which
            DataLoader workers seed per worker; a shared generator would be copied into every worker and
            repeat the same draws there, so leave it ``None`` when loading with ``num_workers > 0``).
    """

    def __init__(self, scales: Sequence[float] = DEFAULT_SCALES, flip_p: float = 0.5,
                 generator: torch.Generator | None = None) -> None:
        self.scales = tuple(float(s) for s in scales)
        if not self.scales or any(s < 1.0 for s in self.scales):
            raise ValueError(f"scales must be a non-empty sequence of factors >= 1, got {scales!r}")
        if not 0.0 <= float(flip_p) <= 1.0:
            raise ValueError(f"flip_p must be in [0, 1], got {flip_p}")
        self.flip_p = float(flip_p)
        self.generator = generator

    def _randint(self, high: int) -> int:
        return int(torch.randint(0, max(int(high), 1), (1,), generator=self.generator))

    def __call__(self, image: Tensor, targets: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        _, h, w = image.shape
        s = self.scales[self._randint(len(self.scales))]
        ch, cw = max(1, int(h / s)), max(1, int(w / s))
        i, j = self._randint(h - ch + 1), self._randint(w - cw + 1)
        out_img = image[:, i:i + ch, j:j + cw]
        if (ch, cw) != (h, w):
            out_img = F.interpolate(out_img[None].float(), size=(h, w), mode="bilinear", align_corners=True)[0]
        out: dict[str, Tensor] = {}
        for task, t in targets.items():
            crop = t[..., i:i + ch, j:j + cw]
            if (ch, cw) != (h, w):
                x = crop[None, None] if crop.dim() == 2 else crop[None]
                x = F.interpolate(x.float(), size=(h, w), mode="nearest")[0]
                crop = (x[0] if t.dim() == 2 else x).to(t.dtype)
            if task == "depth" and s != 1.0:
                crop = crop / s
            out[task] = crop
        if self.flip_p > 0 and float(torch.rand((), generator=self.generator)) < self.flip_p:
            out_img = out_img.flip(-1)
            for task, t in out.items():
                t = t.flip(-1)
                if task == "normal":
                    t = t.clone()
                    t[0] = -t[0]
                out[task] = t
        return out_img.contiguous(), {k: v.contiguous() for k, v in out.items()}


# ---------------------------------------------------------------------------------------------- readers
def load_npy(path: Path) -> np.ndarray:
    """``np.load(path, allow_pickle=False)``, raising :class:`DatasetFormatError` naming the file when it is
    missing, corrupt, truncated or not a plain array."""
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DatasetFormatError(f"{path}: file not found; every index in image/ needs a file in each task "
                                 "folder (re-create or re-download the split)") from None
    except (ValueError, OSError, EOFError) as exc:
        raise DatasetFormatError(f"{path}: cannot read the .npy file ({exc}); it is corrupt or truncated "
                                 "(re-create or re-download it)") from None
    if not isinstance(arr, np.ndarray):
        raise DatasetFormatError(f"{path}: expected a single .npy array, got {type(arr).__name__} (an .npz?)")
    return arr


def _check_float(arr: np.ndarray, path: Path, what: str) -> None:
    if arr.dtype.kind != "f":
        raise DatasetFormatError(f"{path}: {what} has dtype {arr.dtype}; expected a float array (e.g. float32); "
                                 "convert it with arr.astype(np.float32) (images scaled to [0, 1])")
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise DatasetFormatError(f"{path}: {what} contains {bad} NaN/Inf value(s); fix the preprocessing (use 0 "
                                 "for invalid depth/normal pixels)")


def _as_hwc(arr: np.ndarray, path: Path, what: str, channels: int, size: tuple[int, int] | None) -> np.ndarray:
    if channels == 1 and arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] != channels:
        want = "H x W x 1 (or H x W)" if channels == 1 else f"H x W x {channels}"
        raise DatasetFormatError(f"{path}: {what} has shape {arr.shape}; expected {want}")
    if size is not None and tuple(arr.shape[:2]) != tuple(size):
        raise DatasetFormatError(f"{path}: {what} is {arr.shape[0]} x {arr.shape[1]} but the image is "
                                 f"{size[0]} x {size[1]}; all arrays of an item must have the same H x W")
    return arr


def _check_label(arr: np.ndarray, path: Path, num_classes: int, size: tuple[int, int]) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim != 2:
        raise DatasetFormatError(f"{path}: label has shape {arr.shape}; expected H x W")
    if tuple(arr.shape) != tuple(size):
        raise DatasetFormatError(f"{path}: label is {arr.shape[0]} x {arr.shape[1]} but the image is "
                                 f"{size[0]} x {size[1]}; all arrays of an item must have the same H x W")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise DatasetFormatError(f"{path}: label contains NaN/Inf; use -1 for ignored pixels")
        if not np.array_equal(arr, np.round(arr)):
            raise DatasetFormatError(f"{path}: label has non-integer values; expected class ids in "
                                     f"[0, {num_classes - 1}] or -1")
    elif arr.dtype.kind not in "iu":
        raise DatasetFormatError(f"{path}: label has dtype {arr.dtype}; expected integer (or integral float) "
                                 "class ids")
    lab = arr.astype(np.int64)
    bad = lab[((lab < 0) & (lab != -1)) | (lab >= num_classes)]
    if bad.size:
        found = ", ".join(str(v) for v in np.unique(bad)[:5])
        raise DatasetFormatError(f"{path}: label values out of range [-1, {num_classes - 1}]: found {found} "
                                 f"(use -1 for ignored pixels and {num_classes} classes 0..{num_classes - 1})")
    return lab


def _indices(folder: Path) -> list[int]:
    idx = []
    for name in os.listdir(folder):
        m = re.fullmatch(r"(\d+)\.npy", name)
        if m:
            idx.append(int(m.group(1)))
    return sorted(idx)


class DenseNpyDataset(Dataset):
    """Base reader of a ``ROOT/{train,val}/{image,<task folders>}/{i}.npy`` layout (see the module docstring).

    Subclasses set :attr:`TASKS` (task -> number of output channels / classes) and :attr:`TASK_DIRS`
    (task -> candidate folder names, first existing wins).

    Args:
        root: dataset root (holding ``train/`` and ``val/``).
        split: ``'train'``, or ``'test'`` / ``'val'`` (both read ``val/``, the test split).
        augment: apply ``augmenter`` (training only, by convention).
        augmenter: the augmentation (default :class:`RandomScaleCrop` with scales 1 / 1.2 / 1.5).

    Keyword aliases (LibMTL example style): ``mode`` for ``split``, ``aug`` for ``augment``.
    """

    #: task -> number of output channels of its head (classes for segmentation).
    TASKS: dict[str, int] = {}
    #: task -> candidate folder names inside the split folder.
    TASK_DIRS: dict[str, tuple[str, ...]] = {}
    #: display name used in messages.
    NAME: str = "dense"

    def __init__(self, root: str | os.PathLike[str], split: str = "train", augment: bool = False, *,
                 mode: str | None = None, aug: bool | None = None,
                 augmenter: RandomScaleCrop | None = None) -> None:
        split = mode if mode is not None else split
        augment = bool(aug) if aug is not None else bool(augment)
        if split not in ("train", "test", "val"):
            raise ValueError(f"{self.NAME}: split must be 'train', 'test' or 'val', got {split!r}")
        self.root = Path(os.fspath(root)).expanduser()
        self.split = split
        self.folder = self.root / ("train" if split == "train" else "val")
        self.augment = augment
        self.augmenter = augmenter if augmenter is not None else RandomScaleCrop()
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.NAME}: dataset root {self.root} is not a folder; pass the folder "
                                    "holding train/ and val/ (or generate small data with "
                                    f"'python -m libmtl_repmtl.data.synthetic {self.NAME.lower()} OUT')")
        if not self.folder.is_dir():
            raise FileNotFoundError(f"{self.NAME}: split folder {self.folder} is missing; expected "
                                    f"{self.root}/{{train,val}}/{{image,...}}/{{i}}.npy ('test' reads val/)")
        image_dir = self.folder / "image"
        if not image_dir.is_dir():
            raise FileNotFoundError(f"{self.NAME}: {image_dir} is missing; expected image/{{i}}.npy files")
        idx = _indices(image_dir)
        if not idx:
            raise DatasetFormatError(f"{self.NAME}: {image_dir} holds no {{i}}.npy files: the '{split}' split is "
                                     "empty")
        if idx != list(range(len(idx))):
            missing = sorted(set(range(idx[-1] + 1)) - set(idx))[:5]
            raise DatasetFormatError(f"{self.NAME}: {image_dir}: files must be 0.npy .. N-1.npy without gaps; "
                                     f"missing {', '.join(f'{m}.npy' for m in missing)}")
        self.n = len(idx)
        self.task_dirs: dict[str, Path] = {}
        for task, candidates in self.TASK_DIRS.items():
            found = next((self.folder / c for c in candidates if (self.folder / c).is_dir()), None)
            if found is None:
                raise FileNotFoundError(f"{self.NAME}: no folder for task {task!r} in {self.folder}; expected "
                                        + " or ".join(f"{c}/" for c in candidates))
            have = set(os.listdir(found))
            missing = [f"{i}.npy" for i in range(self.n) if f"{i}.npy" not in have]
            if missing:
                raise DatasetFormatError(f"{self.NAME}: {found} lacks {len(missing)} of the {self.n} files in "
                                         f"image/ (e.g. {found / missing[0]}); every image needs its {task} target")
            self.task_dirs[task] = found

    @property
    def num_out_channels(self) -> dict[str, int]:
        """Task -> output channels of its head (13 / 7 classes for segmentation, 1 for depth, 3 for normal)."""
        return dict(self.TASKS)

    @property
    def tasks(self) -> list[str]:
        """Task names, in order."""
        return list(self.TASKS)

    def __len__(self) -> int:
        return self.n

    def load(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Item ``index`` without augmentation (validated; see the module docstring for shapes)."""
        if not 0 <= index < self.n:
            raise IndexError(f"{self.NAME}: index {index} out of range for {self.n} items")
        path = self.folder / "image" / f"{index}.npy"
        img = load_npy(path)
        if img.ndim != 3 or img.shape[2] != 3:
            raise DatasetFormatError(f"{path}: image has shape {img.shape}; expected H x W x 3")
        _check_float(img, path, "image")
        size = (int(img.shape[0]), int(img.shape[1]))
        targets: dict[str, Tensor] = {}
        for task, folder in self.task_dirs.items():
            p = folder / f"{index}.npy"
            arr = load_npy(p)
            if task == "segmentation":
                targets[task] = torch.from_numpy(_check_label(arr, p, self.TASKS[task], size))
            else:
                ch = self.TASKS[task]
                _check_float(arr, p, task)
                arr = _as_hwc(arr, p, task, ch, size)
                targets[task] = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32))
        image = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32))
        return image, targets

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        image, targets = self.load(int(index))
        if self.augment:
            image, targets = self.augmenter(image, targets)
        return image, targets


class NYUv2Dataset(DenseNpyDataset):
    """NYUv2 (795 train / 654 test at 288 x 384): tasks ``segmentation`` (13 classes), ``depth``, ``normal``.

    ``NYUv2Dataset(root, split='train'|'test'|'val', augment=False)``; items ``(image (3,H,W) float32,
    {'segmentation': (H,W) int64, 'depth': (1,H,W) float32, 'normal': (3,H,W) float32})``. ``augment=True``
    applies :class:`RandomScaleCrop` (scales 1 / 1.2 / 1.5, depth divided by the scale, flip negating normal x).
    """

    TASKS = {"segmentation": 13, "depth": 1, "normal": 3}
    TASK_DIRS = {"segmentation": ("label",), "depth": ("depth",), "normal": ("normal",)}
    NAME = "NYUv2"


class CityscapesDataset(DenseNpyDataset):
    """Cityscapes (2975 train / 500 test at 128 x 256): tasks ``segmentation`` (7 classes) and ``depth``.

    Labels from ``label_7/`` or ``label/`` (``label_7/`` preferred when both exist).
    ``CityscapesDataset(root, split='train'|'test'|'val', augment=False)``; items ``(image (3,H,W) float32,
    {'segmentation': (H,W) int64, 'depth': (1,H,W) float32})``.
    """

    TASKS = {"segmentation": 7, "depth": 1}
    TASK_DIRS = {"segmentation": ("label_7", "label"), "depth": ("depth",)}
    NAME = "Cityscapes"


__all__ = ["CityscapesDataset", "DEFAULT_SCALES", "DatasetFormatError", "DenseNpyDataset", "NYUv2Dataset",
           "RandomScaleCrop", "load_npy"]
