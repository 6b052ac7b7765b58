"""The benchmark registry: register, look up and list :class:`~libmtl_repmtl.benchmarks.base.Benchmark`
objects by name (mechanism only; every fact lives in the benchmark's own module).

Names match ignoring case, ``-`` and ``_`` (:func:`canonical_name`): ``Office_31`` finds ``office-31``.
"""

from __future__ import annotations

import re

from libmtl_repmtl.benchmarks.base import Benchmark


class UnknownBenchmarkError(KeyError, ValueError):
    """No benchmark of that name is registered (the message lists the registered ones)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


_REGISTRY: dict[str, Benchmark] = {}


def canonical_name(name: str) -> str:
    """The key a benchmark name is looked up by: lower case, letters and digits only."""
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def register(benchmark: Benchmark, *, overwrite: bool = True) -> Benchmark:
    """Add ``benchmark`` to the registry and return it.

    Raises:
        ValueError: the name is taken and ``overwrite`` is false.
    """
    key = canonical_name(benchmark.name)
    if not overwrite and key in _REGISTRY:
        raise ValueError(f"benchmark {benchmark.name!r} is already registered")
    _REGISTRY[key] = benchmark
    return benchmark


def find(name: str) -> Benchmark | None:
    """The registered benchmark called ``name``, or None."""
    return _REGISTRY.get(canonical_name(name))


def get(name: str) -> Benchmark:
    """The registered benchmark called ``name``.

    Raises:
        UnknownBenchmarkError: unknown name (the message lists the registered ones).
    """
    bench = find(name)
    if bench is None:
        raise UnknownBenchmarkError(f"unknown benchmark {name!r}; registered: {names()} (add one with "
                                    "libmtl_repmtl.benchmarks.register)")
    return bench


def names() -> list[str]:
    """Names of the registered benchmarks, sorted."""
    return sorted(b.name for b in _REGISTRY.values())


__all__ = ["UnknownBenchmarkError", "canonical_name", "find", "get", "names", "register"]
