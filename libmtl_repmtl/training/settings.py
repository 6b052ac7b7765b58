"""Which recorded settings define what a run trains: the one authority for "is this the same run?".

A run's configuration (``config``: what :func:`~libmtl_repmtl.training.experiment.run_experiment` records in
``results.json`` and the checkpoints) holds every setting of the run. :func:`training_settings` is that
configuration less :data:`NOT_SETTINGS`, the keys that may change between a run and its continuation without
changing what is trained; :func:`setting_differences` compares two such sets. Resume
(:class:`~libmtl_repmtl.training.checkpoint.Checkpointer`: ``last.pt`` stores the settings) and ``bench``
(a finished run is skipped only when it was trained with the grid's settings) both ask these two functions.

Example::

    planned = training_settings(config)                 # {"lr": 0.01, "seed": 0, "weight_args": {...}, ...}
    setting_differences(recorded, planned)              # {"lr": (0.0001, 0.01)}: key -> (first, second)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from libmtl_repmtl.training.io import to_jsonable

#: Keys of a run's configuration that are NOT training settings: a continuation may change them and still
#: train exactly what the run it continues trained. (``progress`` and ``verbose`` are not recorded at all.)
NOT_SETTINGS = frozenset({
    # The number of epochs to reach: a continuation may ask for more. A schedule that depends on it records
    # what it derived (the cosine schedule's T_max in scheduler_param), and that is compared.
    "epochs",
    # Whether this call continues a run: the very thing that differs between a run and its continuation.
    "resume",
    # Where the run folder and the data are: a moved folder or dataset is the same run and the same data
    # (the data's contents are not recorded; a resume checks the training loaders' lengths).
    "save_path", "dataset_path",
    # Where the run computes (auto / cpu / cuda:N): the same training on other hardware (float results may
    # differ in the last bits, as between two GPUs).
    "device",
    # DataLoader worker processes: the batch order is the same with any number (training/resume.py says what
    # is exact with persistent workers).
    "num_workers",
    # The evaluation batch size: evaluation computes no gradient and draws no per-batch random number, and
    # the metrics are sums over the split's samples; lets a continuation fit a smaller device.
    "test_bs",
    # The example scripts' parsed command line, a copy: each flag that determines training is recorded under
    # its own key (lr, weight_args, ...), and it also holds the flags above (--epochs, --resume, --device).
    "argv_params",
})

#: Shown for a setting that one side does not record.
NOT_RECORDED = "(not recorded)"


def training_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of a run's ``config`` that define what it trains: every key but :data:`NOT_SETTINGS`,
    as JSON values (tuples as lists, non-finite floats as ``None``), so a configuration read back from
    ``results.json`` and one built in memory compare equal when they hold the same settings."""
    plain = json.loads(json.dumps(to_jsonable(dict(config)), allow_nan=False))
    return {k: v for k, v in plain.items() if k not in NOT_SETTINGS}


def _flat(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings (``weight_args``, ``optim_param``, ...) as dotted keys (``weight_args.RepMTL_tau``)."""
    out: dict[str, Any] = {}
    for k, v in settings.items():
        if isinstance(v, Mapping) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def setting_differences(first: Mapping[str, Any], second: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The settings that differ between two :func:`training_settings`: dotted key -> (first's value, second's
    value), sorted by key; a key only one side has shows :data:`NOT_RECORDED` on the other. Empty: the same
    training."""
    a, b = _flat(training_settings(first)), _flat(training_settings(second))
    return {k: (a.get(k, NOT_RECORDED), b.get(k, NOT_RECORDED)) for k in sorted(a.keys() | b.keys())
            if a.get(k, NOT_RECORDED) != b.get(k, NOT_RECORDED)}


def describe_differences(diffs: Mapping[str, tuple[Any, Any]], first: str, second: str) -> str:
    """``key: <first value> (first) vs <second value> (second)`` for each difference, ``; ``-separated."""
    return "; ".join(f"{k}: {_show(a)} ({first}) vs {_show(b)} ({second})" for k, (a, b) in diffs.items())


def _show(v: Any) -> str:
    return v if v == NOT_RECORDED else json.dumps(v)


__all__ = ["NOT_RECORDED", "NOT_SETTINGS", "describe_differences", "setting_differences", "training_settings"]
