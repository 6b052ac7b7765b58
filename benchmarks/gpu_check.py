"""The parts of ``benchmarks/gpu_check.sh`` (one subcommand each; the shell script runs them, each under its own
time limit, records their status and writes the summary with ``gpu_check_report.py``).

    python benchmarks/gpu_check.py shim DIR                     # entry-point metadata of this checkout
    python benchmarks/gpu_check.py info OUT --device cuda       # OUT/info.json: GPU, driver, torch, CUDA, LibMTL
    python benchmarks/gpu_check.py tests OUT --device cuda      # float64 gradient-equality tests on the device
    python benchmarks/gpu_check.py examples OUT --device cuda   # the example commands, bf16 / fp16, a resume
    python benchmarks/gpu_check.py ddp OUT --device cuda        # 2 processes on one device, RepMTL, global negatives

``--smoke``: tiny sizes for the CPU. Each subcommand exits 0 when all it checked passed, and writes its findings
to ``OUT/<part>/<part>.json`` as it goes (a part stopped at its time limit still leaves what it found).
"""

from __future__ import annotations

import argparse
import configparser
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from gpu_check_report import results_digest  # noqa: E402

from libmtl_repmtl.training.io import atomic_write_json as _write_json  # noqa: E402
from libmtl_repmtl.training.loop import STOP_ENV  # noqa: E402  (the trainer's interruption hook)

TEST_DEVICE_ENV = "LIBMTL_REPMTL_TEST_DEVICE"
GRADIENT_TESTS = ("tests/test_method_gradients.py",)
#: Generated data and batch size per example family: (synthetic kind, generator flags full / smoke, batch).
EXAMPLES: dict[str, tuple[str, list[str], list[str], int]] = {
    "nyuv2": ("nyuv2", ["--size", "16", "--test-size", "8", "--height", "288", "--width", "384"],
              ["--size", "4", "--test-size", "2"], 8),
    "cityscapes": ("cityscapes", ["--size", "16", "--test-size", "8", "--height", "128", "--width", "256"],
                   ["--size", "4", "--test-size", "2"], 8),
    "office": ("office-31", ["--size", "16", "--test-size", "8"], ["--size", "4", "--test-size", "2"], 8),
}
METHOD_FLAGS = {"EW": ["--weighting", "EW", "--arch", "HPS"], "RepMTL": ["--weighting", "RepMTL", "--arch", "RepHPS"]}


def _python_env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", **extra}
    if STOP_ENV not in extra:
        env.pop(STOP_ENV, None)
    return env


def _run_logged(cmd: list[str], log: Path, env: dict[str, str], cwd: Path = ROOT) -> tuple[int, float, str]:
    """Run ``cmd`` with its output in ``log``; returns (exit status, seconds, output)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        code = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=cwd).returncode
    return code, time.perf_counter() - t0, log.read_text(errors="replace")


def _last_error(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "Error" in ln or "error:" in ln or "Exception" in ln:
            return ln[:300]
    return (lines[-1] if lines else "no output")[:300]


# ---------------------------------------------------------------------------------------------- shim, info
def cmd_shim(folder: Path) -> int:
    """Write ``libmtl_repmtl-<version>.dist-info`` (METADATA, entry_points.txt from setup.cfg) into ``folder``,
    so that with ``folder`` on PYTHONPATH ``libmtl_repmtl.register()`` finds this checkout's plugins as if the
    package were installed (the GPU machine runs the checkout without installing it)."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    version = cfg["metadata"]["version"]
    eps = cfg["options.entry_points"]
    dist = folder / f"libmtl_repmtl-{version}.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: libmtl_repmtl\nVersion: {version}\n")
    groups = [f"[{group}]\n{eps[group].strip()}\n" for group in eps if group.startswith("libmtl.")]
    (dist / "entry_points.txt").write_text("\n".join(groups))
    return 0


def _nvidia_smi() -> str:
    try:
        proc = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"nvidia-smi not available ({type(exc).__name__})"
    return proc.stdout.strip() or proc.stderr.strip()


