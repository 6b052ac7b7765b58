"""``benchmarks/gpu_check.sh`` (the GPU validation script) in its CPU smoke mode, its parts and its report, and
the extensions of ``benchmarks/step_cost.py`` it uses (precision variants, skipped methods, one worker process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from libmtl_repmtl.core.presets import parse_method
from libmtl_repmtl.libmtl import host

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check_report  # noqa: E402
import step_cost  # noqa: E402
from _step_model import METHODS, parse_spec  # noqa: E402


def _env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {k: v for k, v in os.environ.items()
           if k not in ("GPU_CHECK_PARTS", "GPU_CHECK_FAIL", "LIBMTL_REPMTL_STOP_AFTER_EPOCHS")}
    return {**env, "PYTHON": sys.executable, "PYTHONPATH": path, **extra}


def _status(out: Path, part: str) -> dict[str, str]:
    return gpu_check_report.read_status(out, part)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One smoke run with the first part replaced by a failing command: the others must still run and pass."""
    out = tmp_path_factory.mktemp("gpu") / "check"
    proc = subprocess.run(["bash", str(SCRIPT), str(out), "--smoke"], env=_env(GPU_CHECK_FAIL="tests"),
                          cwd=tmp_path_factory.getbasetemp(), capture_output=True, text=True, timeout=1800)
    return out, proc


@pytest.mark.dist
def test_smoke_run_records_each_part_and_a_failing_part_does_not_stop_the_others(smoke):
    out, proc = smoke
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]  # one part failed
    tests = _status(out, "tests")
    assert tests["status"] == "fail" and tests["rc"] == "3" and "injected failure" in tests["reason"]
    assert "injected failure" in (out / "logs" / "tests.log").read_text()
    for part in ("steps", "examples", "ddp"):
        st = _status(out, part)
        assert st["status"] == "pass", (part, st, (out / "logs" / f"{part}.log").read_text()[-3000:])
        assert st["log"] == f"logs/{part}.log" and (out / st["log"]).stat().st_size > 0
    text = (out / "summary.md").read_text()
    assert "bash benchmarks/gpu_check.sh" in text and "(smoke mode, device cpu)" in text
    assert "| tests | fail (injected failure (GPU_CHECK_FAIL)) |" in text
    assert "## Failed parts: end of their logs" in text and "### logs/tests.log" in text
    for part in ("steps", "examples", "ddp"):
        assert f"| {part} | pass |" in text
    assert f"torch {torch.__version__}" in text and "LibMTL 1.1.5" in text


@pytest.mark.dist
def test_smoke_step_cost_measures_every_method_or_says_why_not(smoke):
    out, _ = smoke
    data = json.loads((out / "steps" / "step_cost.json").read_text())
    rows = {r["method"]: r for r in data["rows"]}
    measured = ["EW", "RepMTL", "logEW", "RepMTL-paper", "naive", "EW@bf16", "RepMTL@bf16", "MGDA", "PCGrad",
                "CAGrad", "GradVac", "IMTL"]
    for m in measured:
        assert rows[m]["median_s"] > 0 and len(rows[m]["times_s"]) == 1, rows[m]
    for m in ("EW@fp16", "RepMTL@fp16"):
        assert "needs CUDA" in rows[m]["skipped"]
    installed = set(host.available("weighting")["weighting"])
    for m in ("Nash_MTL", "FairGrad", "DB_MTL"):  # in LibMTL's git version, not in 1.1.5
        if m in installed:
            assert rows[m]["median_s"] > 0, rows[m]
        else:
            assert rows[m]["skipped"].startswith("the installed LibMTL (") and rows[m]["skipped"].endswith(
                f") has no weighting {m}")
    assert not [r for r in data["rows"] if "error" in r]
    assert data["encoder"] == "tiny" and data["size"] == [32, 48] and data["floor"]["floor_ratio"] > 1
    text = (out / "summary.md").read_text()
    assert "| EW@bf16 | " in text and "FLOP floor of an exact Rep-MTL step" in text
    assert "RepMTL " in text and " x EW time" in text


@pytest.mark.dist
def test_smoke_examples_train_interrupt_and_resume_every_command(smoke):
    out, _ = smoke
    runs = {r["name"]: r for r in json.loads((out / "examples" / "examples.json").read_text())["runs"]}
    for family in ("nyuv2", "cityscapes", "office"):
        assert runs[f"{family}-EW-bf16"]["ok"] and runs[f"{family}-EW-bf16"]["results"]["amp"] == "bf16"
        stopped = runs[f"{family}-RepMTL-bf16"]
        assert stopped["ok"] and stopped["kind"] == "interrupted" and stopped["rc"] == 130
        resumed = runs[f"{family}-RepMTL-bf16-resume"]
        assert resumed["ok"] and resumed["results"]["epochs"] == [0, 1], resumed
        assert {"L_tsr", "L_csa"} <= set(resumed["results"]["repmtl_terms"])
        assert "needs CUDA" in runs[f"{family}-RepMTL-fp16"]["skipped"]
    assert len(runs) == 15
    ddp = json.loads((out / "ddp" / "ddp.json").read_text())["runs"]
    gloo = ddp["gloo"]["results"]
    assert ddp["gloo"]["ok"] and gloo["world_size"] == 2 and gloo["weight_args"]["RepMTL_global_negatives"] is True
    assert ddp["nccl"] == {"skipped": "nccl needs CUDA"}


