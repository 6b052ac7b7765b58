"""``OUT/summary.md`` of ``benchmarks/gpu_check.sh``, from what its parts left in ``OUT``: the command, the machine
(GPU, driver, torch, CUDA, cuDNN, LibMTL), and per part its status, key numbers and log; then the step-cost table,
the example runs, the distributed runs and the end of each failed part's log.

    python benchmarks/gpu_check_report.py OUT     # (re)writes OUT/summary.md; the script calls it after every part
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from libmtl_repmtl.training.io import atomic_write_text  # noqa: E402
from libmtl_repmtl.training.results import ResultsFileError, read_results  # noqa: E402

PARTS = ("tests", "steps", "examples", "ddp")


def read_status(out: Path, part: str) -> dict[str, str]:
    """``OUT/parts/<part>.status`` (``key=value`` lines written by the shell script); ``{"status": "not run"}``
    when the part has not run yet."""
    path = out / "parts" / f"{part}.status"
    if not path.exists():
        return {"status": "not run"}
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def results_digest(save: Path) -> dict[str, Any]:
    """What the check reads from a run folder's ``results.json`` (through the results contract), or
    ``{"unreadable": why}``; ``finite``: every epoch's training losses are finite numbers."""
    try:
        res = read_results(save / "results.json")
    except ResultsFileError as exc:
        return {"unreadable": str(exc)}
    last = res.epochs[-1] if res.epochs else None
    losses = [v for e in res.epochs for v in e.train_loss.values()]
    return {"status": res.status, "epochs_done": res.epochs_done, "epochs": [e.epoch for e in res.epochs],
            "amp": res.config.get("amp"), "world_size": res.config.get("world_size"),
            "weight_args": res.config.get("weight_args"), "seconds_per_epoch": res.seconds_per_epoch,
            "peak_memory_mb": res.peak_memory_mb, "peak_memory_kind": res.peak_memory_kind,
            "train_loss": dict(last.train_loss) if last else None,
            "repmtl_terms": sorted(last.repmtl or {}) if last else [],
            "finite": bool(losses) and all(v is not None and math.isfinite(v) for v in losses)}


def key_tests(out: Path) -> str:
    t = _json(out / "tests" / "tests.json")
    if not t:
        return "no record (tests/tests.json missing)"
    if "tests" not in t:
        return t.get("problem") or "no test report"
    failed = t["failures"] + t["errors"]
    text = (f"{t['tests'] - failed - t['skipped']} passed, {failed} failed, {t['skipped']} skipped on {t['device']} "
            f"({', '.join(t['files'])}; {len(t['files_reading_device_env'])} module(s) read the device variable)")
    if t.get("failed_ids"):
        text += "; failed: " + ", ".join(t["failed_ids"][:5])
    return text + (f"; {t['problem']}" if t.get("problem") else "")


def _ratio(rows: dict[str, Any], a: str, b: str, key: str = "median_s") -> str:
    return f"{rows[a][key] / rows[b][key]:.2f}" if a in rows and b in rows and rows[b][key] else "n/a"


def key_steps(out: Path) -> str:
    s = _json(out / "steps" / "step_cost.json")
    if not s:
        return "no record (steps/step_cost.json missing)"
    rows = {r["method"]: r for r in s["rows"] if "median_s" in r}
    parts = [f"RepMTL {_ratio(rows, 'RepMTL', 'EW')} x EW time, {_ratio(rows, 'RepMTL', 'EW', 'peak_bytes')} x EW "
             f"memory (FLOP floor {s['floor']['floor_ratio']:.3f})"]
    for amp in ("bf16", "fp16"):
        if f"RepMTL@{amp}" in rows:
            parts.append(f"{amp}: {_ratio(rows, f'RepMTL@{amp}', f'EW@{amp}')} x time, "
                         f"{_ratio(rows, f'RepMTL@{amp}', f'EW@{amp}', 'peak_bytes')} x memory; EW {amp} "
                         f"{_ratio(rows, f'EW@{amp}', 'EW')} x EW fp32 time")
    if "naive" in rows:
        parts.append(f"naive {_ratio(rows, 'naive', 'RepMTL')} x RepMTL time")
    grad = [m for m in ("MGDA", "PCGrad", "CAGrad", "GradVac", "IMTL", "Nash_MTL", "FairGrad", "DB_MTL") if m in rows]
    if grad and "RepMTL" in rows:
        fastest = min(grad, key=lambda m: rows[m]["median_s"])
        parts.append(f"fastest gradient method {fastest} at {_ratio(rows, fastest, 'RepMTL')} x RepMTL time")
    skipped = [r["method"] for r in s["rows"] if "skipped" in r]
    failed = [r["method"] for r in s["rows"] if "error" in r]
    parts.append(f"{len(rows)} measured, {len(skipped)} skipped, {len(failed)} failed"
                 + (f" ({', '.join(failed)})" if failed else ""))
    return "; ".join(parts)