def cmd_info(out: Path, device: str, smoke: bool) -> int:
    import platform
    from importlib import metadata

    import torch

    try:
        import libmtl_repmtl

        plugins = libmtl_repmtl.register()  # the compatibility patches first: LibMTL 1.1.5 then imports
        import LibMTL

        versions = {d.metadata["Name"]: d.version for d in metadata.distributions()}
        libmtl = {"libmtl": versions.get("LibMTL", "of unknown version"), "plugins": plugins,
                  "libmtl_path": str(Path(LibMTL.__file__).parent)}
    except Exception as exc:  # reported in the summary; the parts then say what fails
        libmtl = {"libmtl": f"not importable ({type(exc).__name__}: {exc})"}
    cuda = torch.cuda.is_available()
    info = {"command": os.environ.get("GPU_CHECK_COMMAND", ""), "mode": "smoke" if smoke else "full",
            "device": device, "python": platform.python_version(), "cpu_cores": os.cpu_count(),
            "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
            "cuda_available": cuda, "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
            "bf16_supported": bool(cuda and torch.cuda.is_bf16_supported()), "nvidia_smi": _nvidia_smi(),
            **libmtl, "commit": _commit(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    _write_json(out / "info.json", info)
    print(json.dumps(info, indent=1))
    return 0 if (cuda or device == "cpu") else 1


def _commit() -> str:
    try:
        proc = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        return proc.stdout.strip() or "unknown (no git repository)"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown (no git)"


# ---------------------------------------------------------------------------------------------- tests
def _junit_counts(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        return {}
    keys = ("tests", "failures", "errors", "skipped")
    counts: dict[str, Any] = {k: int(suite.get(k, 0)) for k in keys}
    counts["seconds"] = float(suite.get("time", 0))
    counts["failed_ids"] = [f"{c.get('classname')}::{c.get('name')}" for c in suite.iter("testcase")
                            if c.find("failure") is not None or c.find("error") is not None][:20]
    return counts


def cmd_tests(out: Path, device: str, smoke: bool) -> int:
    """The float64 gradient-equality tests with ``LIBMTL_REPMTL_TEST_DEVICE=device``."""
    reading = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("*.py")
                     if TEST_DEVICE_ENV in p.read_text(errors="replace"))
    files = sorted({*GRADIENT_TESTS, *(f for f in reading if Path(f).name.startswith("test_"))})
    junit = out / "tests" / "junit.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "_pytest_first", *files,
           f"--junitxml={junit}"]
    extra = {TEST_DEVICE_ENV: device, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), str(ROOT / "benchmarks"), *filter(None, [os.environ.get("PYTHONPATH")])])}
    if smoke:
        extra["GPU_CHECK_TESTS_PER_FILE"] = "2"
    code, seconds, text = _run_logged(cmd, out / "tests" / "pytest.log", _python_env(**extra))
    record = {"device": device, "files": files, "files_reading_device_env": reading, "rc": code,
              "seconds": seconds, **_junit_counts(junit), "problem": None}
    if code != 0:
        record["problem"] = f"pytest exit status {code}: {_last_error(text)}"
    elif device != "cpu" and not reading:
        record["problem"] = f"no test module reads {TEST_DEVICE_ENV}: these tests ran on the CPU, not on {device}"
        code = 4
    _write_json(out / "tests" / "tests.json", record)
    print(json.dumps(record, indent=1))
    return code


# ---------------------------------------------------------------------------------------------- examples
def _judge(kind: str, code: int, text: str, res: dict[str, Any], amp: str) -> str | None:
    """``None`` when the run did what ``kind`` (``epoch``, ``interrupted``, ``resume``) expects, else why not."""
    want = {"epoch": (0, "complete", 1), "interrupted": (130, "interrupted", 1), "resume": (0, "complete", 2)}[kind]
    if code != want[0]:
        return f"exit status {code} (expected {want[0]}): {_last_error(text)}"
    if "unreadable" in res:
        return f"results.json: {res['unreadable']}"
    if (res["status"], res["epochs_done"]) != want[1:]:
        return f"results.json says status {res['status']!r}, {res['epochs_done']} epoch(s); expected {want[1:]}"
    if res["amp"] != amp:
        return f"results.json records amp {res['amp']!r}, not {amp!r}"
    if not res["finite"]:
        return "non-finite numbers in the epoch records"
    if kind == "resume" and ("Resumed from" not in text or res["epochs"] != [0, 1]):
        return f"not resumed (epochs {res['epochs']}; 'Resumed from' printed: {'Resumed from' in text})"
    return None