@pytest.mark.dist
def test_smoke_archive_holds_the_outputs_without_checkpoints_or_data(smoke):
    out, _ = smoke
    with tarfile.open(str(out) + ".tar.gz") as tar:
        names = tar.getnames()
    assert "check/summary.md" in names and "check/steps/step_cost.json" in names
    assert "check/examples/nyuv2-RepMTL-bf16/results.json" in names and "check/ddp/gloo-node1.log" in names
    assert not [n for n in names if n.endswith(".pt") or "/data/" in n or "/_site/" in n]
    assert (out / "examples" / "nyuv2-RepMTL-bf16" / "last.pt").exists()  # left in OUTDIR, not archived


def test_bad_usage_and_no_gpu_without_smoke_are_refused(tmp_path):
    for args in ([], ["--bogus", str(tmp_path / "a")], [str(tmp_path / "a"), str(tmp_path / "b")]):
        proc = subprocess.run(["bash", str(SCRIPT), *args], env=_env(), capture_output=True, text=True)
        assert proc.returncode == 2 and "usage: bash benchmarks/gpu_check.sh OUTDIR" in proc.stderr
    if not torch.cuda.is_available():
        proc = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "c")], env=_env(), capture_output=True, text=True)
        assert proc.returncode == 2 and "no CUDA device visible" in proc.stderr and "--smoke" in proc.stderr


def test_tests_part_runs_the_first_tests_of_each_file_and_records_the_counts(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "tests", str(tmp_path),
                           "--device", "cpu", "--smoke"], env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    rec = json.loads((tmp_path / "tests" / "tests.json").read_text())
    assert "tests/test_method_gradients.py" in rec["files"] and rec["device"] == "cpu"
    assert rec["tests"] == 2 * len(rec["files"]) and rec["failures"] == rec["errors"] == 0 and rec["problem"] is None


def test_shim_makes_the_checkout_plugins_visible_as_entry_points(tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "shim", str(site)], check=True,
                   env=_env())
    code = ("import importlib.metadata as m, json; print(json.dumps(sorted((e.group, e.name, e.value) for g in "
            "('libmtl.weighting', 'libmtl.architecture') for e in m.entry_points(group=g))))")
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(site)},
                          capture_output=True, text=True, check=True)
    assert ["libmtl.weighting", "RepMTL", "libmtl_repmtl.libmtl.weighting:RepMTL"] in json.loads(proc.stdout)
    assert ["libmtl.architecture", "RepHPS", "libmtl_repmtl.libmtl.architecture:RepHPS"] in json.loads(proc.stdout)


