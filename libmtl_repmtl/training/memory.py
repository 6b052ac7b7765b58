"""A run's own peak memory: the trainer's ``peak_memory_mb`` and ``peak_memory_kind`` (``results.json``).

The runs of a grid share one process, so a process-lifetime counter (``ru_maxrss``, a CUDA peak never reset)
reports the largest run so far and favours whichever method runs later. :class:`PeakMemory` is started when a
run's training starts (the model built and on its device, before the first batch and before a resumed run reads
``last.pt``) and reports the **increase over what was in memory at that moment**, in MiB: what the training
itself adds (gradients, optimiser state, activations, the weighting's buffers, batches), not the model's
parameters, the data sets already loaded or the interpreter and its libraries, which are the same for every
method of a benchmark.

* CUDA: ``torch.cuda.reset_peak_memory_stats(device)`` at the start; the peak is ``max_memory_allocated`` minus
  ``memory_allocated`` at the start (tensors allocated on the device, not the caching allocator's reserve).
* CPU on Linux: garbage collected and freed heap handed back to the system (glibc's ``malloc_trim``), the
  kernel's peak-RSS mark reset (``/proc/self/clear_refs``) and the resident size noted (``VmRSS``); the peak is
  ``VmHWM`` minus it. Resident memory also counts code, thread pools and buffers first touched during the
  run, so the first run of a process reads higher than later ones (by about 14 MiB on a tiny model).
* CPU elsewhere (no ``/proc``): the growth of the process's peak RSS (``ru_maxrss``) during the run, a lower
  bound when an earlier run of the process peaked higher; the kind says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import resource
import sys
from collections.abc import Callable
from pathlib import Path

import torch

#: ``peak_memory_kind`` per way of measuring (what ``peak_memory_mb`` means).
KINDS: dict[str, str] = {
    "cuda": "cuda: peak allocated during training over the allocation at its start "
            "(max_memory_allocated after reset_peak_memory_stats, minus memory_allocated at the start; MiB)",
    "cpu-proc": "cpu: peak resident set during training over the resident set at its start "
                "(VmHWM after resetting it through /proc/self/clear_refs, minus VmRSS at the start; MiB)",
    "cpu-rusage": "cpu: growth of the process's peak resident set during training (ru_maxrss; a lower bound "
                  "when an earlier run of the process peaked higher; MiB)",
}

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_mib(field: str) -> float | None:
    """``VmRSS`` / ``VmHWM`` of this process from ``/proc/self/status`` in MiB (None where unavailable)."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0  # kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (``VmHWM``) to the current resident size (Linux); False elsewhere."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return _status_mib("VmHWM") is not None


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim`` (looked up once), or None without glibc."""
    name = ctypes.util.find_library("c") if sys.platform.startswith("linux") else None
    if not name:
        return None
    try:
        return ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None


def _trim_heap() -> None:
    """Hand freed heap memory back to the system (glibc ``malloc_trim``), so that memory an earlier run freed but
    the allocator kept is not counted as resident at this run's start. No-op without glibc."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _maxrss_mib() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024.0  # bytes on macOS, KiB elsewhere


class PeakMemory:
    """The peak memory of one run's training on ``device`` (see the module docstring).

    ``start()`` marks the beginning (again on a second call); :meth:`peak_mb` is the peak since then, ``None``
    before ``start()``; ``stop()`` marks the end: from then on :meth:`peak_mb` is the peak up to that moment, so
    the final ``results.json`` and the results a run returns say the same; :attr:`kind` says what it measures (an
    entry of :data:`KINDS`).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self._method: str | None = None
        self._base = 0.0
        self._final: float | None = None
        self._stopped = False

    def start(self) -> None:
        """Mark the start of the run's training: reset the peak and note what is in memory now."""
        self._final, self._stopped = None, False
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._method, self._base = "cuda", torch.cuda.memory_allocated(self.device) / 2**20
            return
        _trim_heap()
        if _reset_peak_rss():
            self._method, self._base = "cpu-proc", float(_status_mib("VmRSS") or 0.0)
        else:
            self._method, self._base = "cpu-rusage", _maxrss_mib()

    @property
    def kind(self) -> str:
        """What :meth:`peak_mb` measures (``results.json``'s ``peak_memory_kind``)."""
        if self._method is not None:
            return KINDS[self._method]
        return KINDS["cuda"] if self.device.type == "cuda" else KINDS["cpu-proc" if _STATUS.exists() else "cpu-rusage"]

    def stop(self) -> None:
        """Mark the end of the run's training: :meth:`peak_mb` keeps the peak measured now (no-op before
        ``start`` or when stopped already)."""
        if self._method is not None and not self._stopped:
            self._final, self._stopped = self._measure(), True

    def peak_mb(self) -> float | None:
        """The peak from :meth:`start` to now (or to :meth:`stop`) over what was in memory at the start, in MiB
        (``None`` before ``start``)."""
        return self._final if self._stopped else self._measure()

    def _measure(self) -> float | None:
        if self._method is None:
            return None
        if self._method == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device) / 2**20
        elif self._method == "cpu-proc":
            peak = _status_mib("VmHWM")
            if peak is None:
                return None
        else:
            peak = _maxrss_mib()
        return max(0.0, peak - self._base)


__all__ = ["KINDS", "PeakMemory"]
