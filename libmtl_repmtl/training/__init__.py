"""Training: the loop and its parts, and ``run_experiment`` (benchmarks: :mod:`libmtl_repmtl.benchmarks`).

* :func:`run_experiment` -- one run of a registered benchmark (the example scripts and the harness use it).
* :class:`MTLTrainer` -- the loop (a LibMTL ``Trainer``) composed of a distribution strategy
  (:mod:`~libmtl_repmtl.training.strategy`), a precision policy (:mod:`~libmtl_repmtl.training.precision`),
  a recorder (:mod:`~libmtl_repmtl.training.recorder`) and a checkpointer
  (:mod:`~libmtl_repmtl.training.checkpoint`); weightings with their own step protocol run through
  :mod:`~libmtl_repmtl.training.protocols`.
* :class:`ParallelMTLTrainer` -- the same built from ``dist_env``/``amp`` (torchrun/DDP, mixed precision;
  ``docs/distributed.md``).
* :mod:`~libmtl_repmtl.training.results` -- the ``results.json`` contract (:class:`RunResults`,
  :func:`read_results`, :class:`ResultsFileError`).
* :func:`resolve_device`, and atomic writers in :mod:`~libmtl_repmtl.training.io`.
* :mod:`~libmtl_repmtl.training.resume` (exact resume: RNG states, data order) and
  :mod:`~libmtl_repmtl.training.checks` (:class:`BatchDataError` for unusable batches).

Heavy imports (LibMTL) happen on first attribute access, so ``libmtl_repmtl.training.io`` and ``.device``
stay light.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "run_experiment": "libmtl_repmtl.training.experiment",
    "MTLTrainer": "libmtl_repmtl.training.trainer",
    "ParallelMTLTrainer": "libmtl_repmtl.training.experiment",
    "NonFiniteLossError": "libmtl_repmtl.training.trainer",
    "resolve_device": "libmtl_repmtl.training.device",
    "BatchDataError": "libmtl_repmtl.training.checks",
    "RunFileWriteError": "libmtl_repmtl.training.io",
    "RunResults": "libmtl_repmtl.training.results",
    "ResultsFileError": "libmtl_repmtl.training.results",
    "read_results": "libmtl_repmtl.training.results",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'libmtl_repmtl.training' has no attribute {name!r}")


__all__ = sorted(_LAZY)
