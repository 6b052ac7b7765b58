"""The comparison harness (``libmtl-repmtl bench``): a benchmark x method x seed grid run through the trainer.

* :mod:`~libmtl_repmtl.harness.methods` -- method names -> weighting, architecture, settings;
* :mod:`~libmtl_repmtl.harness.plan` -- suites and the planned runs;
* :mod:`~libmtl_repmtl.harness.execute` -- running the grid through ``run_experiment``;
* :mod:`~libmtl_repmtl.harness.runs` -- reading runs through the results contract;
* :mod:`~libmtl_repmtl.harness.report` / :mod:`~libmtl_repmtl.harness.plots` -- tables and plots;
* :mod:`~libmtl_repmtl.harness.cli` -- the command line.
"""
