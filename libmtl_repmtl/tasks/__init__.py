"""Task losses and metrics (LibMTL ``AbsLoss`` / ``AbsMetric`` subclasses); each benchmark's task table
(which loss and metrics, their directions) is in its module of :mod:`libmtl_repmtl.benchmarks`.

* :mod:`~libmtl_repmtl.tasks.losses`: ``SegLoss``, ``DepthLoss``, ``NormalLoss``, ``ClsLoss``.
* :mod:`~libmtl_repmtl.tasks.metrics`: ``SegMetric`` (mIoU, pixAcc), ``DepthMetric`` (abs_err, rel_err),
  ``NormalMetric`` (mean, median, <11.25, <22.5, <30), ``AccMetric``; units in that module's docstring.

Import the submodules directly (they import LibMTL through :mod:`libmtl_repmtl.libmtl.bases`).
"""
