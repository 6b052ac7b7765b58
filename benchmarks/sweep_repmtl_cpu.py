"""Full-length CPU-suite runs of RepMTL under a few hyper-parameter settings (not the whole suite).

Each setting trains the CPU suite's model through the trainer (``run_experiment``: same data, model,
optimiser, epochs and model selection as ``--suite cpu``) on the chosen benchmarks and seeds, and
reports the test accuracy at the best validation epoch and Δp_task against the committed STL means of
``benchmarks/results/cpu-previous/summary.csv``.

    OMP_NUM_THREADS=2 PYTHONPATH=. python benchmarks/sweep_repmtl_cpu.py --out /tmp/sweep \\
        --settings default lam0.1:tsr=0.1,csa=0.1 tau1:tau=1 lam0:tsr=0,csa=0

Settings are ``name:key=value,...`` with keys ``tsr``, ``csa``, ``tau``, ``log`` (as in
``benchmarks/diagnose_learning.py``). Runs already complete under ``--out`` are read back, not redone.
Prints a Markdown table (mean ± std over seeds) and writes it to ``--out/sweep.md``.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Any

import numpy as np

from libmtl_repmtl.benchmarks import get
from libmtl_repmtl.harness.report import delta_p
from libmtl_repmtl.harness.runs import is_complete
from libmtl_repmtl.training.experiment import run_experiment
from libmtl_repmtl.training.io import atomic_write_text
from libmtl_repmtl.training.options import split_grid_options
from libmtl_repmtl.training.results import read_results

ROOT = Path(__file__).resolve().parents[1]
KEYS = {"tsr": "RepMTL_lambda_tsr", "csa": "RepMTL_lambda_csa", "tau": "RepMTL_tau", "log": "RepMTL_log_loss"}


def parse(text: str) -> tuple[str, dict[str, Any]]:
    name, _, rest = text.partition(":")
    args: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        args[KEYS[key.strip()]] = bool(int(value)) if key.strip() == "log" else float(value)
    return name, args


def stl_means(path: Path) -> dict[str, dict[str, dict[str, float]]]:
    """benchmark -> task -> {"Acc": mean} of the committed STL rows."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    with open(path) as f:
        for row in csv.DictReader(f):
            if row["method"] != "STL":
                continue
            out[row["benchmark"]] = {k[: -len("/Acc_mean")]: {"Acc": float(v)} for k, v in row.items()
                                     if k.endswith("/Acc_mean") and v}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--settings", nargs="+", default=["default"])
    parser.add_argument("--benchmarks", nargs="+", default=["multimnist", "digits"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="default: the suite's (8)")
    parser.add_argument("--option", nargs="*", default=[],
                        help="runner options key=value (ints), e.g. n_train=3000 batch_size=64")
    parser.add_argument("--out", required=True)
    parser.add_argument("--baseline", default=str(ROOT / "benchmarks/results/cpu-previous/summary.csv"))
    args = parser.parse_args(argv)
    stl = stl_means(Path(args.baseline))
    given = {k: int(v) for k, _, v in (o.partition("=") for o in args.option)}
    per_bench = split_grid_options([get(b) for b in args.benchmarks], {get(b).name: given for b in args.benchmarks})
    rows = []
    for text in args.settings:
        name, wargs = parse(text)
        for bench in args.benchmarks:
            accs, dps, losses = [], [], []
            for seed in args.seeds:
                run_dir = Path(args.out) / bench / name / f"seed{seed}"
                if not is_complete(run_dir, args.epochs):
                    run_experiment(bench, "RepMTL", "RepHPS", None, str(run_dir), seed=seed, epochs=args.epochs,
                                   weight_args=wargs, device="cpu", verbose=False, **per_bench[get(bench).name])
                res = read_results(run_dir / "results.json")
                test = res.test_at_best
                accs.append([test[t]["Acc"] for t in res.tasks])
                dps.append(delta_p(test, stl[bench], res.higher_better)[0])
                losses.append(float(np.mean(list(res.epochs[-1].train_loss.values()))))
                print(f"{name} {bench} seed {seed}: acc {[round(a, 4) for a in accs[-1]]} "
                      f"Δp_task {dps[-1]:+.2f} final train loss {losses[-1]:.3f}", flush=True)
            a = np.array(accs)
            rows.append((name, bench, wargs, res.tasks, a.mean(0), a.std(0), np.mean(dps), np.std(dps),
                         np.mean(losses)))
    lines = ["| setting | weight args | benchmark | test acc per task (mean ± std) | Δp_task (%) | "
             "final train loss |", "|---|---|---|---|---|---|"]
    for name, bench, wargs, tasks, m, s, dp, dps_, loss in rows:
        acc = ", ".join(f"{t} {mu:.3f} ± {sd:.3f}" for t, mu, sd in zip(tasks, m, s))
        wa = ", ".join(f"{k.removeprefix('RepMTL_')}={v}" for k, v in wargs.items()) or "defaults"
        lines.append(f"| {name} | {wa} | {bench} | {acc} | {dp:+.2f} ± {dps_:.2f} | {loss:.3f} |")
    table = "\n".join(lines)
    print(table)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(args.out) / "sweep.md", table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