def _family_runs(family: str, cuda: bool) -> list[dict[str, Any]]:
    """EW and RepMTL, bf16 and fp16 (CUDA only); the last RepMTL run stops after 1 of 2 epochs, then resumes."""
    resume_amp = "fp16" if cuda else "bf16"
    runs = []
    for method in ("EW", "RepMTL"):
        for amp in ("bf16", "fp16"):
            name = f"{family}-{method}-{amp}"
            if amp == "fp16" and not cuda:
                runs.append({"name": name, "skipped": "--amp fp16 (float16 with a GradScaler) needs CUDA"})
                continue
            kind = "interrupted" if (method, amp) == ("RepMTL", resume_amp) else "epoch"
            runs.append({"name": name, "method": method, "amp": amp, "kind": kind, "save": name})
    runs.append({"name": f"{family}-RepMTL-{resume_amp}-resume", "method": "RepMTL", "amp": resume_amp,
                 "kind": "resume", "save": f"{family}-RepMTL-{resume_amp}"})
    return runs


def _example_command(family: str, run: dict[str, Any], data: Path, out: Path, args: argparse.Namespace) -> list[str]:
    batch = str(EXAMPLES[family][3] if not args.smoke else 2)
    cmd = [sys.executable, str(ROOT / "examples" / family / "main.py"), *METHOD_FLAGS[run["method"]],
           "--dataset_path", str(data), "--save_path", str(out / "examples" / run["save"]), "--pretrained", "none",
           "--device", args.device, "--amp", run["amp"], "--train_bs", batch, "--test_bs", batch, "--no_progress",
           "--epochs", "1" if run["kind"] == "epoch" else "2"]
    if args.smoke:
        cmd += ["--encoder", "tiny"]
    if family == "office":
        cmd += ["--dataset", "office-31", "--multi_input", "--list_dir", str(data)]
        cmd += ["--image_size", "32"] if args.smoke else []
    return cmd + (["--resume"] if run["kind"] == "resume" else [])


def _generate(family: str, out: Path, smoke: bool, folder: str | None = None) -> Path:
    kind, full, tiny, _ = EXAMPLES[family]
    data = out / "data" / (folder or kind)
    if not (data / ".complete").exists():
        subprocess.run([sys.executable, "-m", "libmtl_repmtl.data.synthetic", kind, str(data),
                        *(tiny if smoke else full)], check=True, env=_python_env(), capture_output=True)
        (data / ".complete").write_text("")
    return data


def cmd_examples(out: Path, args: argparse.Namespace) -> int:
    """Every example command for one epoch on generated data, EW and RepMTL, bf16 and fp16, then a resume."""
    cuda = args.device.startswith("cuda")
    records: list[dict[str, Any]] = []
    lock = threading.Lock()
    order = [r["name"] for family in EXAMPLES for r in _family_runs(family, cuda)]

    def save() -> None:
        _write_json(out / "examples" / "examples.json", {"device": args.device, "planned": order, "runs": records})

    def family_job(family: str) -> None:
        try:
            data = _generate(family, out, args.smoke)
        except subprocess.CalledProcessError as exc:
            with lock:
                records.append({"name": f"{family}-data", "ok": False, "problem": f"data generation failed: "
                                f"{_last_error(exc.stderr.decode(errors='replace'))}"})
            return
        for run in _family_runs(family, cuda):
            if "skipped" not in run:
                cmd = _example_command(family, run, data, out, args)
                extra = {STOP_ENV: "1"} if run["kind"] == "interrupted" else {}
                code, seconds, text = _run_logged(cmd, out / "examples" / f"{run['name']}.log", _python_env(**extra))
                res = results_digest(out / "examples" / run["save"])
                problem = _judge(run["kind"], code, text, res, run["amp"])
                run = {**run, "rc": code, "seconds": round(seconds, 1), "log": f"examples/{run['name']}.log",
                       "results": res, "ok": problem is None, "problem": problem}
            with lock:
                records.append(run)
                records.sort(key=lambda r: order.index(r["name"]) if r["name"] in order else len(order))
                save()
            print(f"{run['name']:32s} {'skipped' if 'skipped' in run else 'ok' if run['ok'] else 'FAILED'}"
                  f" {run.get('problem') or run.get('skipped') or ''}", flush=True)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(family_job, EXAMPLES))
    save()
    return 0 if records and all(r.get("ok", True) for r in records) else 1


