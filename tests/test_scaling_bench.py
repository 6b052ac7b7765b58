"""benchmarks/scaling.py on a tiny sweep: table and plot written, failures reported instead of crashing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_tiny_sweep_writes_table_and_plot(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "scaling.py"), "--methods", "EW,RepMTL", "--tasks", "2",
           "--channels", "4", "--sizes", "4", "--base-tasks", "2", "--base-channels", "4", "--base-size", "4",
           "--batch", "2", "--steps", "1", "--warmup", "0", "--threads", "1", "--out-dir", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    md = (tmp_path / "scaling.md").read_text()
    assert "Command: `python benchmarks/scaling.py" in md and "torch" in md
    for header in ("## varying tasks", "## varying channels", "## varying size"):
        assert header in md
    assert "| 4 | RepMTL |" in md and "| 4 | EW |" in md and "failed" not in md
    png = (tmp_path / "scaling.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 1000
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_failures_are_reported_in_the_table(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import scaling
    finally:
        sys.path.pop(0)
    args = scaling.main.__globals__["argparse"].Namespace(
        threads=1, device="cpu", load_start=0.0, batch=2, steps=1, warmup=0, base_tasks=2, base_channels=4, base_size=4)
    rows = [{"axis": "tasks", "method": "EW", "tasks": 2, "channels": 4, "size": 4, "median_s": 0.01,
             "peak_bytes": 2**20},
            {"axis": "tasks", "method": "CAGrad", "tasks": 2, "channels": 4, "size": 4,
             "error": "ValueError: only 3 tasks | supported"}]
    md = scaling.table(rows, args, 1.0, "python benchmarks/scaling.py")
    assert "| 2 | CAGrad | failed: ValueError: only 3 tasks / supported |" in md
    assert scaling.plot_png(rows, ["EW", "CAGrad"]).startswith(b"\x89PNG")
