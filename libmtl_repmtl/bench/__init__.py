"""Comparison harness and the paper's analyses.

* :mod:`libmtl_repmtl.bench.harness` -- ``libmtl-repmtl bench``: benchmark x method x seed grid, summary
  table/CSV/plots;
* :mod:`libmtl_repmtl.bench.cpu_suite` / :mod:`~libmtl_repmtl.bench.cpu_models` /
  :mod:`~libmtl_repmtl.bench.cpu_runner` -- the CPU-scale real benchmarks (MultiMNIST, digit domains);
* :mod:`libmtl_repmtl.bench.powerlaw` -- ``libmtl-repmtl alpha``: power-law ESD exponents of weight matrices;
* :mod:`libmtl_repmtl.bench.saliency_maps` -- ``libmtl-repmtl saliency``: per-task saliency and TSR entropy maps.

Submodules are imported lazily (nothing heavy happens on ``import libmtl_repmtl.bench``).
"""
