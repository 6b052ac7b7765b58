"""The trainer and ``run_experiment`` on a tiny registered benchmark (CPU, seconds)."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from libmtl_repmtl.benchmarks import Baseline, Benchmark, get, register
from libmtl_repmtl.core.config import RepMTLConfig
from libmtl_repmtl.libmtl.bases import LibMTL
from libmtl_repmtl.libmtl.capabilities import resolve_weighting
from libmtl_repmtl.training import run_experiment
from libmtl_repmtl.training.checks import BatchDataError
from libmtl_repmtl.training.device import resolve_device
from libmtl_repmtl.training.io import atomic_write_json, atomic_write_text
from libmtl_repmtl.training.progress import Progress
from libmtl_repmtl.training.results import read_results
from libmtl_repmtl.training.trainer import STOP_ENV, MTLTrainer, NonFiniteLossError
from tests._models import PooledLinearHead, TinyConvEncoder, acc_ce_task_dict

TASKS = ("a", "b")


class _Data(Dataset):
    """``x (3, 8, 8)``; task ``t`` label = sign of channel ``i`` mean."""

    def __init__(self, n: int, seed: int, task: str | None = None, nan: bool = False) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 3, 8, 8, generator=g)
        self.y = {t: (self.x[:, i].mean((1, 2)) > 0).long() for i, t in enumerate(TASKS)}
        if nan:
            self.x[:] = float("nan")
        self.task = task

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        if self.task:
            return self.x[i], self.y[self.task][i]
        return self.x[i], {t: v[i] for t, v in self.y.items()}


class _Enc(TinyConvEncoder):
    def __init__(self) -> None:
        super().__init__(width=6, depth=2)


class _Head(PooledLinearHead):
    def __init__(self) -> None:
        super().__init__(width=6)


_task_dict = acc_ce_task_dict


def _loaders(multi: bool, has_val: bool):
    def build(tasks, opts):
        nan, bs = bool(opts.get("nan")), opts["train_bs"]
        if multi:
            out = {s: {t: DataLoader(_Data(16, k, t, nan and s == "train"), batch_size=bs, shuffle=s == "train",
                                     drop_last=s == "train", generator=torch.Generator().manual_seed(opts["seed"]))
                       for t in tasks} for k, s in enumerate(("train", "val", "test"))}
        else:
            out = {"train": DataLoader(_Data(16, 0, nan=nan), batch_size=bs, shuffle=True, drop_last=True,
                                       generator=torch.Generator().manual_seed(opts["seed"])),
                   "val": DataLoader(_Data(8, 1), batch_size=8), "test": DataLoader(_Data(8, 2), batch_size=8)}
        if not has_val:
            out["val"] = None
        return out
    return build


for _name, _multi, _val in (("toy", False, True), ("toy-multi", True, True), ("toy-noval", False, False)):
    register(Benchmark(
        name=_name, tasks=TASKS, multi_input=_multi, has_val=_val, task_dict=_task_dict,
        dataloaders=_loaders(_multi, _val), encoder_class=lambda o: _Enc,
        decoders=lambda tasks, o: nn.ModuleDict({t: _Head() for t in tasks}),
        defaults={"epochs": 2, "train_bs": 4, "lr": 1e-3}, options={"nan": bool},
        baseline=Baseline.in_metric_units({"a": [0.5], "b": [0.5]})))


def _run(tmp_path, benchmark="toy", weighting="EW", arch="HPS", **kw):
    kw.setdefault("epochs", 2)
    return run_experiment(benchmark, weighting, arch, None, tmp_path, device="cpu", verbose=False, **kw)


REQUIRED = ("config", "epochs", "best_epoch", "best_epoch_selection", "last_epoch", "delta_p_task",
            "delta_p_metric", "delta_p_task_last", "delta_p_metric_last", "seconds_per_epoch", "peak_memory_mb",
            "peak_memory_kind", "higher_better", "test_at_best", "test_at_last", "status", "complete")


# ---------------------------------------------------------------------------------------------- device / io
def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available.*--device cpu"):
            resolve_device("cuda:0")
    else:
        with pytest.raises(ValueError, match="only"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_atomic_write_keeps_old_file_on_error(tmp_path):
    target = tmp_path / "r.json"
    atomic_write_json(target, {"a": 1, "nan": float("nan"), "arr": np.arange(2)})
    assert json.loads(target.read_text()) == {"a": 1, "nan": None, "arr": [0, 1]}

    class Boom:
        def __repr__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        atomic_write_json(target, {"bad": Boom()})
    assert json.loads(target.read_text())["a"] == 1
    atomic_write_text(tmp_path / "t.txt", "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "t.txt"]


def test_progress_draws_eta_when_enabled():
    buf = io.StringIO()
    bar = Progress(4, "epoch 1/2", enabled=True, interval=0.0, stream=buf)
    for _ in range(4):
        bar.update()
    bar.close()
    assert "4/4" in buf.getvalue() and "<" in buf.getvalue()
    assert not Progress(4, enabled=None, stream=io.StringIO()).enabled  # not a terminal


# ---------------------------------------------------------------------------------------------- runs
def test_ew_single_input_results_and_checkpoints(tmp_path):
    res = _run(tmp_path)
    for key in REQUIRED:
        assert key in res, key
    assert res["status"] == "complete" and res["epochs_done"] == 2 and res["complete"]
    assert json.loads((tmp_path / "results.json").read_text()) == json.loads(json.dumps(res))
    assert read_results(tmp_path / "results.json").to_dict() == json.loads(json.dumps(res))  # the contract
    ep = res["epochs"][0]
    assert set(ep["test"]) == set(TASKS) and "Acc" in ep["test"]["a"] and "val" in ep and "train_loss" in ep
    assert ep["delta_p"]["test"]["task"] is not None and ep["delta_p"]["val"]["task"] is not None
    assert res["best_epoch_selection"].startswith("val")
    assert res["config"]["lr"] == 1e-3 and res["config"]["weighting"] == "EW"
    ck = torch.load(tmp_path / "last.pt", weights_only=False)
    for key in ("model", "optimizer", "scheduler", "epoch", "rng", "weighting_state", "history", "config"):
        assert key in ck, key
    assert ck["epoch"] == 1 and ck["weighting_state"]["train_loss_buffer"].shape == (2, 2)
    assert (tmp_path / "best.pt").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_best_checkpoint_holds_what_evaluation_needs_and_last_everything(tmp_path):
    from libmtl_repmtl.analysis.powerlaw import load_state_dict
    from libmtl_repmtl.training.checkpoint import BEST_FORMAT, CHECKPOINT_FORMAT

    res = _run(tmp_path, epochs=2)
    best = torch.load(tmp_path / "best.pt", weights_only=False)
    last = torch.load(tmp_path / "last.pt", weights_only=False)
    assert best["format"] == BEST_FORMAT and last["format"] == CHECKPOINT_FORMAT
    assert best["epoch"] == res["best_epoch"] and best["record"] == res["epochs"][res["best_epoch"]]
    assert (best["task_name"], best["weighting"], best["architecture"]) == (list(TASKS), "EW", "HPS")
    assert not {"optimizer", "scheduler", "rng", "data_order", "grad_scaler", "history"} & set(best)
    for key in ("optimizer", "scheduler", "rng", "data_order", "weighting_state", "batch_weight", "history",
                "scores", "best_epoch", "best_score", "grad_scaler"):
        assert key in last, key
    assert best["model"].keys() == last["model"].keys()
    assert load_state_dict(tmp_path / "best.pt").keys() == best["model"].keys()  # what the analyses read
    evaluated = MTLTrainer(_task_dict(TASKS, {}), "EW", "HPS", _Enc, {t: _Head() for t in TASKS}, False, False,
                           {"optim": "adam"}, None, load_path=tmp_path / "best.pt", device="cpu", verbose=False)
    for k, v in evaluated.model.state_dict().items():
        assert torch.equal(v, best["model"][k]), k
    assert (tmp_path / "best.pt").stat().st_size < (tmp_path / "last.pt").stat().st_size


def test_resume_refuses_a_checkpoint_of_another_format(tmp_path):
    _run(tmp_path, epochs=1)
    state = torch.load(tmp_path / "last.pt", weights_only=False)
    state["format"] = "libmtl_repmtl.checkpoint/1"
    torch.save(state, tmp_path / "last.pt")
    with pytest.raises(ValueError, match=r"cannot resume from .*last.pt: its format is 'libmtl_repmtl.checkpoint/1'"
                                         r".*drop --resume"):
        _run(tmp_path, epochs=2, resume=True)


@pytest.mark.parametrize("benchmark,arch", [("toy", "HPS"), ("toy", "RepHPS"), ("toy-multi", "RepHPS")])
def test_repmtl_records_diagnostics(tmp_path, benchmark, arch):
    res = _run(tmp_path, benchmark, "RepMTL", arch, epochs=1)
    stats = res["epochs"][0]["repmtl"]
    assert {"L_tsr", "L_csa", "total"} <= set(stats) and set(stats["objectives"]) == set(TASKS)
    assert res["config"]["weight_args"]["RepMTL_lambda_tsr"] == RepMTLConfig().lambda_tsr
    assert res["repmtl"] == stats


@pytest.mark.parametrize("weighting", ["UW", "MGDA", "DWA", "GradNorm", "PCGrad"])
def test_libmtl_weightings_run(tmp_path, weighting):
    res = _run(tmp_path, "toy", weighting, "HPS", epochs=2)
    assert res["status"] == "complete"


def test_multi_input_ew(tmp_path):
    res = _run(tmp_path, "toy-multi")
    assert res["config"]["multi_input"] and res["epochs_done"] == 2


def test_no_val_split_reports_best_on_test_and_last(tmp_path):
    res = _run(tmp_path, "toy-noval")
    assert res["best_epoch_selection"] == "no val split: best on test (optimistic) and last epoch reported"
    assert "val" not in res["epochs"][0] and res["last_epoch"] == 1
    assert res["test_at_last"] == res["epochs"][1]["test"]


def test_resume_after_interruption_finishes_remaining_epochs_only(tmp_path, monkeypatch):
    monkeypatch.setenv(STOP_ENV, "1")
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, "toy-multi", "RepMTL", "RepHPS", epochs=3)
    first = json.loads((tmp_path / "results.json").read_text())
    assert first["status"] == "interrupted" and first["epochs_done"] == 1
    monkeypatch.delenv(STOP_ENV)
    res = _run(tmp_path, "toy-multi", "RepMTL", "RepHPS", epochs=3, resume=True)
    assert res["status"] == "complete" and [e["epoch"] for e in res["epochs"]] == [0, 1, 2]
    assert res["epochs"][0]["train_seconds"] == first["epochs"][0]["train_seconds"]  # epoch 0 not re-run
    ck = torch.load(tmp_path / "last.pt", weights_only=False)
    assert ck["epoch"] == 2 and np.all(ck["weighting_state"]["train_loss_buffer"] > 0)


def test_resume_refuses_another_runs_checkpoint(tmp_path):
    _run(tmp_path, epochs=1)
    with pytest.raises(ValueError, match="cannot resume"):
        _run(tmp_path, weighting="UW", epochs=2, resume=True)


def test_nan_input_fails_cleanly(tmp_path):
    with pytest.raises(BatchDataError, match="non-finite data at training epoch 0, batch 0: input batch"):
        _run(tmp_path, nan=True)
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["status"] == "failed" and "BatchDataError" in res["error"] and res["epochs_done"] == 0
    assert sorted(os.listdir(tmp_path)) == ["results.json"]


def test_check_losses_names_the_non_finite_task():
    tr = MTLTrainer(_task_dict(TASKS, {}), "EW", "HPS", _Enc, {t: _Head() for t in TASKS}, False, False,
                    {"optim": "adam", "lr": 1e-3}, None, device="cpu", verbose=False)
    tr.check_losses(torch.tensor([1.0, 2.0]), 0, 0)
    with pytest.raises(NonFiniteLossError, match=r"task\(s\) \['b'\] at epoch 2, batch 3"):
        tr.check_losses(torch.tensor([1.0, float("inf")]), 2, 3)


def test_baseline_file_and_none(tmp_path):
    base = tmp_path / "base.json"
    base.write_text(json.dumps({"a": {"Acc": 1.0}, "b": [1.0]}))
    res = _run(tmp_path / "r1", baseline=str(base), epochs=1)
    acc = res["test_at_best"]
    expect = np.mean([(acc[t]["Acc"] - 1.0) * 100 for t in TASKS])
    assert res["delta_p_task"] == pytest.approx(expect)
    assert res["baseline"]["source"] == str(base)
    res = _run(tmp_path / "r2", baseline="none", epochs=1)
    assert res["delta_p_task"] is None and res["best_epoch"] == 0
    with pytest.raises(ValueError, match="not valid JSON"):
        base.write_text("{")
        _run(tmp_path / "r3", baseline=str(base), epochs=1)


def test_single_task_run(tmp_path):
    res = _run(tmp_path, tasks=["b"], epochs=1)
    assert res["tasks"] == ["b"] and set(res["test_at_best"]) == {"b"}


def test_names_and_registry_errors():
    assert resolve_weighting("EW") is LibMTL.weighting.EW
    assert resolve_weighting("RepMTL").__name__ == "RepMTL"
    with pytest.raises(ValueError, match="unknown weighting 'Nope'.*EW"):
        resolve_weighting("Nope")
    with pytest.raises(KeyError, match="registered"):
        get("imagenet-mtl")
    assert get("Office_31").name == "office-31"
    assert get("nyuv2").tasks == ("segmentation", "depth", "normal")


def test_trainer_is_a_libmtl_trainer_with_explicit_device():
    tr = MTLTrainer(_task_dict(TASKS, {}), "EW", "HPS", _Enc, {t: _Head() for t in TASKS}, False, False,
                    {"optim": "adam", "lr": 1e-3}, None, device="cpu", verbose=False)
    assert isinstance(tr, LibMTL.Trainer) and tr.device == torch.device("cpu")
    assert all(p.device.type == "cpu" for p in tr.model.parameters())


def test_a_weighting_with_its_own_step_protocol_runs_through_the_hook(tmp_path):
    from libmtl_repmtl.training.protocols import protocol_for, single_sample

    calls: list[tuple[int, int, int]] = []

    class TwoSamples(LibMTL.weighting.EW):
        @staticmethod
        def libmtl_step_protocol(step):
            first = step.forward_losses()
            second = step.forward_losses()  # a second batch: two loss samples in one step
            step.check(second)
            calls.append((step.epoch, step.batch_index, len(step.weight_args)))
            return second, step.backward_and_step((first + second) / 2)

    assert protocol_for(LibMTL.weighting.EW) is single_sample
    assert protocol_for(TwoSamples) is TwoSamples.libmtl_step_protocol
    res = _run(tmp_path, weighting=TwoSamples, epochs=1)
    assert res["status"] == "complete" and res["weighting"] == "TwoSamples"
    assert [c[:2] for c in calls] == [(0, i) for i in range(4)]  # 16 items, batches of 4: 4 steps
    assert res["epochs"][0]["task_weights"] == {"a": 1.0, "b": 1.0}  # EW's weights, recorded from the hook
