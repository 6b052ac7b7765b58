"""Parts shared by the dense benchmarks (NYUv2, Cityscapes): the prediction post-processing, the loaders of
the ``.npy`` layouts and the paper's dense setup. Each benchmark's facts stay in its own module."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from libmtl_repmtl.benchmarks.base import Loaders, Options
from libmtl_repmtl.benchmarks.loading import LOADER_OPTIONS, LabelSubset, make_loader, need_path
from libmtl_repmtl.data.dense import DenseNpyDataset


def dense_process_preds(normalize: Sequence[str] = ("normal",)) -> Callable[[Any, Any, str | None], Any]:
    """``process_preds`` for dense tasks: bilinear upsampling of every ``(B, C, h, w)`` prediction to the
    trainer's current input size ``trainer.input_size`` (= label size in the NYUv2/Cityscapes layouts;
    ``align_corners=True`` as LibMTL), and L2 normalisation over channels for the tasks in ``normalize``."""

    def process(trainer: Any, preds: Any, task_name: str | None = None) -> Any:
        size = getattr(trainer, "input_size", None)

        def one(task: str, p: torch.Tensor) -> torch.Tensor:
            if size is not None and p.dim() == 4 and tuple(p.shape[-2:]) != tuple(size):
                p = F.interpolate(p, size=tuple(size), mode="bilinear", align_corners=True)
            if task in normalize:
                p = F.normalize(p, p=2, dim=1)
            return p

        if isinstance(preds, dict):
            return {t: one(t, p) for t, p in preds.items()}
        return one(task_name or "", preds)

    return process


def dense_loaders(name: str, dataset_cls: type[DenseNpyDataset],
                  all_tasks: Sequence[str]) -> Callable[[Sequence[str], Options], dict[str, Loaders]]:
    """A :attr:`~libmtl_repmtl.benchmarks.base.Benchmark.dataloaders` builder for an ``.npy`` layout with
    ``train/`` and ``val/`` (the test split; no validation split)."""

    def build(tasks: Sequence[str], opts: Options) -> dict[str, Loaders]:
        root = need_path(opts, name)
        out: dict[str, Loaders] = {"val": None}
        for split, mode, train in (("train", "train", True), ("test", "test", False)):
            ds: Any = dataset_cls(str(root), mode=mode, aug=bool(opts.get("aug")) and train)
            if list(tasks) != list(all_tasks):
                ds = LabelSubset(ds, tasks)
            out[split] = make_loader(ds, opts["train_bs"] if train else opts["test_bs"], train, opts)
        return out

    return build


#: The options the dense benchmarks' builders read (their data folder, augmentation, encoder and its weights).
DENSE_OPTIONS: dict[str, type] = {**LOADER_OPTIONS, "dataset_path": str, "aug": bool, "encoder": str,
                                  "pretrained": str}


def dense_defaults(batch: int) -> dict[str, Any]:
    """The paper's dense setup: Adam lr 1e-4, wd 1e-5, 200 epochs, lr halved at epoch 100, ImageNet ResNet-50."""
    return {"epochs": 200, "train_bs": batch, "test_bs": batch, "optim": "adam", "lr": 1e-4, "weight_decay": 1e-5,
            "scheduler": "step", "step_size": 100, "gamma": 0.5, "encoder": "resnet50", "pretrained": "imagenet",
            "aug": False}


__all__ = ["DENSE_OPTIONS", "dense_defaults", "dense_loaders", "dense_process_preds"]