# ------------------------------------------------------------------------------------------- report, step_cost
def _fake_out(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    for folder in ("parts", "logs", "steps", "examples", "ddp"):
        (out / folder).mkdir(parents=True)
    (out / "parts" / "steps.status").write_text("status=pass\nrc=0\nseconds=12\nreason=\nlog=logs/steps.log\n")
    (out / "parts" / "ddp.status").write_text("status=fail\nrc=1\nseconds=5\nreason=exit status 1\nlog=logs/ddp.log\n")
    (out / "logs" / "ddp.log").write_text("line\n" * 40 + "RuntimeError: gloo broke\n")
    (out / "info.json").write_text(json.dumps({"command": "bash benchmarks/gpu_check.sh X", "mode": "full",
                                               "device": "cuda", "gpus": ["NVIDIA H200"], "torch": "2.11.0"}))
    rows = [{"method": "EW", "amp": "none", "median_s": 0.1, "peak_bytes": 1000},
            {"method": "RepMTL", "amp": "none", "median_s": 0.17, "peak_bytes": 1200},
            {"method": "EW@fp16", "amp": "fp16", "median_s": 0.05, "peak_bytes": 600},
            {"method": "RepMTL@fp16", "amp": "fp16", "median_s": 0.08, "peak_bytes": 700},
            {"method": "MGDA", "amp": "none", "median_s": 0.34, "peak_bytes": 2000},
            {"method": "Nash_MTL", "skipped": "the installed LibMTL (1.1.5) has no weighting Nash_MTL"},
            {"method": "IMTL", "error": ["OutOfMemoryError: CUDA out of memory"]}]
    (out / "steps" / "step_cost.json").write_text(json.dumps({"rows": rows, "floor": {"floor_ratio": 1.658}}))
    (out / "ddp" / "ddp.json").write_text(json.dumps({"runs": {
        "gloo": {"ok": False, "problem": "exit statuses [1, 1]: RuntimeError: gloo broke"},
        "nccl": {"ok": True, "seconds": 9.5}}}))
    return out


def test_report_states_statuses_key_numbers_and_failed_logs(tmp_path):
    out = _fake_out(tmp_path)
    assert gpu_check_report.main([str(out)]) == 0
    text = (out / "summary.md").read_text()
    assert "Command: `bash benchmarks/gpu_check.sh X` (full mode, device cuda)" in text and "NVIDIA H200" in text
    assert "| tests | not run |" in text and "| examples | not run |" in text
    assert ("| steps | pass | 12 | RepMTL 1.70 x EW time, 1.20 x EW memory (FLOP floor 1.658); fp16: 1.60 x time, "
            "1.17 x memory; EW fp16 0.50 x EW fp32 time; fastest gradient method MGDA at 2.00 x RepMTL time; "
            "5 measured, 1 skipped, 1 failed (IMTL) | logs/steps.log |") in text
    assert ("| ddp | fail (exit status 1) | 5 | gloo: exit statuses [1, 1]: RuntimeError: gloo broke; nccl: 2 ranks "
            "trained one epoch in 9.5 s | logs/ddp.log |") in text
    assert "### logs/ddp.log (last 25 lines)" in text and text.count("line\n") == 24
    assert gpu_check_report.main([str(tmp_path / "missing")]) == 2


def test_step_cost_method_specs_and_their_errors():
    assert parse_spec("RepMTL@bf16") == ("RepMTL", "bf16") and parse_spec("EW") == ("EW", "none")
    # the presets of core.presets, exactly: logEW = both lambdas 0 on log losses; RepMTL-paper = the paper's numbers
    # and, for each open choice, the reading as printed
    assert dict(METHODS["logEW"].weight_args) == {"RepMTL_lambda_tsr": 0.0, "RepMTL_lambda_csa": 0.0,
                                                  "RepMTL_log_loss": True} == parse_method("logEW").weight_args
    assert dict(METHODS["RepMTL-paper"].weight_args) == {
        "RepMTL_lambda_tsr": 0.9, "RepMTL_lambda_csa": 0.9, "RepMTL_tau": 0.1, "RepMTL_log_loss": True,
        "RepMTL_csa_form": "printed", "RepMTL_saliency_loss": "objective", "RepMTL_tsr_channel_mean": "signed",
    } == parse_method("RepMTL-paper").weight_args
    with pytest.raises(ValueError, match="unknown method 'RepMLT'.*available: EW, logEW"):
        parse_spec("RepMLT")
    with pytest.raises(ValueError, match="unknown precision 'fp8'.*NAME@bf16 or NAME@fp16"):
        parse_spec("EW@fp8")
    with pytest.raises(SystemExit) as exc:
        step_cost.main(["--methods", "EW,RepMTL@int8"])
    assert exc.value.code == 2


def test_step_cost_table_ratios_against_ew_at_the_same_precision():
    args = step_cost._parser().parse_args(["--device", "cuda", "--one-process", "--size", "288", "384",
                                           "--batch", "8"])
    rows = [{"method": "EW", "amp": "none", "median_s": 0.2, "peak_bytes": 2 * 2**20, "device_name": "NVIDIA H200"},
            {"method": "RepMTL", "amp": "none", "median_s": 0.3, "peak_bytes": 3 * 2**20},
            {"method": "EW@bf16", "amp": "bf16", "median_s": 0.1, "peak_bytes": 2**20},
            {"method": "RepMTL@bf16", "amp": "bf16", "median_s": 0.15, "peak_bytes": 2**20},
            {"method": "FairGrad", "skipped": "the installed LibMTL (1.1.5) has no weighting FairGrad"}]
    text = step_cost.table(rows, args, 10.0, {"floor_ratio": 1.658, "encoder_flops": 1e9, "heads_flops": 2e9})
    assert "device cuda (NVIDIA H200)" in text and "one worker process for all methods" in text
    assert "input 288 x 384, batch 8" in text and "CUDA max_memory_allocated" in text
    assert "| RepMTL@bf16 | 0.150 | 1.50 | 1.00 | 1 | 1.00 | 0.75 |" in text
    assert "| RepMTL | 0.300 | 1.50 | 1.00 | 3 | 1.50 | 1.50 |" in text
    assert "| FairGrad | skipped: the installed LibMTL (1.1.5) has no weighting FairGrad |" in text
    assert "FLOP floor of an exact Rep-MTL step: 1.658 x EW's FLOPs" in text
