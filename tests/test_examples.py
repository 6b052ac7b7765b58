"""The example commands, run as subprocesses from another directory on tiny generated data (CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from libmtl_repmtl.training.trainer import STOP_ENV

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
KEYS = ("config", "epochs", "best_epoch", "best_epoch_selection", "last_epoch", "delta_p_task", "delta_p_metric",
        "delta_p_task_last", "delta_p_metric_last", "seconds_per_epoch", "peak_memory_mb", "peak_memory_kind",
        "test_at_best", "test_at_last", "higher_better", "status")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    synthetic = pytest.importorskip("libmtl_repmtl.data.synthetic")
    root = tmp_path_factory.mktemp("data")
    for kind in ("nyuv2", "cityscapes", "office-31", "office-home"):
        synthetic.generate(kind, root / kind, size=4, test_size=2)
    return root


def _cmd(kind: str, data: Path, save: Path, *extra: str) -> list[str]:
    family = "office" if kind.startswith("office") else kind
    cmd = [sys.executable, str(EXAMPLES / family / "main.py"), "--dataset_path", str(data / kind),
           "--save_path", str(save), "--encoder", "tiny", "--pretrained", "none", "--train_bs", "2",
           "--test_bs", "2", "--device", "cpu", "--no_progress"]
    if family == "office":
        cmd += ["--dataset", kind, "--multi_input", "--list_dir", str(data / kind), "--image_size", "32"]
    return cmd + list(extra)


def _run(cmd: list[str], cwd: Path, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "2", **(env_extra or {})}
    env.pop(STOP_ENV, None)
    env.update(env_extra or {})
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _results(save: Path) -> dict:
    return json.loads((save / "results.json").read_text())


def _check(res: dict, kind: str, epochs: int, repmtl: bool) -> None:
    for key in KEYS:
        assert key in res, key
    assert res["status"] == "complete" and res["epochs_done"] == epochs and res["config"]["benchmark"] == kind
    assert res["delta_p_task"] is not None  # the spec's single-task baseline
    if repmtl:
        assert {"L_tsr", "L_csa"} <= set(res["epochs"][0]["repmtl"])
    if kind.startswith("office"):
        assert res["best_epoch_selection"].startswith("val") and "val" in res["epochs"][0]
    else:
        assert res["best_epoch_selection"] == "no val split: best on test (optimistic) and last epoch reported"


# One method per benchmark as a subprocess from another directory (the scripts as users run them) ...
@pytest.mark.parametrize("kind,method", [
    ("nyuv2", ["--weighting", "EW", "--arch", "HPS", "--aug"]),
    ("cityscapes", ["--weighting", "RepMTL", "--arch", "HPS", "--rep_grad"]),
    ("office-31", ["--weighting", "RepMTL", "--arch", "RepHPS"]),
    ("office-home", ["--weighting", "EW", "--arch", "HPS"]),
])
def test_example_script_trains_and_writes_results(data, tmp_path, kind, method):
    save = tmp_path / "run"
    proc = _run(_cmd(kind, data, save, "--epochs", "1", *method), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check(_results(save), kind, 1, "RepMTL" in method)
    assert "Δp_task" in proc.stdout and "Epoch: 0000 | TRAIN:" in proc.stdout
    assert {p.name for p in save.iterdir()} == {"results.json", "best.pt", "last.pt"}


# ... and the other method in-process through the same entry point (saves the interpreter start-up).

def test_example_script_resumes_after_interruption(data, tmp_path):
    save = tmp_path / "run"
    cmd = _cmd("nyuv2", data, save, "--epochs", "2", "--weighting", "RepMTL", "--arch", "RepHPS")
    first = _run(cmd, cwd=tmp_path, env_extra={STOP_ENV: "1"})
    assert first.returncode == 130, first.stderr[-3000:]
    assert "--resume" in first.stderr
    partial = _results(save)
    assert partial["status"] == "interrupted" and partial["epochs_done"] == 1
    second = _run(cmd + ["--resume"], cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Resumed from" in second.stdout and "Epoch: 0000 | TRAIN" not in second.stdout
    assert "Epoch: 0001 | TRAIN" in second.stdout
    res = _results(save)
    assert res["status"] == "complete" and [e["epoch"] for e in res["epochs"]] == [0, 1]
    assert res["epochs"][0] == partial["epochs"][0]
