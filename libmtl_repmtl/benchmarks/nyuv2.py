"""NYUv2: segmentation (13 classes), depth and surface normals from one RGB image (single input).

Data: the preprocessed ``.npy`` layout ``ROOT/{train,val}/{image,label,depth,normal}/{i}.npy`` (``val/`` is
the test split; no validation split). Model: dilated ResNet-50 (output stride 8) and one DeepLabV3 ASPP head
per task, predictions upsampled to the label size. Setup: Adam lr 1e-4, wd 1e-5, batch 8, 200 epochs, lr
halved at epoch 100. Metric units: fractions for mIoU / pixAcc / the within-angle ratios, degrees for angles.
"""

from __future__ import annotations

from libmtl_repmtl.benchmarks.base import Baseline, Benchmark, Published, Task, task_dict_of
from libmtl_repmtl.benchmarks.dense import DENSE_OPTIONS, dense_defaults, dense_loaders, dense_process_preds
from libmtl_repmtl.benchmarks.registry import register
from libmtl_repmtl.data.dense import NYUv2Dataset
from libmtl_repmtl.models.resnet import deeplab_heads, dense_encoder_factory
from libmtl_repmtl.tasks.losses import DepthLoss, NormalLoss, SegLoss
from libmtl_repmtl.tasks.metrics import DepthMetric, NormalMetric, SegMetric

NAME = "nyuv2"
_OUT = NYUv2Dataset.TASKS

#: The tasks: metrics (score order), directions, loss, metric, head outputs.
TASKS: dict[str, Task] = {
    "segmentation": Task(("mIoU", "pixAcc"), (True, True), SegLoss, lambda: SegMetric(_OUT["segmentation"]),
                         _OUT["segmentation"]),
    "depth": Task(("abs_err", "rel_err"), (False, False), DepthLoss, DepthMetric, _OUT["depth"]),
    "normal": Task(("mean", "median", "<11.25", "<22.5", "<30"), (False, False, True, True, True), NormalLoss,
                   NormalMetric, _OUT["normal"]),
}

#: The paper's single-task row (printed units: percent for mIoU, pixAcc and the within-angle ratios).
BASELINE = Baseline(
    printed={"segmentation": [53.50, 75.39], "depth": [0.3926, 0.1605],
             "normal": [21.99, 15.16, 39.04, 65.00, 75.16]},
    percent={"segmentation": [True, True], "depth": [False, False], "normal": [False, False, True, True, True]})

#: Rep-MTL paper (arXiv 2507.21049), Table 1: Δp_task (mean of 3 runs), Δp_metric and some mean rows.
PUBLISHED = Published(
    delta_p_task={"EW": -1.78, "UW": -1.52, "DWA": -1.71, "GLS": 0.30, "RLW": -1.10, "MGDA": -0.64,
                  "GradNorm": -1.24, "PCGrad": -1.57, "GradDrop": -1.85, "GradVac": -1.75, "IMTL": -0.57,
                  "CAGrad": -0.27, "Nash-MTL": -1.01, "Aligned-MTL": -0.98, "FairGrad": -0.47, "DB-MTL": 1.15,
                  "RepMTL": 1.70},
    delta_p_metric={"EW": -3.85, "DB-MTL": 0.56, "RepMTL": 0.95},
    metrics={
        "EW": {"segmentation": [53.93, 75.53], "depth": [0.3825, 0.1577],
               "normal": [23.57, 17.01, 35.04, 60.99, 72.05]},
        "DB-MTL": {"segmentation": [53.92, 75.60], "depth": [0.3768, 0.1557],
                   "normal": [21.97, 15.37, 38.43, 64.81, 75.24]},
        "RepMTL": {"segmentation": [54.59, 76.04], "depth": [0.3750, 0.1542],
                   "normal": [21.91, 15.28, 38.37, 64.72, 75.05]},
    })

BENCHMARK = register(Benchmark(
    name=NAME, tasks=tuple(TASKS), multi_input=False, has_val=False,
    task_dict=task_dict_of(NAME, TASKS),
    dataloaders=dense_loaders(NAME, NYUv2Dataset, tuple(TASKS)),
    encoder_class=lambda o: dense_encoder_factory(o.get("encoder") or "resnet50", o.get("pretrained")),
    decoders=lambda tasks, o: deeplab_heads({t: TASKS[t].outputs for t in tasks}, o.get("encoder") or "resnet50"),
    process_preds=dense_process_preds(("normal",)),
    defaults=dense_defaults(8), options=DENSE_OPTIONS, baseline=BASELINE, published=PUBLISHED,
    description="NYUv2: segmentation/depth/normal, dilated ResNet-50 + DeepLabV3 heads"))
