"""The training progress display: a ``tqdm`` bar with ETA on stderr (off when stderr is not a terminal)."""

from __future__ import annotations

import sys
from typing import TextIO

from tqdm import tqdm


class Progress:
    """``desc:  31%|###      | 37/120 [00:12<00:27, 3.1it/s]`` on one stderr line (``tqdm``), erased at the end.

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
        self.enabled = bool(enabled) and total > 0
        self.total = int(total)
        self._bar = tqdm(total=self.total, desc=desc, file=self.stream, mininterval=float(interval), leave=False,
                         disable=not self.enabled, dynamic_ncols=True)

    def update(self, n: int = 1) -> None:
        """Advance by ``n`` steps (redrawn when the throttle allows)."""
        self._bar.update(n)

    @property
    def n(self) -> int:
        """Steps done."""
        return int(self._bar.n)

    def close(self) -> None:
        """Erase the bar (so the per-epoch log line starts clean)."""
        self._bar.close()


__all__ = ["Progress"]
