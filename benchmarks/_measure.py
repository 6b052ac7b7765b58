"""Timing and peak memory of one training step, shared by the benchmark workers.

Time: median over ``steps`` timed calls after ``warmup`` calls, the device synchronised around each.
Memory: the peak above the level before the first call (CUDA: ``max_memory_allocated``, its peak statistics reset
first, so several methods can be measured one after another in one process; CPU: peak resident set size, reset
through ``/proc/self/clear_refs``), which includes optimiser state created in the first step. On the CPU the
allocator keeps memory freed by an earlier method, so measure one method per process there.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def rss_kb(field: str) -> int:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def release_memory(device: Any) -> None:
    """Free what the previous measurement left behind (garbage, and on CUDA the allocator's cached blocks)."""
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def measure_steps(step: Callable[[], None], device: Any, steps: int, warmup: int) -> dict[str, Any]:
    """Run ``step`` ``warmup + steps`` times on ``device`` (a ``torch.device``).

    Returns:
        ``{"median_s", "times_s", "peak_bytes", "total_peak_bytes"}``: ``peak_bytes`` above the level before the
        first call, ``total_peak_bytes`` the absolute peak (CUDA: allocated by tensors; CPU: resident set).
    """
    import torch

    if steps < 1 or warmup < 0:
        raise ValueError(f"need steps >= 1 and warmup >= 0, got steps={steps}, warmup={warmup}")

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    if device.type == "cuda":
        sync()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        Path("/proc/self/clear_refs").write_text("5")
        base = rss_kb("VmRSS") * 1024
    times = []
    for i in range(warmup + steps):
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    total = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else rss_kb("VmHWM") * 1024
    return {"median_s": statistics.median(times), "times_s": times, "peak_bytes": int(total - base),
            "total_peak_bytes": int(total)}
