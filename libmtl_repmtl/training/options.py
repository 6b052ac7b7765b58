"""Which run options exist and what values they take: the generic run options that ``run_experiment`` and the
trainer read (:data:`RUN_OPTIONS`), each benchmark's own (:attr:`~libmtl_repmtl.benchmarks.base.Benchmark.options`),
and their checks. An option nobody reads is an error, not a value stored as if it were used.

* :func:`check_options`: refuse a key the benchmark does not read (naming it, the benchmark and the valid keys,
  with a close match), coerce each value to its option's type;
* :func:`check_run_settings`: positive integer ``epochs``, the scheduler's ``step_size`` / ``gamma``;
* :func:`run_options`: a run's merged options, checked (``run_experiment`` calls it before building anything);
* :func:`split_grid_options`: one option set over a grid of benchmarks, each getting the keys it reads.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from libmtl_repmtl.benchmarks.base import Benchmark
from libmtl_repmtl.benchmarks.registry import get, names

#: The generic run options (read by ``run_experiment`` and the trainer for every benchmark) and their types;
#: ``batch_size`` sets ``train_bs`` and ``test_bs``.
RUN_OPTIONS: dict[str, type] = {
    "epochs": int, "train_bs": int, "test_bs": int, "batch_size": int, "optim": str, "lr": float,
    "weight_decay": float, "momentum": float, "scheduler": str, "step_size": int, "gamma": float, "T_max": int,
}

#: Defaults of the generic run options (a benchmark's ``defaults`` override them; ``test_bs`` None: ``train_bs``).
RUN_DEFAULTS: dict[str, Any] = {"train_bs": 8, "test_bs": None, "optim": "adam", "lr": 1e-4, "weight_decay": 1e-5,
                                "momentum": 0.9, "scheduler": None, "step_size": 100, "gamma": 0.5, "epochs": 1}

#: Options that must be at least 1.
_POSITIVE = ("epochs", "train_bs", "test_bs", "batch_size", "step_size", "T_max")
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def option_types(spec: Benchmark) -> dict[str, type]:
    """Every option ``spec`` reads and its type: the generic run options, then the benchmark's own."""
    return {**RUN_OPTIONS, **spec.options}


