"""The ``bench`` command's list flags, parsed and checked before anything runs (``--dry-run`` too):
``--option KEY=VALUE``, ``--dataset_path BENCHMARK=PATH`` and ``--seeds``.

Each bad item is a ``SystemExit`` naming the flag, the item and the fix: an ``--option`` key that another flag
or the method owns (:data:`OWNED_KEYS`), a key given twice, a ``--dataset_path`` key that is no benchmark of the
grid, a repeated or out-of-range seed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from libmtl_repmtl.benchmarks import canonical_name, find

#: ``run_experiment`` keywords that ``bench`` sets itself, each with what to use instead of ``--option KEY=...``
#: (a collision either failed every run or was silently overridden).
OWNED_KEYS: dict[str, str] = {
    "benchmark": "--benchmarks",
    "weighting": "--methods",
    "arch": "--methods (a Rep-MTL preset runs on RepHPS, any other weighting on HPS)",
    "dataset_path": "--dataset_path BENCHMARK=PATH",
    "save_path": "--out (each run gets its own folder under it)",
    "seed": "--seeds",
    "epochs": "--epochs",
    "device": "--device",
    "tasks": "--methods STL (one single-task run per task)",
    "rep_grad": "--methods (the method sets it: on for weightings that read the representation's gradients)",
    "resume": "nothing: bench resumes an interrupted run (one with a last.pt) by itself",
    "baseline": "--baseline (the report's Δp reference)",
    "params": "--option KEY=VALUE for run settings, inline method settings (\"RepMTL[tau=0.5]\") for Rep-MTL's",
}

#: ``run_experiment`` keywords that ``--option`` passes to every run as they are (``weight_args`` only to
#: methods without settings of their own: :func:`check_weight_args`).
PASSED_KEYS = ("weight_args", "arch_args", "progress", "verbose", "amp", "sync_bn", "dist_backend")

#: NumPy's seed range (``numpy.random.seed``): 0 .. 2**32 - 1.
MAX_SEED = 2**32 - 1


def _split(item: str, flag: str, form: str) -> tuple[str, str]:
    """``KEY=VALUE`` split at its first ``=``; ``SystemExit`` saying ``form`` when there is none or no key."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise SystemExit(f"error: {flag} takes {form}, got {item!r}")
    return key.strip(), value


def parse_options(items: Sequence[str]) -> dict[str, Any]:
    """``--option KEY=VALUE ...`` as a dict, each value read as JSON where it is JSON (else the string).

    Raises:
        SystemExit: an item without ``=``, a key given twice, a key another flag or the method owns.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, value = _split(item, "--option", "KEY=VALUE (e.g. batch_size=32)")
        if key in out:
            raise SystemExit(f"error: --option {key} is given twice; give each key once")
        if key in OWNED_KEYS:
            raise SystemExit(f"error: --option {key}: bench sets {key} itself; use {OWNED_KEYS[key]} instead")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def check_weight_args(options: Mapping[str, Any], preset_args: Mapping[str, Mapping[str, Any]]) -> None:
    """Refuse ``--option weight_args=...`` when a method of the grid has settings of its own (``preset_args``:
    method label -> its ``weight_args``, empty for plain weightings), which would replace it.

    Raises:
        SystemExit: naming those methods and the inline-settings form to use.
    """
    if "weight_args" not in options:
        return
    owners = [m for m, args in preset_args.items() if args]
    if owners:
        verb = "has" if len(owners) == 1 else "have"
        raise SystemExit(f"error: --option weight_args: {', '.join(owners)} {verb} weight_args of its own, which "
                         "would replace it; give Rep-MTL settings inline (\"RepMTL[tau=0.5]\") and --option "
                         "weight_args only with methods without settings of their own (EW, MGDA, ...)")
    if not isinstance(options["weight_args"], dict):
        raise SystemExit("error: --option weight_args takes a JSON object, e.g. 'weight_args={\"calpha\": 0.4}', "
                         f"got {options['weight_args']!r}")


def parse_dataset_paths(items: Sequence[str], benchmarks: Iterable[str]) -> dict[str, str]:
    """``--dataset_path BENCHMARK=PATH ...`` as grid benchmark name -> path; a key matches a benchmark of the grid
    by the registry's :func:`~libmtl_repmtl.benchmarks.canonical_name` (``NYUv2`` and ``office_31`` match).

    Raises:
        SystemExit: an item without ``BENCHMARK=``, an empty path, a key that is no registered benchmark or not one
            of the grid's, a benchmark given twice, a path that is not a folder.
    """
    grid = {canonical_name(b): b for b in benchmarks}
    out: dict[str, str] = {}
    for item in items:
        key, path = _split(item, "--dataset_path", "BENCHMARK=PATH (e.g. nyuv2=/data/nyuv2)")
        bench = grid.get(canonical_name(key))
        if bench is None:
            what = "is not a benchmark of this grid" if find(key) else "is no registered benchmark"
            raise SystemExit(f"error: --dataset_path {item}: {key!r} {what}; the grid's benchmarks: "
                             f"{', '.join(grid.values())}")
        if bench in out:
            raise SystemExit(f"error: --dataset_path {bench} is given twice; give each benchmark once")
        if not path:
            raise SystemExit(f"error: --dataset_path {item}: no path after '='")
        if not Path(path).expanduser().is_dir():
            raise SystemExit(f"error: --dataset_path {item}: {path!r} is not a folder")
        out[bench] = path
    return out


def check_seeds(seeds: Sequence[int]) -> list[int]:
    """The seeds, each once and in NumPy's range.

    Raises:
        SystemExit: a repeated seed, or one below 0 or above 2**32 - 1.
    """
    for s in seeds:
        if not 0 <= s <= MAX_SEED:
            raise SystemExit(f"error: --seeds {s}: a seed must be from 0 to {MAX_SEED} (NumPy's seed range)")
    repeated = sorted({s for s in seeds if list(seeds).count(s) > 1})
    if repeated:
        raise SystemExit(f"error: --seeds {' '.join(map(str, repeated))} given more than once; give each seed once")
    return list(seeds)


__all__ = ["MAX_SEED", "OWNED_KEYS", "PASSED_KEYS", "check_seeds", "check_weight_args", "parse_dataset_paths",
           "parse_options"]
