"""LibMTL's base classes, imported through the compatibility layer.

Import LibMTL symbols from here (``from libmtl_repmtl.libmtl.bases import AbsLoss``) so that LibMTL 1.1.5
imports on current torchvision.
"""

from __future__ import annotations

from libmtl_repmtl.libmtl.compat import ensure_libmtl

LibMTL = ensure_libmtl()

from LibMTL.architecture.abstract_arch import AbsArchitecture  # noqa: E402
from LibMTL.loss import AbsLoss  # noqa: E402
from LibMTL.metrics import AbsMetric  # noqa: E402
from LibMTL.weighting.abstract_weighting import AbsWeighting  # noqa: E402

__all__ = ["LibMTL", "AbsArchitecture", "AbsLoss", "AbsMetric", "AbsWeighting"]
