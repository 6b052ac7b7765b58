"""A minimal progress display with ETA (stderr, throttled; off when stderr is not a terminal)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _fmt_seconds(s: float) -> str:
    s = int(max(s, 0))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m:02d}:{sec:02d}"


class Progress:
    """``desc  37/120 [ 30%] 00:12<00:27`` on one stderr line, redrawn at most every ``interval`` seconds.

    Args:
        total: number of steps.
        desc: label.
        enabled: ``None`` = on only when ``stream`` is a terminal.
        interval: minimum seconds between redraws.
        stream: where to draw (default ``sys.stderr``).
    """

    def __init__(self, total: int, desc: str = "", enabled: bool | None = None, interval: float = 0.5,
                 stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        if enabled is None:
            enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = enabled and total > 0
        self.total, self.desc, self.interval = int(total), desc, float(interval)
        self.n = 0
        self.start = time.perf_counter()
        self._last = 0.0
        self._drawn = False

    def update(self, n: int = 1) -> None:
        """Advance by ``n`` steps (redraw if the throttle allows)."""
        self.n += n
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._last >= self.interval or self.n >= self.total:
            self._last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = now - self.start
        eta = elapsed / self.n * (self.total - self.n) if self.n else 0.0
        pct = 100.0 * self.n / self.total
        self.stream.write(f"\r{self.desc} {self.n}/{self.total} [{pct:3.0f}%] {_fmt_seconds(elapsed)}"
                          f"<{_fmt_seconds(eta)}  ")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Erase the line (so the per-epoch log line starts clean)."""
        if self.enabled and self._drawn:
            self.stream.write("\r" + " " * 60 + "\r")
            self.stream.flush()


__all__ = ["Progress"]
