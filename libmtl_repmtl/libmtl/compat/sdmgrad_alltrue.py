"""Post-import patch ``sdmgrad-alltrue`` (LibMTL's git version)."""

from __future__ import annotations

from typing import Any

from libmtl_repmtl.libmtl.compat._common import _marked, lend_while_running

#: A point already on the probability simplex: the input that takes the removed-function branch.
_SIMPLEX_POINT = (0.5, 0.5)


def _sdmgrad_symptom(sdmgrad: type) -> bool:
    import numpy as np

    try:
        sdmgrad.euclidean_proj_simplex(sdmgrad(), np.array(_SIMPLEX_POINT))
    except AttributeError as exc:
        return "alltrue" in str(exc)
    return False


def _patch_sdmgrad_alltrue(libmtl: Any) -> bool:
    """Symptom: the git version's SDMGrad fails with ``AttributeError: `np.alltrue` was removed in the NumPy 2.0
    release`` at a step where its task weights are already on the simplex (e.g. 2 tasks whose losses have zero
    gradient: the weights stay at [0.5, 0.5]).

    Cause: ``SDMGrad.euclidean_proj_simplex`` returns a point already on the simplex early, testing
    ``np.alltrue(v >= 0)``; numpy 2 removed ``alltrue`` (``np.all`` is the same function). Cure: while
    ``euclidean_proj_simplex`` runs (only then), ``numpy.alltrue`` is ``numpy.all``; the method is unchanged.
    Detected by projecting the point (0.5, 0.5); not needed where LibMTL has no SDMGrad (1.1.5) or where numpy
    still has ``alltrue``.
    """
    sdmgrad = getattr(libmtl.weighting, "SDMGrad", None)
    if sdmgrad is None or _marked(sdmgrad.__dict__.get("euclidean_proj_simplex"), "sdmgrad-alltrue"):
        return False
    if not _sdmgrad_symptom(sdmgrad):
        return False
    import numpy as np

    lend_while_running(sdmgrad, "euclidean_proj_simplex", np, "alltrue", np.all, "sdmgrad-alltrue",
                       "numpy.alltrue is numpy.all while it runs.")
    return True
