"""The benchmarks, one module each, registered by name on import (timm-style).

Each module builds one :class:`~libmtl_repmtl.benchmarks.base.Benchmark` holding every fact about its benchmark
(tasks, losses, metrics and their directions, output sizes, data loaders, encoder and heads, default setup,
single-task baseline with units, published rows) and registers it:

* :mod:`~libmtl_repmtl.benchmarks.nyuv2`, :mod:`~libmtl_repmtl.benchmarks.cityscapes` (dense, the paper's),
  :mod:`~libmtl_repmtl.benchmarks.office` (``office-31``, ``office-home``);
* :mod:`~libmtl_repmtl.benchmarks.multimnist`, :mod:`~libmtl_repmtl.benchmarks.digits`,
  :mod:`~libmtl_repmtl.benchmarks.densemnist` (CPU, real MNIST digits; DenseMNIST is shaped like NYUv2).

Look-up: ``get("Office_31")``, ``names()``; adding one: :func:`register` (see ``docs/ARCHITECTURE.md``).
"""

from libmtl_repmtl.benchmarks import cityscapes, densemnist, digits, multimnist, nyuv2, office
from libmtl_repmtl.benchmarks.base import Baseline, Benchmark, BenchmarkSetupError, Published, Task, task_dict_of
from libmtl_repmtl.benchmarks.registry import UnknownBenchmarkError, canonical_name, find, get, names, register

__all__ = ["Baseline", "Benchmark", "BenchmarkSetupError", "Published", "Task", "UnknownBenchmarkError",
           "canonical_name", "cityscapes", "densemnist", "digits", "find", "get", "multimnist", "names", "nyuv2",
           "office", "register", "task_dict_of"]
