"""Task losses and metrics (LibMTL ``AbsLoss`` / ``AbsMetric`` subclasses) and the benchmarks' task dicts.

* :mod:`~libmtl_repmtl.tasks.losses`: ``SegLoss``, ``DepthLoss``, ``NormalLoss``, ``ClsLoss``.
* :mod:`~libmtl_repmtl.tasks.metrics`: ``SegMetric`` (mIoU, pixAcc), ``DepthMetric`` (abs_err, rel_err),
  ``NormalMetric`` (mean, median, <11.25, <22.5, <30), ``AccMetric``; units in that module's docstring.
* :mod:`~libmtl_repmtl.tasks.specs`: ``task_dict(benchmark)``, metric names, higher-is-better flags.

Import the submodules directly (they import LibMTL through :mod:`libmtl_repmtl.libmtl.bases`).
"""
