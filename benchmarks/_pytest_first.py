"""pytest plugin for the smoke run of ``benchmarks/gpu_check.sh``: with ``GPU_CHECK_TESTS_PER_FILE=N`` only the
first ``N`` collected tests of each file run (the others are deselected). Load it with ``-p _pytest_first``
(``benchmarks/`` on ``PYTHONPATH``); without the variable it changes nothing."""

from __future__ import annotations

import os
from typing import Any


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    limit = os.environ.get("GPU_CHECK_TESTS_PER_FILE")
    if not limit:
        return
    if not limit.isdigit() or int(limit) < 1:
        raise ValueError(f"GPU_CHECK_TESTS_PER_FILE must be a positive integer, got {limit!r}")
    seen: dict[str, int] = {}
    keep, drop = [], []
    for item in items:
        n = seen[item.location[0]] = seen.get(item.location[0], 0) + 1
        (keep if n <= int(limit) else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