# ---------------------------------------------------------------------------------------------- ddp
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _two_node_run(out: Path, name: str, flags: list[str], limit: float) -> tuple[list[int], str]:
    """Two torchrun agents on this host (``--nnodes 2 --nproc_per_node 1``, node ranks 0 and 1): two processes,
    each with ``LOCAL_RANK`` 0, so both train on the one GPU. Returns the exit statuses and both logs."""
    port = str(_free_port())
    procs, logs = [], []
    for node in (0, 1):
        log = out / "ddp" / f"{name}-node{node}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        logs.append(log)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
               "--node_rank", str(node), "--master_addr", "127.0.0.1", "--master_port", port, *flags]
        with open(log, "w") as fh:
            fh.write("$ " + " ".join(cmd) + "\n")
            fh.flush()
            procs.append(subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT,
                                          env=_python_env(OMP_NUM_THREADS="1"), start_new_session=True))
    deadline = time.monotonic() + limit
    codes = []
    try:
        for proc in procs:
            try:
                codes.append(proc.wait(timeout=max(1.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                codes.append(-9)
                break
    finally:  # also when this process is stopped (SIGTERM from the script's time limit): no agent outlives it
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    codes += [p.returncode for p in procs[len(codes):]]
    return codes, "\n".join(log.read_text(errors="replace") for log in logs)


def cmd_ddp(out: Path, args: argparse.Namespace) -> int:
    """RepMTL with global CSA negatives, 2 processes on one device: gloo (CUDA tensors on a GPU), then nccl."""
    data = _generate("nyuv2", out, True, "ddp-nyuv2")  # a few small images: the check is the collectives
    base = [str(ROOT / "examples" / "nyuv2" / "main.py"), "--weighting", "RepMTL", "--arch", "RepHPS",
            "--RepMTL_global_negatives", "true", "--dataset_path", str(data), "--pretrained", "none",
            "--device", "cuda" if args.device.startswith("cuda") else "cpu", "--train_bs", "2", "--test_bs", "2",
            "--epochs", "1", "--no_progress", *(["--encoder", "tiny"] if args.smoke else [])]
    record: dict[str, Any] = {"device": args.device, "runs": {}}
    backends = ["gloo", "nccl"] if args.device.startswith("cuda") else ["gloo"]
    for backend in backends:
        save = out / "ddp" / backend
        t0 = time.perf_counter()
        codes, text = _two_node_run(out, backend, [*base, "--save_path", str(save), "--dist_backend", backend],
                                    args.limit if backend == "gloo" else min(args.limit, 30))
        res = results_digest(save)
        problem = None
        if codes != [0, 0]:
            problem = f"exit statuses {codes}: {_last_error(text)}"
        elif res.get("status") != "complete" or res.get("world_size") != 2 or not res.get("finite"):
            problem = f"results.json: status {res.get('status')}, world_size {res.get('world_size')}"
        elif "L_csa" not in res.get("repmtl_terms", []) or not (res.get("weight_args") or {}).get(
                "RepMTL_global_negatives"):
            problem = "results.json lacks RepMTL's CSA term or global negatives"
        record["runs"][backend] = {"rc": codes, "seconds": round(time.perf_counter() - t0, 1), "results": res,
                                   "ok": problem is None, "problem": problem,
                                   "logs": [f"ddp/{backend}-node{n}.log" for n in (0, 1)]}
        _write_json(out / "ddp" / "ddp.json", record)
        print(f"{backend}: {'ok' if problem is None else problem}", flush=True)
    if "nccl" not in backends:
        record["runs"]["nccl"] = {"skipped": "nccl needs CUDA"}
    _write_json(out / "ddp" / "ddp.json", record)
    return 0 if record["runs"]["gloo"]["ok"] else 1  # nccl may refuse two ranks on one GPU: reported, not failed


# ---------------------------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=("shim", "info", "tests", "examples", "ddp"))
    p.add_argument("out", type=Path, help="the check's output folder (shim: the metadata folder)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--jobs", type=int, default=1, help="examples: example families run side by side")
    p.add_argument("--limit", type=float, default=120.0, help="ddp: seconds before a launch is killed")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-ups when the time limit stops a part
    if args.part == "shim":
        return cmd_shim(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.part == "info":
        return cmd_info(args.out, args.device, args.smoke)
    if args.part == "tests":
        return cmd_tests(args.out, args.device, args.smoke)
    return cmd_examples(args.out, args) if args.part == "examples" else cmd_ddp(args.out, args)


if __name__ == "__main__":
    sys.exit(main())
