"""Exact resume: a run interrupted after an epoch and resumed ends exactly like an uninterrupted one.

Deterministic mode (``torch.use_deterministic_algorithms(True)``, fixed seeds). Covered: RepMTL and stateful
LibMTL weightings (DWA's loss buffer, UW's parameters), Adam and a step scheduler, shuffled loaders, random
augmentation drawn from the global torch / NumPy / Python RNGs (NYUv2's RandomScaleCrop on generated data),
and multi-input loaders of different lengths (the shorter ones wrap around mid-epoch, so the resumed run has
to continue inside an iterator).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from libmtl_repmtl.benchmarks import Baseline, Benchmark, register
from libmtl_repmtl.training import run_experiment
from libmtl_repmtl.training.resume import LoaderCursor
from libmtl_repmtl.training.trainer import STOP_ENV
from tests._models import PooledLinearHead, TinyConvEncoder, acc_ce_task_dict

#: Per-epoch fields that measure time or memory (they legitimately differ between two runs).
_VOLATILE = {"train_seconds", "val_seconds", "test_seconds", "peak_memory_mb"}


@pytest.fixture(autouse=True)
def _deterministic():
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(before)


@pytest.fixture(scope="module")
def nyu_root(tmp_path_factory) -> Path:
    from libmtl_repmtl.data.synthetic import generate

    return generate("nyuv2", tmp_path_factory.mktemp("nyu"), size=4, test_size=2, height=16, width=24, seed=3)


def _epochs(res: dict[str, Any]) -> list[dict[str, Any]]:
    return [{k: v for k, v in e.items() if k not in _VOLATILE} for e in res["epochs"]]


def _assert_same_run(a: Path, b: Path, res_a: dict[str, Any], res_b: dict[str, Any]) -> None:
    assert _epochs(res_a) == _epochs(res_b)  # every loss, metric, Δp, lr, task weight and RepMTL statistic
    assert res_a["best_epoch"] == res_b["best_epoch"]
    ca = torch.load(a / "last.pt", weights_only=False)
    cb = torch.load(b / "last.pt", weights_only=False)
    assert ca["model"].keys() == cb["model"].keys()
    for k in ca["model"]:
        assert torch.equal(ca["model"][k], cb["model"][k]), k
    for pa, pb in zip(ca["optimizer"]["state"].values(), cb["optimizer"]["state"].values()):
        assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert ca["scheduler"] == cb["scheduler"]
    wa, wb = ca["weighting_state"], cb["weighting_state"]
    assert wa.keys() == wb.keys()
    np.testing.assert_array_equal(wa["train_loss_buffer"], wb["train_loss_buffer"])
    assert wa.get("_repmtl_step") == wb.get("_repmtl_step")


def _interrupted_then_resumed(monkeypatch, save: Path, stop_after: int, run) -> dict[str, Any]:
    monkeypatch.setenv(STOP_ENV, str(stop_after))
    with pytest.raises(KeyboardInterrupt):
        run(save, resume=False)
    monkeypatch.delenv(STOP_ENV)
    return run(save, resume=True)


# DWA needs 3 epochs: its weights use the loss buffer from epoch 2 on (the resumed run reads epoch 0's back)
@pytest.mark.parametrize("weighting,arch,epochs", [("RepMTL", "RepHPS", 2), ("DWA", "HPS", 3), ("UW", "HPS", 2)])
def test_nyuv2_resume_is_exact(tmp_path, monkeypatch, nyu_root, weighting, arch, epochs):
    def run(save: Path, resume: bool) -> dict[str, Any]:
        return run_experiment("nyuv2", weighting, arch, nyu_root, save, epochs=epochs, seed=7, device="cpu",
                              encoder="tiny", pretrained="none", aug=True, train_bs=2, test_bs=2,
                              scheduler="step", step_size=1, gamma=0.5, lr=1e-3, resume=resume, verbose=False,
                              progress=False)

    monkeypatch.delenv(STOP_ENV, raising=False)
    straight = run(tmp_path / "straight", resume=False)
    resumed = _interrupted_then_resumed(monkeypatch, tmp_path / "resumed", 1, run)
    assert resumed["status"] == "complete" and resumed["epochs_done"] == epochs
    _assert_same_run(tmp_path / "straight", tmp_path / "resumed", straight, resumed)
    if weighting == "DWA":  # the resumed epoch 2 weighted the tasks from the restored loss buffer
        assert straight["epochs"][2]["task_weights"] != {t: 1.0 for t in straight["tasks"]}


# ---------------------------------------------------------------------------------------------- multi-input
TASKS = ("a", "b")


class _Noisy(Dataset):
    """``x (3, 6, 6)``, label = sign of a channel mean; ``__getitem__`` adds noise from the torch, NumPy and
    Python global RNGs (random augmentation) so any RNG drift changes the data."""

    def __init__(self, n: int, seed: int, channel: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 3, 6, 6, generator=g)
        self.y = (self.x[:, channel].mean((1, 2)) > 0).long()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        noise = 0.1 * torch.randn(3, 6, 6) + float(np.random.uniform(-0.1, 0.1)) + random.uniform(-0.1, 0.1)
        return self.x[i] + noise, self.y[i]


_task_dict = acc_ce_task_dict


#: Training items per task: 3 and 2 batches of 4, so task b's iterator wraps around inside every epoch.
TRAIN_SIZES = {"a": 12, "b": 8}


def _multi_loaders(tasks, opts):
    sizes = TRAIN_SIZES
    out: dict[str, Any] = {}
    for k, split in enumerate(("train", "val", "test")):
        out[split] = {t: DataLoader(_Noisy(sizes[t] if split == "train" else 4, 10 * k + i, i),
                                    batch_size=opts["train_bs"],
                                    shuffle=split == "train", drop_last=split == "train",
                                    generator=torch.Generator().manual_seed(opts["seed"] + i))
                      for i, t in enumerate(tasks)}
    return out


register(Benchmark(
    name="resume-multi", tasks=TASKS, multi_input=True, has_val=True, task_dict=_task_dict,
    dataloaders=_multi_loaders, encoder_class=lambda o: TinyConvEncoder,
    decoders=lambda tasks, o: nn.ModuleDict({t: PooledLinearHead() for t in tasks}),
    defaults={"epochs": 4, "train_bs": 4, "lr": 1e-2},
    baseline=Baseline.in_metric_units({"a": [0.5], "b": [0.5]})))


@pytest.mark.parametrize("weighting,arch,stop_after", [("RepMTL", "RepHPS", 1), ("DWA", "HPS", 2)])
def test_multi_input_resume_inside_a_wrapped_iterator_is_exact(tmp_path, monkeypatch, weighting, arch, stop_after):
    def run(save: Path, resume: bool) -> dict[str, Any]:
        return run_experiment("resume-multi", weighting, arch, None, save, epochs=4, seed=5, device="cpu",
                              resume=resume, verbose=False, progress=False)

    monkeypatch.delenv(STOP_ENV, raising=False)
    straight = run(tmp_path / "straight", resume=False)
    resumed = _interrupted_then_resumed(monkeypatch, tmp_path / "resumed", stop_after, run)
    _assert_same_run(tmp_path / "straight", tmp_path / "resumed", straight, resumed)
    ck = torch.load(tmp_path / "resumed" / "last.pt", weights_only=False)
    # task b's loader (2 batches) served 3 batches per epoch: after 4 epochs, 12 = 6 iterators x 2 batches
    b = ck["data_order"]["train"][1]
    assert b["iterations"] == 6 and b["consumed"] == 0 and not b["active"]


def _stopped_after_one_epoch(monkeypatch, save: Path) -> Path:
    """``save`` holding an EW run of ``resume-multi`` interrupted after the first of its 2 epochs."""
    monkeypatch.setenv(STOP_ENV, "1")
    with pytest.raises(KeyboardInterrupt):
        run_experiment("resume-multi", "EW", "HPS", None, save, epochs=2, device="cpu", verbose=False)
    monkeypatch.delenv(STOP_ENV)
    return save


def test_resume_with_another_batch_size_is_refused(tmp_path, monkeypatch):
    save = _stopped_after_one_epoch(monkeypatch, tmp_path / "run")
    with pytest.raises(ValueError, match=r"other settings than this run's: .*train_bs: 4 \(checkpoint\) vs 2"):
        run_experiment("resume-multi", "EW", "HPS", None, save, epochs=2, device="cpu", verbose=False,
                       resume=True, train_bs=2)


def test_resume_after_the_data_changed_warns_and_continues(tmp_path, monkeypatch):
    """The same settings but other data (e.g. a dataset folder rewritten): the data order cannot be restored."""
    save = _stopped_after_one_epoch(monkeypatch, tmp_path / "run")
    monkeypatch.setitem(TRAIN_SIZES, "a", 24)
    with pytest.warns(RuntimeWarning, match=r"data order cannot be restored \(the a training loader gives 6 "
                                            r"batches per pass but the checkpoint's gave 3"):
        res = run_experiment("resume-multi", "EW", "HPS", None, save, epochs=2, device="cpu", verbose=False,
                             resume=True)
    assert res["status"] == "complete" and res["epochs_done"] == 2


# ---------------------------------------------------------------------------------------------- the cursor
def _batches(cursor: LoaderCursor, n: int) -> list[torch.Tensor]:
    return [cursor.next_batch()[0] for _ in range(n)]


def test_cursor_state_round_trip_mid_iterator():
    def loader() -> DataLoader:
        return DataLoader(_Noisy(10, 0, 0), batch_size=3, shuffle=True, drop_last=True,
                          generator=torch.Generator().manual_seed(1))

    torch.manual_seed(0)
    ref = LoaderCursor(loader())
    _batches(ref, 4)  # one full pass (3 batches) and one batch into the second
    state = ref.state_dict()
    rng = torch.get_rng_state()
    expected = _batches(ref, 5)

    other = LoaderCursor(loader())
    other.load_state_dict(state)
    torch.set_rng_state(rng)  # the trainer restores the global RNGs after the data order
    got = _batches(other, 5)
    assert all(torch.equal(x, y) for x, y in zip(expected, got))
    assert other.state_dict()["iterations"] == ref.state_dict()["iterations"] == 3


def test_cursor_settle_drains_an_exhausted_iterator_without_loading():
    calls: list[int] = []

    class Counting(_Noisy):
        def __getitem__(self, i: int):
            calls.append(i)
            return super().__getitem__(i)

    cur = LoaderCursor(DataLoader(Counting(7, 0, 0), batch_size=2, shuffle=True, drop_last=True,
                                  generator=torch.Generator().manual_seed(0)))
    _batches(cur, 3)
    assert cur.state_dict()["active"] and len(calls) == 6
    cur.settle()
    st = cur.state_dict()
    assert not st["active"] and st["consumed"] == 0 and len(calls) == 6  # drained: nothing loaded


def test_cursor_refuses_a_state_of_another_loader():
    cur = LoaderCursor(DataLoader(_Noisy(8, 0, 0), batch_size=2, shuffle=True,
                                  generator=torch.Generator().manual_seed(0)))
    _batches(cur, 1)
    state = cur.state_dict()
    other = LoaderCursor(DataLoader(_Noisy(6, 0, 0), batch_size=2, shuffle=True,
                                    generator=torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match="gives 3 batches per pass but the checkpoint.s gave 4"):
        other.load_state_dict(state)


# ---------------------------------------------------------------------------------------------- example command
@pytest.mark.slow
def test_example_command_resume_is_exact(tmp_path, nyu_root):
    """``examples/nyuv2/main.py --aug`` killed after epoch 1 and rerun with ``--resume`` == one uninterrupted run."""
    import json
    import os
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "examples" / "nyuv2" / "main.py"

    def cmd(save: Path, *extra: str) -> list[str]:
        return [sys.executable, str(script), "--dataset_path", str(nyu_root), "--save_path", str(save), "--encoder",
                "tiny", "--pretrained", "none", "--train_bs", "2", "--test_bs", "2", "--device", "cpu",
                "--no_progress", "--epochs", "3", "--aug", "--weighting", "RepMTL", "--arch", "RepHPS", *extra]

    def run(args: list[str], stop: str | None = None) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k != STOP_ENV}
        if stop:
            env[STOP_ENV] = stop
        return subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)

    assert run(cmd(tmp_path / "a")).returncode == 0
    assert run(cmd(tmp_path / "b"), stop="1").returncode == 130
    second = run(cmd(tmp_path / "b", "--resume"))
    assert second.returncode == 0, second.stderr[-2000:]
    res = [json.loads((tmp_path / s / "results.json").read_text()) for s in ("a", "b")]
    _assert_same_run(tmp_path / "a", tmp_path / "b", res[0], res[1])


@pytest.mark.parametrize("persistent", [True, False])
def test_cursor_order_with_worker_processes(persistent):
    """With ``num_workers > 0`` the batch order is restored too, inside a later iterator (4 batches drawn: one
    into the second pass) and between passes (6 drawn, settled); persistent workers draw no base seed for
    iterators after their first, which the restore has to reproduce."""
    def loader() -> DataLoader:
        return DataLoader(list(range(10)), batch_size=3, shuffle=True, drop_last=True, num_workers=2,
                          persistent_workers=persistent, generator=torch.Generator().manual_seed(1))

    for drawn in (4, 6):
        ref = LoaderCursor(loader())
        for _ in range(drawn):
            ref.next_batch()
        ref.settle()
        state = ref.state_dict()
        assert state["active"] == (drawn == 4)
        expected = [ref.next_batch().tolist() for _ in range(4)]
        other = LoaderCursor(loader())
        other.load_state_dict(state)
        assert [other.next_batch().tolist() for _ in range(4)] == expected
