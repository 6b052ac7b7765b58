"""The NYUv2 example command under ``torchrun`` (2 CPU processes, gloo) on generated data."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from libmtl_repmtl.training.trainer import STOP_ENV

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "nyuv2" / "main.py"
FLAGS = ["--encoder", "tiny", "--pretrained", "none", "--train_bs", "2", "--test_bs", "2", "--device", "cpu",
         "--no_progress"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    synthetic = pytest.importorskip("libmtl_repmtl.data.synthetic")
    root = tmp_path_factory.mktemp("data")
    return synthetic.generate("nyuv2", root / "nyuv2", size=8, test_size=3)  # test shards: 2 + 1 images


def _torchrun(data: Path, save: Path, cwd: Path, *extra: str, env_extra: dict[str, str] | None = None
              ) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(SCRIPT),
           "--dataset_path", str(data), "--save_path", str(save), *FLAGS, *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.pop(STOP_ENV, None)
    env.update(env_extra or {})
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)


def _numbers(value: Any) -> list[float]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in _numbers(v)]
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in _numbers(v)]
    return [float(value)] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


def _single_process_test_scores(data: Path, save: Path, weighting: str, arch: str) -> dict[str, Any]:
    """Rank 0's ``last.pt`` evaluated in this process on the whole test split."""
    from libmtl_repmtl.benchmarks import get as get_benchmark
    from libmtl_repmtl.libmtl.capabilities import resolve_architecture
    from libmtl_repmtl.training.experiment import arch_args_for
    from libmtl_repmtl.training.trainer import MTLTrainer

    spec = get_benchmark("nyuv2")
    opts = {**spec.defaults, "encoder": "tiny", "pretrained": "none", "train_bs": 2, "test_bs": 2, "seed": 0,
            "aug": False, "num_workers": 0, "dataset_path": str(data)}
    tasks = list(spec.tasks)
    trainer = MTLTrainer(spec.task_dict(tasks, opts), weighting, arch, spec.encoder_class(opts),
                         spec.decoders(tasks, opts), False, False, {"optim": "adam"}, None, None,
                         load_path=save / "last.pt", device="cpu", process_preds_fn=spec.process_preds,
                         verbose=False, arch_args=arch_args_for(resolve_architecture(arch)))
    return trainer.evaluate(spec.dataloaders(tasks, opts)["test"])


@pytest.mark.dist
@pytest.mark.parametrize("method", [
    ["--weighting", "RepMTL", "--arch", "RepHPS", "--RepMTL_global_negatives", "true"],
    ["--weighting", "EW", "--arch", "HPS"],
], ids=["RepMTL", "EW"])
def test_two_process_example_run_completes_and_rank0_alone_reports(data, tmp_path, method):
    save = tmp_path / "run"
    proc = _torchrun(data, save, tmp_path, "--epochs", "2", *method)
    assert proc.returncode == 0, proc.stderr[-4000:]
    # rank 0 alone prints LibMTL's lines and the summary (the other rank is silent)
    assert proc.stdout.count("Epoch: 0000 | TRAIN") == 1 and proc.stdout.count("done: 2 epoch(s)") == 1
    assert {p.name for p in save.iterdir()} == {"results.json", "best.pt", "last.pt"}
    res = json.loads((save / "results.json").read_text())
    assert res["status"] == "complete" and res["epochs_done"] == 2
    assert res["config"]["world_size"] == 2 and res["config"]["amp"] == "none"
    numbers = _numbers(res["epochs"])
    assert numbers and all(math.isfinite(x) for x in numbers)
    if method[1] == "RepMTL":
        assert res["config"]["weight_args"]["RepMTL_global_negatives"] is True
        assert {"L_tsr", "L_csa"} <= set(res["epochs"][-1]["repmtl"])
    # the reduced test scores (2 + 1 images on the two ranks) are those of the whole split in one process
    single = _single_process_test_scores(data, save, method[1], method[3])
    last = res["epochs"][-1]
    for task, metrics in single["metrics"].items():
        assert last["test"][task] == pytest.approx(metrics, rel=1e-4, abs=1e-6), task
    assert last["test_loss"] == pytest.approx(single["loss"], rel=1e-4)


@pytest.mark.dist
def test_two_process_run_refuses_a_gradient_method_with_the_reason(data, tmp_path):
    save = tmp_path / "run"
    proc = _torchrun(data, save, tmp_path, "--epochs", "1", "--weighting", "MGDA", "--arch", "HPS")
    assert proc.returncode != 0
    assert "error: weighting 'MGDA' cannot be trained with DistributedDataParallel" in proc.stderr
    assert "train MGDA in a single process (without torchrun)" in proc.stderr
    assert not save.exists()


@pytest.mark.dist
def test_two_process_run_resumes_after_an_interruption(data, tmp_path):
    save = tmp_path / "run"
    method = ("--weighting", "RepMTL", "--arch", "RepHPS", "--epochs", "2")
    first = _torchrun(data, save, tmp_path, *method, env_extra={STOP_ENV: "1"})
    assert first.returncode != 0 and first.stderr.count("Continue with the same command plus --resume") == 1
    partial = json.loads((save / "results.json").read_text())
    assert partial["status"] == "interrupted" and partial["epochs_done"] == 1
    second = _torchrun(data, save, tmp_path, *method, "--resume")
    assert second.returncode == 0, second.stderr[-4000:]
    assert "Resumed from" in second.stdout and "Epoch: 0000 | TRAIN" not in second.stdout
    res = json.loads((save / "results.json").read_text())
    assert res["status"] == "complete" and [e["epoch"] for e in res["epochs"]] == [0, 1]
    assert res["epochs"][0] == partial["epochs"][0]
