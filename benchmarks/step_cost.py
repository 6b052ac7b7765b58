"""Cost of one training step on the NYUv2 model: RepMTL beside EW, LibMTL's gradient methods and a naive
Rep-MTL, side by side in one run, on the CPU or a GPU, in float32 or mixed precision.

Model: the NYUv2 command's (``libmtl_repmtl.models.resnet``): dilated ResNet-50 encoder (output stride 8) with
three DeepLabV3 ASPP heads (13 / 1 / 3 outputs), random initialisation (``--encoder tiny``: the same structure
with few channels, for smoke runs); input 96 x 128, batch 2 (``--size H W``, ``--batch``); Adam.
Losses as the NYUv2 trainer's (CE with ignore, L1 on valid depth, 1 - cosine on valid normals) on random targets.

Methods (``--methods``, comma-separated): ``EW``; ``logEW`` (RepMTL with both lambdas 0: EW on log losses);
``RepMTL`` (its defaults); ``RepMTL-paper`` (the paper's numbers: both lambdas 0.9, tau 0.1); ``RepMTL+HPS``
(LibMTL's HPS with ``rep_grad``); ``naive``; LibMTL's weightings (``MGDA``, ``PCGrad``, ``GradVac``, ``CAGrad``,
``IMTL``, ``GradNorm``, ``GradDrop``, ``UW``, ``DWA``, ``GLS``, ``RLW``); ``Nash_MTL``, ``FairGrad``, ``DB_MTL``
(LibMTL's git version) where the installed LibMTL has them: otherwise their row says skipped and why.
``NAME@bf16`` runs the forward pass and the losses under bfloat16 autocast; ``NAME@fp16`` under float16
autocast with a GradScaler (``libmtl_repmtl.training.amp.scaled_backward``); fp16 needs CUDA and is skipped
with the reason on the CPU. Ratios are taken against EW (and RepMTL) at the same precision.

"naive" = the formulas taken literally: one saliency pass per task, every C x C affinity matrix formed, and
the representation gradient pushed into the encoder once per task (LibMTL 1.1.5's per-task representation).

    python benchmarks/step_cost.py                      # all methods, CPU, writes benchmarks/results/step_cost.md
    python benchmarks/step_cost.py --methods EW,RepMTL --steps 3 --out /tmp/x.md
    python benchmarks/step_cost.py --device cuda --size 288 384 --batch 8 --one-process \\
        --methods EW,RepMTL,EW@bf16,RepMTL@bf16,EW@fp16,RepMTL@fp16 --out /tmp/gpu.md --json /tmp/gpu.json

Time: median over ``--steps`` timed steps after ``--warmup`` steps. Memory: the step's peak memory above what
the process held before its first step (CUDA: ``max_memory_allocated``; CPU: peak resident set size, reset
through ``/proc/self/clear_refs``), which includes the optimiser state created in the first step. By default
each method runs in its own process. ``--one-process`` measures them one after another in one worker process
(on CUDA the peak statistics are reset and the cache emptied before each method; on the CPU the allocator keeps
what an earlier method freed, so memory figures are only indicative there); a method that kills the worker is
recorded as failed and the others continue in a new worker. The FLOP floor is counted on the meta device.
"""

from __future__ import annotations

import argparse
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
from _step_model import (  # noqa: E402
    DEFAULT_METHODS,
    GRADIENT_METHODS,
    ROW_PREFIX,
    flop_floor,
    parse_spec,
    worker,
)


# ----------------------------------------------------------------------------------------- parent
def _worker_command(specs: list[str], args: argparse.Namespace) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--worker", ",".join(specs), "--steps", str(args.steps),
            "--warmup", str(args.warmup), "--device", args.device, "--threads", str(args.threads),
            "--size", str(args.size[0]), str(args.size[1]), "--batch", str(args.batch), "--encoder", args.encoder]


def _report(row: dict[str, Any], seconds: float) -> None:
    if "error" in row:
        print(f"{row['method']:16s} FAILED: {' '.join(row['error'])}", file=sys.stderr, flush=True)
    elif "skipped" in row:
        print(f"{row['method']:16s} skipped: {row['skipped']}", flush=True)
    else:
        print(f"{row['method']:16s} {row['median_s']:.3f} s/step  peak {row['peak_bytes'] / 2**20:8.1f} MiB"
              f"  ({seconds:.0f} s)", flush=True)


