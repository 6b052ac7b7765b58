"""The paper's analyses of trained checkpoints.

* :mod:`~libmtl_repmtl.analysis.powerlaw` -- ``libmtl-repmtl alpha``: power-law ESD exponents of weight matrices;
* :mod:`~libmtl_repmtl.analysis.saliency_maps` -- ``libmtl-repmtl saliency``: per-task saliency and TSR entropy maps.
"""
