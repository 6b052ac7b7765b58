"""Cityscapes: 7-class segmentation and depth from one RGB image (single input).

Data: ``ROOT/{train,val}/{image,label_7 or label,depth}/{i}.npy`` at 128 x 256 (``val/`` is the test split).
Model and losses as NYUv2 (dilated ResNet-50, ASPP heads). Setup: as NYUv2 with batch 64.
LibMTL's ``--train_mode``: ``train`` (default) trains on ``train/``; ``trainval`` on ``train/`` and ``val/``
together (the test split is then part of the training data, as in LibMTL's example).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch.utils.data import ConcatDataset

from libmtl_repmtl.benchmarks.base import (
    Baseline,
    Benchmark,
    BenchmarkSetupError,
    Loaders,
    Options,
    Published,
    Task,
    task_dict_of,
)
from libmtl_repmtl.benchmarks.dense import DENSE_OPTIONS, dense_defaults, dense_loaders, dense_process_preds
from libmtl_repmtl.benchmarks.loading import LabelSubset, make_loader, need_path
from libmtl_repmtl.benchmarks.registry import register
from libmtl_repmtl.data.dense import CityscapesDataset
from libmtl_repmtl.models.resnet import deeplab_heads, dense_encoder_factory
from libmtl_repmtl.tasks.losses import DepthLoss, SegLoss
from libmtl_repmtl.tasks.metrics import DepthMetric, SegMetric

NAME = "cityscapes"
_OUT = CityscapesDataset.TASKS

#: The tasks: metrics (score order), directions, loss, metric, head outputs.
TASKS: dict[str, Task] = {
    "segmentation": Task(("mIoU", "pixAcc"), (True, True), SegLoss, lambda: SegMetric(_OUT["segmentation"]),
                         _OUT["segmentation"]),
    "depth": Task(("abs_err", "rel_err"), (False, False), DepthLoss, DepthMetric, _OUT["depth"]),
}

#: The paper's single-task row (percent for mIoU / pixAcc; the relative depth error as the metric reports it).
BASELINE = Baseline(printed={"segmentation": [69.06, 91.54], "depth": [0.01282, 43.53]},
                    percent={"segmentation": [True, True], "depth": [False, False]})

#: Rep-MTL paper, Table 2: Δp_task (mean of 3 runs) and some mean rows.
PUBLISHED = Published(
    delta_p_task={"EW": -2.05, "UW": -2.45, "DWA": -2.24, "GLS": -0.39, "RLW": -1.91, "MGDA": -0.19,
                  "GradNorm": -1.55, "PCGrad": -2.36, "GradDrop": -2.02, "GradVac": -2.45, "IMTL": -0.32,
                  "CAGrad": -0.87, "Nash-MTL": -1.11, "DB-MTL": 0.20, "RepMTL": 0.62},
    metrics={
        "EW": {"segmentation": [68.93, 91.58], "depth": [0.01315, 45.90]},
        "DB-MTL": {"segmentation": [69.17, 91.56], "depth": [0.01280, 43.46]},
        "RepMTL": {"segmentation": [69.72, 91.85], "depth": [0.01270, 43.42]},
    })

#: LibMTL's ``--train_mode`` values.
TRAIN_MODES = ("train", "trainval")
_train_loaders = dense_loaders(NAME, CityscapesDataset, tuple(TASKS))


def _loaders(tasks: Sequence[str], opts: Options) -> dict[str, Loaders]:
    """The dense loaders; with ``opts["train_mode"] == "trainval"`` the training loader reads train/ + val/."""
    mode = opts.get("train_mode") or "train"
    if mode not in TRAIN_MODES:
        raise BenchmarkSetupError(f"--train_mode {mode!r}: use one of {', '.join(TRAIN_MODES)}")
    out = _train_loaders(tasks, opts)
    if mode == "trainval":
        extra = CityscapesDataset(str(need_path(opts, NAME)), mode="test", aug=bool(opts.get("aug")))
        if list(tasks) != list(TASKS):
            extra = LabelSubset(extra, tasks)
        out["train"] = make_loader(ConcatDataset([out["train"].dataset, extra]), opts["train_bs"], True, opts)
    return out


BENCHMARK = register(Benchmark(
    name=NAME, tasks=tuple(TASKS), multi_input=False, has_val=False,
    task_dict=task_dict_of(NAME, TASKS),
    dataloaders=_loaders,
    encoder_class=lambda o: dense_encoder_factory(o.get("encoder") or "resnet50", o.get("pretrained")),
    decoders=lambda tasks, o: deeplab_heads({t: TASKS[t].outputs for t in tasks}, o.get("encoder") or "resnet50"),
    process_preds=dense_process_preds(("normal",)),
    defaults={**dense_defaults(64), "train_mode": "train"}, options={**DENSE_OPTIONS, "train_mode": str},
    baseline=BASELINE, published=PUBLISHED,
    description="Cityscapes: 7-class segmentation/depth, dilated ResNet-50 + DeepLabV3 heads"))
