"""Cost of one training step on the NYUv2 model: RepMTL beside EW, LibMTL's gradient methods and a naive
Rep-MTL, each method in its own process, side by side in one run.

Model: dilated ResNet-50 encoder (output stride 8) with three DeepLabV3 ASPP heads (13 / 1 / 3 outputs),
built from torchvision, random initialisation; input 96 x 128, batch 2; Adam. Losses as the NYUv2
trainer's (CE with ignore, L1 on valid depth, 1 - cosine on valid normals) on random targets.

"naive" = the formulas taken literally: one saliency pass per task, every C x C affinity matrix formed, and
the representation gradient pushed into the encoder once per task (LibMTL 1.1.5's per-task representation).

    python benchmarks/step_cost.py                      # all methods, CPU, writes benchmarks/results/step_cost.md
    python benchmarks/step_cost.py --methods EW,RepMTL --steps 3 --out /tmp/x.md

Time: median over ``--steps`` timed steps after ``--warmup`` steps. Memory: the step's peak memory above what
the process held before its first step (CUDA: ``max_memory_allocated``; CPU: peak resident set size, reset
through ``/proc/self/clear_refs``), which includes the optimiser state created in the first step.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import measure_steps  # noqa: E402

#: LibMTL weightings that manipulate gradients (each needs its rep_grad setting).
GRADIENT_METHODS = {"MGDA": False, "PCGrad": False, "GradVac": False, "CAGrad": False, "IMTL": False,
                    "GradNorm": False, "GradDrop": True}
LOSS_METHODS = {"EW": False, "UW": False, "DWA": False, "GLS": False, "RLW": False}
#: name -> (weighting, architecture, rep_grad)
METHODS: dict[str, tuple[str, str, bool]] = {
    "EW": ("EW", "HPS", False),
    "RepMTL": ("RepMTL", "RepHPS", False),
    "RepMTL+HPS": ("RepMTL", "HPS", True),
    "naive": ("naive", "HPS", True),
    **{m: (m, "HPS", rg) for m, rg in GRADIENT_METHODS.items()},
    **{m: (m, "HPS", rg) for m, rg in LOSS_METHODS.items() if m != "EW"},
}
DEFAULT_METHODS = ["EW", "RepMTL", "RepMTL+HPS", "naive", *GRADIENT_METHODS, "UW", "DWA", "GLS", "RLW"]
TASKS = {"segmentation": 13, "depth": 1, "normal": 3}


# ----------------------------------------------------------------------------------------- worker
def _naive_weighting(base: type) -> type:
    import torch

    from libmtl_repmtl.core.config import LOG_EPS, RepMTLConfig
    from libmtl_repmtl.core.reference import materialised_csa, materialised_tsr

    class NaiveRepMTL(base):  # type: ignore[misc, valid-type]
        def backward(self, losses: torch.Tensor, **kwargs: Any) -> Any:
            cfg = RepMTLConfig.from_weight_args(kwargs)
            objectives = [torch.log(losses[t] + LOG_EPS) for t in range(self.task_num)]
            copies = [self.rep_tasks[t] for t in self.task_name]
            sal = [torch.autograd.grad(objectives[t], copies[t], create_graph=True)[0]
                   for t in range(self.task_num)]  # one pass per task
            total = (sum(objectives) + cfg.lambda_tsr * materialised_tsr(sal)
                     + cfg.lambda_csa * materialised_csa(sal, cfg.tau))
            total.backward()
            reps = self.rep if isinstance(self.rep, dict) else {t: self.rep for t in self.task_name}
            for tn, task in enumerate(self.task_name):  # one encoder backward per task
                reps[task].backward(copies[tn].grad, retain_graph=tn + 1 < self.task_num)
            return [1.0] * self.task_num

    return NaiveRepMTL


def _encoder_and_heads() -> tuple[Any, Any]:
    """The NYUv2 model's parts: a dilated ResNet-50 encoder class and the three ASPP heads."""
    import torch
    from torch import nn
    from torchvision.models import resnet50
    from torchvision.models.segmentation.deeplabv3 import DeepLabHead

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            r = resnet50(weights=None, replace_stride_with_dilation=[False, True, True])
            self.body = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1, r.layer2, r.layer3, r.layer4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x)

    return Encoder, nn.ModuleDict({t: DeepLabHead(2048, c) for t, c in TASKS.items()})