def run_group(specs: list[str], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Measure ``specs`` in worker processes, one after another in the same process while it lives; a method
    whose worker dies (a crash, the OOM killer) is recorded as failed and the rest go to a new worker."""
    rows: list[dict[str, Any]] = []
    pending = list(specs)
    while pending:
        t0 = time.perf_counter()
        proc = subprocess.Popen(_worker_command(pending, args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=ROOT)
        got = 0
        assert proc.stdout is not None
        for line in proc.stdout:  # rows arrive as each method finishes
            if line.startswith(ROW_PREFIX):
                rows.append(json.loads(line[len(ROW_PREFIX):]))
                _report(rows[-1], time.perf_counter() - t0)
                got, t0 = got + 1, time.perf_counter()
        stderr = proc.stderr.read() if proc.stderr else ""
        code = proc.wait()
        pending = pending[got:]
        if pending:  # the worker died inside pending[0]
            print(f"{pending[0]}: worker exited with status {code}\n{stderr[-3000:]}", file=sys.stderr)
            last = stderr.strip().splitlines()[-1:] or [f"worker exited with status {code}"]
            rows.append({"method": pending[0], "error": last})
            pending = pending[1:]
    return rows


def run_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every method of ``args.methods``: in one worker (``--one-process``) or one worker each."""
    groups = [args.methods] if args.one_process else [[m] for m in args.methods]
    return [row for group in groups for row in run_group(group, args)]


MODELS = {"resnet50": "dilated ResNet-50 + 3 DeepLabV3 ASPP heads",
          "tiny": "the tiny variant of the NYUv2 model (dilated Bottleneck stages, narrow ASPP heads)"}


def _ratio(a: float, b: float | None) -> str:
    return f"{a / b:.2f}" if b else ""


def _row_line(r: dict[str, Any], ok: dict[str, dict[str, Any]], with_fp32: bool) -> str:
    if "error" in r or "skipped" in r:
        what = f"failed: {' '.join(r['error'])}" if "error" in r else f"skipped: {r['skipped']}"
        return f"| {r['method']} | {what} |" + " |" * (5 + with_fp32)
    suffix = "" if r["amp"] == "none" else f"@{r['amp']}"
    ew, rep, ew32 = ok.get("EW" + suffix), ok.get("RepMTL" + suffix), ok.get("EW")
    t, m = r["median_s"], r["peak_bytes"]
    cells = [r["method"], f"{t:.3f}", _ratio(t, ew and ew["median_s"]), _ratio(t, rep and rep["median_s"]),
             f"{m / 2**20:.0f}", _ratio(m, ew and ew["peak_bytes"])]
    if with_fp32:
        cells.append(_ratio(t, ew32 and ew32["median_s"]))
    return "| " + " | ".join(cells) + " |"


def _targets(ok: dict[str, dict[str, Any]], floor: dict[str, float] | None) -> list[str]:
    ew, rep = ok.get("EW"), ok.get("RepMTL")
    if not (ew and rep):
        return []
    lines = ["", "Targets (issue 3):", "",
             f"- RepMTL / EW step time: {rep['median_s'] / ew['median_s']:.2f} (target <= 1.6)"]
    if floor:
        lines.append(
            f"- floor of any exact Rep-MTL step in FLOPs, (3E + 6H) / (3E + 3H): {floor['floor_ratio']:.3f} "
            f"(forward FLOPs counted by FlopCounterMode: encoder E = {floor['encoder_flops']:.3g}, "
            f"heads H = {floor['heads_flops']:.3g}; see docs/method.md, 'Cost')")
    lines.append(f"- RepMTL / EW peak memory: {rep['peak_bytes'] / ew['peak_bytes']:.2f} (target <= 1.3)")
    grad = [ok[m] for m in GRADIENT_METHODS if m in ok]
    if grad:
        fastest = min(grad, key=lambda r: r["median_s"])
        lines.append(f"- fastest gradient-manipulation method: {fastest['method']} at "
                     f"{fastest['median_s'] / rep['median_s']:.2f} x RepMTL's time "
                     f"(RepMTL faster than all {len(grad)}: {all(r['median_s'] > rep['median_s'] for r in grad)})")
    if "naive" in ok:
        lines.append(f"- naive / RepMTL step time: {ok['naive']['median_s'] / rep['median_s']:.2f} "
                     "(target >= 2.5)")
    return lines


def table(rows: list[dict[str, Any]], args: argparse.Namespace, wall: float,
          floor: dict[str, float] | None = None) -> str:
    ok = {r["method"]: r for r in rows if "median_s" in r}
    cuda = args.device.startswith("cuda")
    device = next((r["device_name"] for r in rows if "device_name" in r), args.device)
    with_fp32 = any(r.get("amp", "none") != "none" for r in ok.values())
    isolation = "one worker process for all methods" if args.one_process else "one process per method"
    header = "| method | s / step | x EW time | x RepMTL time | peak MiB | x EW memory |"
    lines = [
        "# One training step on the NYUv2 model",
        "",
        f"Command: `python benchmarks/step_cost.py {' '.join(sys.argv[1:])}`".rstrip(),
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
        f"{args.threads}, device {args.device} ({device}); torch {_torch_version()}; {args.steps} timed steps "
        f"after {args.warmup} warm-up steps, median; {isolation}; wall time {wall:.0f} s.",
        f"Model: {MODELS[args.encoder]}, input {args.size[0]} x {args.size[1]}, batch "
        f"{args.batch}. Memory: peak above the pre-step level "
        f"({'CUDA max_memory_allocated' if cuda else 'peak RSS, CPU'}). NAME@bf16 / NAME@fp16: bfloat16 autocast / "
        "float16 autocast with a GradScaler; ratios against EW and RepMTL at the same precision.",
        "",
        header + " x fp32 EW time |" * with_fp32,
        "|---|---|---|---|---|---|" + "---|" * with_fp32,
        *(_row_line(r, ok, with_fp32) for r in rows),
    ]
    if floor:
        lines += ["", f"FLOP floor of an exact Rep-MTL step: {floor['floor_ratio']:.3f} x EW's FLOPs "
                      "(compare with the x EW time of the RepMTL rows)."]
    return "\n".join(lines + _targets(ok, floor)) + "\n"


def _torch_version() -> str:
    import torch

    return torch.__version__


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", type=lambda s: [m for m in s.split(",") if m], default=DEFAULT_METHODS,
                   help="comma-separated: NAME or NAME@bf16 / NAME@fp16")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--size", type=int, nargs=2, default=(96, 128), metavar=("H", "W"))
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--encoder", choices=("resnet50", "tiny"), default="resnet50",
                   help="the NYUv2 model (resnet50) or its tiny variant (same structure, few channels: smoke runs)")
    p.add_argument("--one-process", "--one_process", dest="one_process", action="store_true",
                   help="measure every method in one worker process (CUDA: peak memory reset per method)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "step_cost.md")
    p.add_argument("--json", type=Path, default=None, help="also write the rows and the FLOP floor as JSON")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    if args.worker:
        for row in worker(args.worker.split(","), args):
            print(ROW_PREFIX + json.dumps(row), flush=True)
        return 0
    try:
        for spec in args.methods:
            parse_spec(spec)
    except ValueError as exc:
        p.error(str(exc))
    if args.steps < 1 or args.warmup < 0 or args.batch < 1 or min(args.size) < 1:
        p.error("--steps, --batch and --size must be positive and --warmup not negative")
    from libmtl_repmtl.training.io import atomic_write_json, atomic_write_text

    t0 = time.perf_counter()
    rows = run_all(args)
    floor = flop_floor(tuple(args.size), args.batch, args.encoder)
    text = table(rows, args, time.perf_counter() - t0, floor)
    atomic_write_text(args.out, text)
    if args.json:
        atomic_write_json(args.json, {"command": ["benchmarks/step_cost.py", *sys.argv[1:]], "device": args.device,
                                      "size": list(args.size), "batch": args.batch, "encoder": args.encoder,
                                      "steps": args.steps, "warmup": args.warmup, "one_process": args.one_process,
                                      "floor": floor, "rows": rows})
    print(text)
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