def check_options(spec: Benchmark, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` with every value coerced to its option's type (``None`` kept: the default).

    Raises:
        ValueError: a key ``spec`` does not read (the message names it, the benchmark, a close match and the
            valid keys), or a value of the wrong type.
    """
    types = option_types(spec)
    if "dataset_path" in options:
        raise ValueError(f"{spec.name}: dataset_path is no run option; pass the data folder as run_experiment's "
                         "dataset_path argument (the harness: --dataset_path BENCHMARK=PATH)")
    unknown = [k for k in options if k not in types]
    if unknown:
        raise ValueError(f"{spec.name}: unknown option(s) {', '.join(_hint(k, types) for k in unknown)}; the options "
                         f"{spec.name} reads are {', '.join(sorted(types))}")
    return {k: v if v is None else coerce(k, v, types[k]) for k, v in options.items()}


def _hint(key: str, valid: Sequence[str] | Mapping[str, Any]) -> str:
    """``'key'`` with the benchmarks that do read it, or a close match among ``valid``."""
    readers = [n for n in names() if key in get(n).options]
    if readers:
        return f"{key!r} (read by {', '.join(readers)} only)"
    match = difflib.get_close_matches(key, list(valid), n=1)
    return f"{key!r} (did you mean {match[0]!r}?)" if match else repr(key)


def coerce(name: str, value: Any, kind: type) -> Any:
    """``value`` as option ``name`` of type ``kind`` takes it (``object``: any value, as given).

    bool: True/False, 1/0 or the strings true/false/1/0/yes/no (any case); int: an integral number (``3.0`` is
    3, ``1.7`` an error); float: a finite number; str: a string or a path.

    Raises:
        ValueError: a value ``kind`` does not accept (the message names the option and what it takes).
    """
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError(f"option {name}={value!r}: not a boolean; use true/false (also 1/0, yes/no)")
    if kind is int:
        number = _number(name, value, "an integer")
        if number != int(number):
            raise ValueError(f"option {name}={value!r}: not an integer; give a whole number")
        return int(number)
    if kind is float:
        return _number(name, value, "a number")
    if kind is str:
        if isinstance(value, (str, os.PathLike)):
            return os.fspath(value)
        raise ValueError(f"option {name}={value!r}: expected a string")
    return value


def _number(name: str, value: Any, what: str) -> float:
    """``value`` as a finite float (bools and non-numbers refused)."""
    if isinstance(value, bool):
        raise ValueError(f"option {name}={value!r}: expected {what}, not a boolean")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"option {name}={value!r}: expected {what}") from None
    if not math.isfinite(number):
        raise ValueError(f"option {name}={value!r}: expected {what}, got a non-finite value")
    return number


def check_run_settings(opts: Mapping[str, Any]) -> None:
    """The merged options' run settings: ``epochs``, batch sizes, ``step_size`` and ``T_max`` at least 1, and
    ``gamma`` a finite positive number when the scheduler (``step`` / ``exp``) uses it.

    Raises:
        ValueError: the first bad setting (the message names it and the fix).
    """
    for key in _POSITIVE:
        value = opts.get(key)
        if value is None or (key in ("step_size", "T_max") and not _scheduler_reads(opts, key)):
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            what = "the number of training epochs" if key == "epochs" else key
            raise ValueError(f"{key}={value!r}: {what} must be a positive integer (--{key} N with N >= 1)")
    if _scheduler_reads(opts, "gamma"):
        gamma = opts.get("gamma")
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not math.isfinite(gamma) or gamma <= 0:
            raise ValueError(f"gamma={gamma!r}: the --scheduler {opts['scheduler']} learning-rate factor must be a "
                             "finite positive number (e.g. --gamma 0.5)")


def _scheduler_reads(opts: Mapping[str, Any], key: str) -> bool:
    """Whether the run's scheduler reads ``key`` (step: step_size, gamma; exp: gamma; cos: T_max)."""
    reads = {"step": ("step_size", "gamma"), "exp": ("gamma",), "cos": ("T_max",)}
    return key in reads.get(str(opts.get("scheduler") or "").lower(), ())


def run_options(spec: Benchmark, options: Mapping[str, Any], *, epochs: int | None, seed: int,
                dataset_path: str | os.PathLike[str] | None) -> dict[str, Any]:
    """A run's merged options: :data:`RUN_DEFAULTS`, then the benchmark's :attr:`~Benchmark.defaults`, then
    ``options`` (``batch_size`` sets both ``train_bs`` and ``test_bs``; ``None`` values keep the default except
    ``scheduler``), then ``epochs``, ``seed`` and ``dataset_path``; ``test_bs`` defaults to ``train_bs``.

    Raises:
        ValueError: an option ``spec`` does not read, a value of the wrong type (:func:`check_options`), a bad run
            setting (:func:`check_run_settings`), a ``dataset_path`` for a benchmark that reads no data folder, or
            a value the benchmark's :attr:`~Benchmark.validate` refuses.
    """
    given = check_options(spec, {**options, **({} if epochs is None else {"epochs": epochs})})
    if dataset_path is not None and "dataset_path" not in spec.options:
        raise ValueError(f"{spec.name} reads no data folder (it builds its own data), but dataset_path "
                         f"{os.fspath(dataset_path)!r} was given; drop --dataset_path for {spec.name}")
    bs = given.pop("batch_size", None)
    if bs is not None:
        given.setdefault("train_bs", bs)
        given.setdefault("test_bs", bs)
    opts: dict[str, Any] = dict(RUN_DEFAULTS)
    opts.update(check_options(spec, spec.defaults))
    opts.update({k: v for k, v in given.items() if v is not None or k == "scheduler"})
    if opts.get("test_bs") is None:
        opts["test_bs"] = opts["train_bs"]
    opts.update(seed=int(seed), dataset_path=None if dataset_path is None else os.fspath(dataset_path))
    check_run_settings(opts)
    if spec.validate is not None:
        spec.validate(opts)
    return opts


def split_grid_options(specs: Sequence[Benchmark], options: Mapping[str, Mapping[str, Any]]) -> dict[str, dict]:
    """benchmark name -> the options of ``options[name]`` that it reads, checked and coerced. One option set
    over a grid: a key is kept for the benchmarks that read it and must be read by at least one of them.

    Raises:
        ValueError: a key no benchmark of the grid reads (naming it and each benchmark's options), or a bad value.
    """
    readers = {s.name: option_types(s) for s in specs}
    keys = {k for s in specs for k in options.get(s.name, {})}
    nobody = sorted(k for k in keys if not any(k in r for r in readers.values()))
    if nobody:
        own = "; ".join(f"{s.name}: {', '.join(sorted(s.options)) or 'none'}" for s in specs)
        hints = [_hint(k, [o for r in readers.values() for o in r]) for k in nobody]
        raise ValueError(f"--option {', '.join(hints)}: no benchmark of the grid reads it; the generic run options "
                         f"are {', '.join(sorted(RUN_OPTIONS))}, the benchmarks' own: {own}")
    out = {s.name: check_options(s, {k: v for k, v in options.get(s.name, {}).items() if k in readers[s.name]})
           for s in specs}
    for s in specs:
        run_options(s, out[s.name], epochs=None, seed=0, dataset_path=None)  # the merged values, checked
    return out


__all__ = ["RUN_DEFAULTS", "RUN_OPTIONS", "check_options", "check_run_settings", "coerce", "option_types",
           "run_options", "split_grid_options"]
