"""How one training step's time and memory grow with the number of tasks, the channel count and the spatial
size of the shared representation: RepMTL beside EW and LibMTL's gradient-manipulation methods.

Synthetic model (so the sweep runs on a laptop CPU): encoder ``Conv3x3(3 -> C) + ReLU + Conv1x1(C -> C)`` at the
input's resolution (representation ``B x C x S x S``), one head per task ``Conv1x1(C -> 16) + ReLU +
Conv1x1(16 -> 1)``, MSE against random targets; Adam. One axis varies at a time around the base configuration;
each (configuration, method) runs in its own process.

    python benchmarks/scaling.py                                # default sweep, CPU, ~10 min on 2 cores
    python benchmarks/scaling.py --tasks 2,4 --channels 16 --sizes 4 --methods EW,RepMTL --steps 2 --out-dir /tmp/s

Time: median over ``--steps`` timed steps after ``--warmup`` steps. Memory: the step's peak above the level before
the first step (CUDA: ``max_memory_allocated``; CPU: peak RSS, reset through ``/proc/self/clear_refs``), which
includes the optimiser state. A method that fails (e.g. a LibMTL limitation) is reported in the table.
Writes ``<out-dir>/scaling.md`` and ``<out-dir>/scaling.png`` atomically.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import measure_steps  # noqa: E402

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: method -> (weighting, architecture, rep_grad)
METHODS: dict[str, tuple[str, str, bool]] = {
    "EW": ("EW", "HPS", False),
    "RepMTL": ("RepMTL", "RepHPS", False),
    "MGDA": ("MGDA", "HPS", False),
    "PCGrad": ("PCGrad", "HPS", False),
    "CAGrad": ("CAGrad", "HPS", False),
    "GradVac": ("GradVac", "HPS", False),
    "IMTL": ("IMTL", "HPS", False),
    "GradNorm": ("GradNorm", "HPS", False),
}
DEFAULT_METHODS = ["EW", "RepMTL", "MGDA", "PCGrad", "CAGrad"]
AXES = ("tasks", "channels", "size")


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


# ----------------------------------------------------------------------------------------- worker
def worker(method: str, tasks: int, channels: int, size: int, batch: int, steps: int, warmup: int,
           device_name: str, threads: int) -> dict[str, Any]:
    """One configuration in this process: ``{"median_s", "times_s", "peak_bytes"}``."""
    import numpy as np
    import torch
    from torch import nn

    import libmtl_repmtl

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    if hasattr(libmtl_repmtl, "register"):
        libmtl_repmtl.register()  # LibMTL 1.1.5 compatibility patches + plugin names
    from libmtl_repmtl.libmtl.bases import LibMTL

    device = torch.device(device_name)
    wname, aname, rep_grad = METHODS[method]
    if wname == "RepMTL":
        from libmtl_repmtl.libmtl.weighting import RepMTL as weighting
    else:
        weighting = LibMTL.weighting.__dict__[wname]
    if aname == "RepHPS":
        from libmtl_repmtl.libmtl.architecture import RepHPS as architecture
    else:
        architecture = LibMTL.architecture.__dict__[aname]
    names = [f"t{i}" for i in range(tasks)]

    def encoder() -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.ReLU(), nn.Conv2d(channels, channels, 1))

    class MTLmodel(architecture, weighting):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            heads = nn.ModuleDict({t: nn.Sequential(nn.Conv2d(channels, 16, 1), nn.ReLU(), nn.Conv2d(16, 1, 1))
                                   for t in names})
            super().__init__(names, encoder, heads, rep_grad, False, device)
            self.init_param()

    model = MTLmodel().to(device)
    model.train()
    model.epoch = 2  # past GradNorm's / DWA's warm-up epochs
    model.train_loss_buffer = np.ones((tasks, 3))
    for p in model.get_share_params():  # LibMTL's gradient methods write into p.grad.data
        p.grad = torch.zeros_like(p)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=g).to(device)
    ys = [torch.randn(batch, 1, size, size, generator=g).to(device) for _ in names]
    weight_args: dict[str, Any] = {"mgda_gn": "none", "calpha": 0.5, "rescale": 1, "GradVac_beta": 0.5,
                                   "GradVac_group_type": 0, "alpha": 1.5}

    def step() -> None:
        preds = model(x)
        losses = torch.stack([(preds[t] - y).pow(2).mean() for t, y in zip(names, ys)])
        optimizer.zero_grad(set_to_none=False)
        model.backward(losses, **weight_args)
        optimizer.step()

    return measure_steps(step, device, steps, warmup)


# ----------------------------------------------------------------------------------------- parent
def configurations(args: argparse.Namespace) -> list[tuple[str, dict[str, int]]]:
    """``(axis, {"tasks", "channels", "size"})`` for every point of the sweep (one axis varied at a time)."""
    base = {"tasks": args.base_tasks, "channels": args.base_channels, "size": args.base_size}
    out = []
    for axis, values in (("tasks", args.tasks), ("channels", args.channels), ("size", args.sizes)):
        for v in values:
            out.append((axis, {**base, axis: v}))
    return out


def run_one(method: str, cfg: dict[str, int], args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", method, "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--device", args.device, "--threads", str(args.threads),
           "--batch", str(args.batch), "--base-tasks", str(cfg["tasks"]), "--base-channels", str(cfg["channels"]),
           "--base-size", str(cfg["size"])]
    row: dict[str, Any] = {"method": method, **cfg}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {**row, "error": f"timed out after {args.timeout} s"}
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        return {**row, "error": (lines[-1] if lines else f"exit code {proc.returncode}")[:160]}
    return {**row, **json.loads(proc.stdout.strip().splitlines()[-1])}


def table(rows: list[dict[str, Any]], args: argparse.Namespace, wall: float, command: str) -> str:
    import torch

    lines = [
        "# Step cost versus tasks, channels and spatial size",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
        f"{args.threads}, device {args.device}; torch {torch.__version__}; python {platform.python_version()}; "
        f"batch {args.batch}; {args.steps} timed steps after {args.warmup} warm-up step(s), median; wall time "
        f"{wall:.0f} s; 1-min load average at start {args.load_start:.1f}, at end {os.getloadavg()[0]:.1f} "
        "(other processes on the machine inflate and scatter the times).",
        f"Base configuration: {args.base_tasks} tasks, {args.base_channels} channels, "
        f"{args.base_size} x {args.base_size} representation; one axis varied at a time. Model: "
        "Conv3x3(3->C)+ReLU+Conv1x1(C->C) encoder, Conv1x1(C->16)+ReLU+Conv1x1(16->1) heads, MSE, Adam.",
        "Memory: peak above the pre-step level ("
        + ("CUDA max_memory_allocated" if args.device.startswith("cuda")
           else "peak RSS on the CPU; noisy below a few MiB")
        + ").",
        "",
    ]
    for axis in AXES:
        sub = [r for r in rows if r["axis"] == axis]
        if not sub:
            continue
        lines += [f"## varying {axis}", "", f"| {axis} | method | ms / step | x EW time | peak MiB | x EW memory |",
                  "|---|---|---|---|---|---|"]
        for r in sub:
            ew = next((e for e in sub if e["method"] == "EW" and e[axis] == r[axis] and "error" not in e), None)
            if "error" in r:
                lines.append(f"| {r[axis]} | {r['method']} | failed: {r['error'].replace('|', '/')} | | | |")
                continue
            t, m = r["median_s"], r["peak_bytes"]
            rt = f"{t / ew['median_s']:.2f}" if ew else ""
            rm = f"{m / ew['peak_bytes']:.2f}" if ew and ew["peak_bytes"] > 0 else ""
            lines.append(f"| {r[axis]} | {r['method']} | {t * 1e3:.1f} | {rt} | {m / 2**20:.1f} | {rm} |")
        lines.append("")
    return "\n".join(lines)


def plot_png(rows: list[dict[str, Any]], methods: list[str]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for col, axis in enumerate(AXES):
        for method in methods:
            pts = sorted((r[axis], r["median_s"] * 1e3, r["peak_bytes"] / 2**20) for r in rows
                         if r["axis"] == axis and r["method"] == method and "error" not in r)
            if not pts:
                continue
            xs = [p[0] for p in pts]
            axes[0][col].plot(xs, [p[1] for p in pts], marker="o", label=method)
            axes[1][col].plot(xs, [max(p[2], 1e-3) for p in pts], marker="o", label=method)
        for row, ylabel in enumerate(("ms / step", "peak MiB above start")):
            ax = axes[row][col]
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel(axis)
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Step time and memory versus tasks / channels / spatial size")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", type=lambda s: s.split(","), default=DEFAULT_METHODS)
    p.add_argument("--tasks", type=_ints, default=[2, 4, 8], help="task counts to sweep")
    p.add_argument("--channels", type=_ints, default=[64, 256, 1024], help="channel counts to sweep")
    p.add_argument("--sizes", type=_ints, default=[8, 16, 32], help="representation sides to sweep")
    p.add_argument("--base-tasks", type=int, default=4)
    p.add_argument("--base-channels", type=int, default=256)
    p.add_argument("--base-size", type=int, default=16)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per (configuration, method)")
    p.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        row = worker(args.worker, args.base_tasks, args.base_channels, args.base_size, args.batch, args.steps,
                     args.warmup, args.device, args.threads)
        print(json.dumps(row))
        return 0
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        p.error(f"unknown method(s) {unknown}; available: {', '.join(METHODS)}")
    if args.steps < 1 or args.warmup < 0:
        p.error("--steps must be >= 1 and --warmup >= 0")
    command = "python benchmarks/scaling.py " + " ".join(sys.argv[1:] if argv is None else argv)
    args.load_start = os.getloadavg()[0]
    t0 = time.perf_counter()
    rows = []
    seen: dict[tuple[str, int, int, int], dict[str, Any]] = {}
    for axis, cfg in configurations(args):
        for method in args.methods:
            key = (method, cfg["tasks"], cfg["channels"], cfg["size"])
            if key not in seen:  # the base configuration appears on every axis: measured once
                seen[key] = run_one(method, cfg, args)
                r = seen[key]
                status = r.get("error") or f"{r['median_s'] * 1e3:.1f} ms, {r['peak_bytes'] / 2**20:.1f} MiB"
                print(f"{axis:8s} T={cfg['tasks']} C={cfg['channels']} S={cfg['size']} {method:8s} {status}",
                      flush=True)
            rows.append({**seen[key], "axis": axis})
    from libmtl_repmtl.training.io import atomic_write, atomic_write_text

    text = table(rows, args, time.perf_counter() - t0, command)
    png = plot_png(rows, args.methods)
    atomic_write_text(args.out_dir / "scaling.md", text)
    atomic_write(args.out_dir / "scaling.png", lambda f: f.write(png))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