def key_examples(out: Path) -> str:
    e = _json(out / "examples" / "examples.json")
    if not e:
        return "no record (examples/examples.json missing)"
    runs = [r for r in e["runs"] if "skipped" not in r]
    bad = [r for r in runs if not r.get("ok")]
    text = f"{len(runs) - len(bad)}/{len(runs)} runs passed, {len(e['runs']) - len(runs)} skipped"
    missing = [name for name in e.get("planned", []) if name not in {r["name"] for r in e["runs"]}]
    text += f", {len(missing)} not run ({', '.join(missing)})" if missing else ""
    return text + "".join(f"; {r['name']}: {r['problem']}" for r in bad[:5])


def key_ddp(out: Path) -> str:
    d = _json(out / "ddp" / "ddp.json")
    if not d:
        return "no record (ddp/ddp.json missing)"
    parts = []
    for backend, run in d["runs"].items():
        if "skipped" in run:
            parts.append(f"{backend}: skipped ({run['skipped']})")
        elif run["ok"]:
            parts.append(f"{backend}: 2 ranks trained one epoch in {run['seconds']} s")
        else:
            parts.append(f"{backend}: {run['problem']}")
    return "; ".join(parts)


KEYS = {"tests": key_tests, "steps": key_steps, "examples": key_examples, "ddp": key_ddp}


def _header(out: Path) -> list[str]:
    i = _json(out / "info.json") or {}
    total = (out / "parts" / "total").read_text().strip().split("=")[-1] if (out / "parts" / "total").exists() else ""
    gpus = ", ".join(i.get("gpus") or []) or "none"
    return ["# GPU check", "",
            f"Command: `{i.get('command', '?')}` ({i.get('mode', '?')} mode, device {i.get('device', '?')}); started "
            f"{i.get('started', '?')}" + (f", {total} s in all." if total else " (still running or stopped)."),
            f"Repository commit: {i.get('commit', '?')}.", "",
            f"- GPU: {gpus}; nvidia-smi: {i.get('nvidia_smi', '?')}; bf16 supported: {i.get('bf16_supported')}",
            f"- Python {i.get('python', '?')}, {i.get('cpu_cores', '?')} CPU cores; torch {i.get('torch', '?')}, "
            f"CUDA {i.get('cuda')}, cuDNN {i.get('cudnn')}",
            f"- LibMTL {i.get('libmtl', '?')} ({i.get('libmtl_path', '?')}); plugins {i.get('plugins', '?')}", ""]


def _example_table(out: Path) -> list[str]:
    e = _json(out / "examples" / "examples.json")
    if not e:
        return []
    lines = ["## Example runs", "", "epoch: one epoch; interrupted: stopped after the first of two epochs "
             "(LIBMTL_REPMTL_STOP_AFTER_EPOCHS=1, exit status 130 expected); resume: the same run with --resume.",
             "", "| run | kind | result | exit | s | s / epoch | peak MiB | log |", "|---" * 8 + "|"]
    for r in e["runs"]:
        if "skipped" in r:
            lines.append(f"| {r['name']} | | skipped: {r['skipped']} | | | | | |")
            continue
        res = r.get("results") or {}
        spe, mem = res.get("seconds_per_epoch"), res.get("peak_memory_mb")
        result = "ok" if r.get("ok") else f"FAILED: {r.get('problem')}"
        lines.append(f"| {r['name']} | {r.get('kind', '')} | {result} | "
                     f"{r.get('rc', '')} | {r.get('seconds', '')} | {'' if spe is None else f'{spe:.2f}'} | "
                     f"{'' if mem is None else f'{mem:.0f}'} | {r.get('log', '')} |")
    kinds = sorted({(r.get("results") or {}).get("peak_memory_kind") for r in e["runs"]} - {None})
    return lines + (["", f"Peak memory: {'; '.join(kinds)}."] if kinds else []) + [""]


def _tail(out: Path, log: str, n: int = 25) -> list[str]:
    path = out / log
    if not log or not path.exists():
        return []
    lines = path.read_text(errors="replace").splitlines()[-n:]
    return [f"### {log} (last {len(lines)} lines)", "", "```", *lines, "```", ""]


def summary(out: Path) -> str:
    lines = _header(out) + ["| part | status | seconds | key numbers | log |", "|---|---|---|---|---|"]
    statuses = {p: read_status(out, p) for p in PARTS}
    for part, st in statuses.items():
        status = st["status"] + (f" ({st['reason']})" if st.get("reason") else "")
        key = KEYS[part](out) if st["status"] not in ("not run", "skipped") else ""
        lines.append(f"| {part} | {status} | {st.get('seconds', '')} | {key} | {st.get('log', '')} |")
    lines.append("")
    table = out / "steps" / "step_cost.md"
    if table.exists():
        body = table.read_text().splitlines()
        lines += ["## Step cost (steps/step_cost.md)", "", *body[2:], ""]
    lines += _example_table(out)
    failed = [p for p, st in statuses.items() if st["status"] == "fail"]
    if failed:
        lines += ["## Failed parts: end of their logs", ""]
        for part in failed:
            lines += _tail(out, statuses[part].get("log", ""))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not Path(args[0]).is_dir():
        print("usage: python benchmarks/gpu_check_report.py OUT (the folder of benchmarks/gpu_check.sh)",
              file=sys.stderr)
        return 2
    out = Path(args[0])
    atomic_write_text(out / "summary.md", summary(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