def flop_floor(size: tuple[int, int], batch: int) -> dict[str, float]:
    """Forward FLOPs of the encoder (``E``) and of all heads (``H``), counted by torch's ``FlopCounterMode``,
    and the cost floors they imply.

    A training step of EW costs ``3 (E + H)`` (forward, input and weight gradients). Any exact Rep-MTL step
    costs at least ``3 E + 6 H``: the encoder as in EW; in the heads the forward, the saliency pass (input
    gradients), one backward through the forward graph (input and weight gradients: the first-order term
    plus the regularisers' path through BatchNorm and the loss curvature) and the double backward through the
    saliency graph (one convolution for the output-gradient direction, one weight gradient per layer).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    encoder_class, heads = _encoder_and_heads()
    encoder = encoder_class()
    x = torch.randn(batch, 3, *size)
    with torch.no_grad():
        with FlopCounterMode(display=False) as fc:
            z = encoder(x)
        e = float(fc.get_total_flops())
        with FlopCounterMode(display=False) as fc:
            for head in heads.values():
                head(z)
        h = float(fc.get_total_flops())
    return {"encoder_flops": e, "heads_flops": h, "ew_step_flops": 3 * (e + h),
            "repmtl_floor_flops": 3 * e + 6 * h, "floor_ratio": (3 * e + 6 * h) / (3 * (e + h))}


def worker(method: str, steps: int, warmup: int, device_name: str, threads: int, size: tuple[int, int],
           batch: int) -> dict[str, Any]:
    import numpy as np
    import torch
    import torch.nn.functional as F

    import libmtl_repmtl

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    libmtl_repmtl.register()  # compatibility patches for LibMTL 1.1.5 + plugin names
    import LibMTL

    device = torch.device(device_name)
    wname, aname, rep_grad = METHODS[method]
    base_w = LibMTL.weighting.__dict__["EW" if wname == "naive" else wname]
    weighting = _naive_weighting(base_w) if wname == "naive" else base_w
    architecture = LibMTL.architecture.__dict__[aname]
    encoder_class, heads = _encoder_and_heads()

    class MTLmodel(architecture, weighting):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__(list(TASKS), encoder_class, heads, rep_grad, False, device)
            self.init_param()

    model = MTLmodel().to(device)
    model.train()
    model.epoch = 2  # past the warm-up epochs of GradNorm / DWA
    model.train_loss_buffer = np.ones((len(TASKS), 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=1e-5)
    g = torch.Generator().manual_seed(0)
    h, w = size
    x = torch.randn(batch, 3, h, w, generator=g).to(device)
    seg = torch.randint(-1, 13, (batch, h, w), generator=g).to(device)
    depth = torch.rand(batch, 1, h, w, generator=g).to(device)
    normal = F.normalize(torch.randn(batch, 3, h, w, generator=g), dim=1).to(device)
    weight_args: dict[str, Any] = {"T": 2.0, "alpha": 1.5, "mgda_gn": "none", "beta": 0.5, "leak": 0.0,
                                   "calpha": 0.5, "rescale": 1, "dist": "Normal"}

    def step() -> None:
        preds = model(x)
        preds = {t: F.interpolate(p, size=(h, w), mode="bilinear", align_corners=True) for t, p in preds.items()}
        losses = torch.zeros(len(TASKS), device=device)
        losses[0] = F.cross_entropy(preds["segmentation"], seg, ignore_index=-1)
        valid = (depth != 0).float()
        losses[1] = ((preds["depth"] - depth).abs() * valid).sum() / valid.sum()
        n = F.normalize(preds["normal"], dim=1)
        losses[2] = (1 - (n * normal).sum(dim=1)).mean()
        optimizer.zero_grad()
        model.backward(losses, **weight_args)
        optimizer.step()

    return {"method": method, **measure_steps(step, device, steps, warmup)}


# ----------------------------------------------------------------------------------------- parent
def run_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for method in args.methods:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", method, "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--device", args.device, "--threads", str(args.threads),
               "--size", str(args.size[0]), str(args.size[1]), "--batch", str(args.batch)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            print(f"{method}: FAILED\n{proc.stderr[-3000:]}", file=sys.stderr)
            rows.append({"method": method, "error": proc.stderr.strip().splitlines()[-1:]})
            continue
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{method:12s} {row['median_s']:.3f} s/step  peak {row['peak_bytes'] / 2**20:8.1f} MiB"
              f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    return rows


def table(rows: list[dict[str, Any]], args: argparse.Namespace, wall: float,
          floor: dict[str, float] | None = None) -> str:
    ok = {r["method"]: r for r in rows if "error" not in r}
    ew = ok.get("EW")
    rep = ok.get("RepMTL")
    lines = [
        "# One training step on the NYUv2 model",
        "",
        f"Command: `python benchmarks/step_cost.py {' '.join(sys.argv[1:])}`".rstrip(),
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
        f"{args.threads}, device {args.device}; torch {_torch_version()}; {args.steps} timed steps after "
        f"{args.warmup} warm-up steps, median; wall time {wall:.0f} s.",
        f"Model: dilated ResNet-50 + 3 DeepLabV3 ASPP heads, input {args.size[0]} x {args.size[1]}, batch "
        f"{args.batch}. Memory: peak above the pre-step level "
        f"({'CUDA max_memory_allocated' if args.device.startswith('cuda') else 'peak RSS, CPU'}).",
        "",
        "| method | s / step | x EW time | x RepMTL time | peak MiB | x EW memory |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['method']} | failed: {' '.join(r['error'])} | | | | |")
            continue
        t, m = r["median_s"], r["peak_bytes"]
        lines.append(
            f"| {r['method']} | {t:.3f} | {t / ew['median_s']:.2f} | {t / rep['median_s']:.2f} | "
            f"{m / 2**20:.0f} | {m / ew['peak_bytes']:.2f} |" if ew and rep else f"| {r['method']} | {t:.3f} |||||"
        )
    if ew and rep:
        grad = [ok[m] for m in GRADIENT_METHODS if m in ok]
        lines += ["", "Targets (issue 3):", ""]
        lines.append(f"- RepMTL / EW step time: {rep['median_s'] / ew['median_s']:.2f} (target <= 1.6)")
        if floor:
            lines.append(
                f"- floor of any exact Rep-MTL step in FLOPs, (3E + 6H) / (3E + 3H): {floor['floor_ratio']:.3f} "
                f"(forward FLOPs counted by FlopCounterMode: encoder E = {floor['encoder_flops']:.3g}, "
                f"heads H = {floor['heads_flops']:.3g}; see docs/method.md, 'Cost')")
        lines.append(f"- RepMTL / EW peak memory: {rep['peak_bytes'] / ew['peak_bytes']:.2f} (target <= 1.3)")
        if grad:
            fastest = min(grad, key=lambda r: r["median_s"])
            lines.append(f"- fastest gradient-manipulation method: {fastest['method']} at "
                         f"{fastest['median_s'] / rep['median_s']:.2f} x RepMTL's time "
                         f"(RepMTL faster than all {len(grad)}: {all(r['median_s'] > rep['median_s'] for r in grad)})")
        if "naive" in ok:
            lines.append(f"- naive / RepMTL step time: {ok['naive']['median_s'] / rep['median_s']:.2f} "
                         "(target >= 2.5)")
    return "\n".join(lines) + "\n"


def _torch_version() -> str:
    import torch

    return torch.__version__


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", type=lambda s: s.split(","), default=DEFAULT_METHODS)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--size", type=int, nargs=2, default=(96, 128))
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "step_cost.md")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        row = worker(args.worker, args.steps, args.warmup, args.device, args.threads, tuple(args.size), args.batch)
        print(json.dumps(row))
        return 0
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        p.error(f"unknown method(s) {unknown}; available: {', '.join(METHODS)}")
    t0 = time.perf_counter()
    rows = run_all(args)
    floor = flop_floor(tuple(args.size), args.batch)
    text = table(rows, args, time.perf_counter() - t0, floor)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=args.out.parent, delete=False, suffix=".tmp") as fh:
        fh.write(text)
        tmp = fh.name
    os.replace(tmp, args.out)
    print(text)
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
