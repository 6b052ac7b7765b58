"""Hostile input through the trainer and the example commands: each gives a clear error naming the file (data
files) or the split, epoch, batch and task (batch contents), and leaves no half-written result or checkpoint.

The dataset readers' own checks are unit-tested in ``test_data_dense.py`` / ``test_data_office.py``; here the
same problems travel through ``run_experiment`` / ``MTLTrainer`` (and one example command), plus what only the
trainer sees: NaN/Inf in batches, labels out of range, targets of the wrong shape or dtype, empty splits,
diverging losses and a full disk while ``results.json`` / ``best.pt`` / ``last.pt`` are written.
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from libmtl_repmtl.benchmarks import Benchmark, register
from libmtl_repmtl.data.dense import DatasetFormatError
from libmtl_repmtl.libmtl.bases import AbsLoss, LibMTL
from libmtl_repmtl.tasks.losses import DepthLoss
from libmtl_repmtl.tasks.metrics import DepthMetric
from libmtl_repmtl.training import io as tio
from libmtl_repmtl.training import run_experiment
from libmtl_repmtl.training.checks import BatchDataError
from libmtl_repmtl.training.io import RunFileWriteError
from libmtl_repmtl.training.trainer import STOP_ENV, MTLTrainer, NonFiniteLossError
from tests._models import PooledLinearHead, TinyConvEncoder

TASKS = ("cls", "depth")
ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------- a tiny benchmark
class _Data(Dataset):
    """``x (3, 8, 8)``; ``cls`` = sign of channel 0's mean (2 classes), ``depth`` = ``(1, 8, 8)`` > 0.

    ``poison(item) -> item`` is applied from the ``poison_from``-th ``__getitem__`` call on (counting calls lets
    a test poison the second epoch of an unshuffled loader); ``x_channels`` / ``target`` alter every item."""

    def __init__(self, n: int, seed: int, poison: Any = None, poison_from: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 3, 8, 8, generator=g)
        self.cls = (self.x[:, 0].mean((1, 2)) > 0).long()
        self.depth = self.x[:, 1:2].abs() + 0.5
        self.poison, self.poison_from, self.calls = poison, poison_from, 0

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        item = (self.x[i].clone(), {"cls": self.cls[i].clone(), "depth": self.depth[i].clone()})
        self.calls += 1
        if self.poison is not None and self.calls > self.poison_from:
            item = self.poison(*item)
        return item


class _Enc(TinyConvEncoder):
    def __init__(self) -> None:
        super().__init__(width=4)


class _ClsHead(PooledLinearHead):
    def __init__(self) -> None:
        super().__init__(width=4)


class _Diverging(AbsLoss):
    """A loss that is infinite from the ``at``-th batch on (a model that diverges on finite data)."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at, self.n = at, 0

    def compute_loss(self, pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        self.n += 1
        loss = nn.functional.cross_entropy(pred, gt)
        return loss * float("inf") if self.n > self.at else loss


def _task_dict(tasks, opts):
    cls_loss = _Diverging(int(opts["diverge_at"])) if opts.get("diverge_at") is not None else LibMTL.loss.CELoss()
    d = {"cls": {"metrics": ["Acc"], "metrics_fn": LibMTL.metrics.AccMetric(), "loss_fn": cls_loss, "weight": [1]},
         "depth": {"metrics": ["abs_err", "rel_err"], "metrics_fn": DepthMetric(), "loss_fn": DepthLoss(),
                   "weight": [0, 0]}}
    return {t: d[t] for t in tasks}


def _loaders(tasks, opts):
    split = opts.get("poison_split", "train")
    ds = {s: _Data(8 if s == "train" else 4, k, opts.get("poison") if s == split else None,
                   int(opts.get("poison_from", 0))) for k, s in enumerate(("train", "val", "test"))}
    if opts.get("empty"):
        ds[opts["empty"]] = _Data(0, 9)
    return {"train": DataLoader(ds["train"], batch_size=4, drop_last=True),
            "val": DataLoader(ds["val"], batch_size=4), "test": DataLoader(ds["test"], batch_size=4)}


register(Benchmark(
    name="hostile", tasks=TASKS, multi_input=False, has_val=True, task_dict=_task_dict, dataloaders=_loaders,
    encoder_class=lambda o: _Enc,
    decoders=lambda tasks, o: nn.ModuleDict({"cls": _ClsHead(), "depth": nn.Conv2d(4, 1, 1)}),
    defaults={"epochs": 2, "train_bs": 4, "lr": 1e-2}))


def _run(save: Path, **kw: Any) -> dict[str, Any]:
    kw.setdefault("epochs", 2)
    return run_experiment("hostile", "EW", "HPS", None, save, device="cpu", verbose=False, progress=False,
                          baseline="none", **kw)


def _no_partial_files(save: Path) -> dict[str, Any]:
    """Every file of the run is complete (results parse, checkpoints load), no temporary file is left;
    returns the results."""
    names = sorted(p.name for p in save.iterdir())
    assert not [n for n in names if n.startswith(".") or n.endswith(".tmp")], names
    for ck in ("best.pt", "last.pt"):
        if (save / ck).exists():
            assert "model" in torch.load(save / ck, weights_only=False)
    return json.loads((save / "results.json").read_text())


def _failed(save: Path, match: str) -> dict[str, Any]:
    res = _no_partial_files(save)
    assert res["status"] == "failed" and match in res["error"], res["error"]
    return res


# ---------------------------------------------------------------------------------------------- batch contents
def _nan_input(x, y):
    x[0, 2, 2] = float("nan")
    return x, y


def _inf_depth(x, y):
    y["depth"][0, 0, 0] = float("inf")
    return x, y


def _label_7(x, y):
    y["cls"] = torch.tensor(7)
    return x, y


def _depth_wrong_shape(x, y):
    y["depth"] = y["depth"].repeat(2, 1, 1)  # (2, 8, 8): two channels for a one-channel task
    return x, y


def _cls_float(x, y):
    y["cls"] = y["cls"].float()
    return x, y


@pytest.mark.parametrize("poison,split,poison_from,where,match", [
    # NaN in the inputs from the 13th item on: epoch 0 is items 1..8, epoch 1's batch 1 is items 13..16
    (_nan_input, "train", 12, "training epoch 1, batch 1", "input batch (4, 3, 8, 8) float32 has 4 NaN and 0 Inf"),
    (_inf_depth, "train", 0, "training epoch 0, batch 0", "target 'depth' (4, 1, 8, 8) float32 has 0 NaN and 4 Inf"),
    (_inf_depth, "test", 0, "test evaluation after epoch 0, batch 0", "target 'depth'"),
    (_label_7, "train", 0, "training epoch 0, batch 0", "task 'cls': class labels out of range [0, 1]"),
    (_label_7, "val", 0, "val evaluation after epoch 0, batch 0", "found 7"),
    (_depth_wrong_shape, "train", 0, "training epoch 0, batch 0", "the loss of task 'depth' failed on predictions"),
    (_cls_float, "train", 0, "training epoch 0, batch 0", "targets (4,) float32"),
])
def test_bad_batches_name_step_and_task(tmp_path, poison, split, poison_from, where, match):
    with pytest.raises(BatchDataError) as err:
        _run(tmp_path, poison=poison, poison_split=split, poison_from=poison_from)
    msg = str(err.value)
    assert where in msg and match in msg, msg
    _failed(tmp_path, where)
    if where.startswith("training epoch 1"):  # epoch 0's files are complete and stay as they were
        assert torch.load(tmp_path / "last.pt", weights_only=False)["epoch"] == 0
        assert _no_partial_files(tmp_path)["epochs_done"] == 1
    else:
        assert not (tmp_path / "last.pt").exists() or split != "train"


def test_nan_input_stops_before_any_parameter_update():
    tr = MTLTrainer(_task_dict(TASKS, {}), "EW", "HPS", _Enc, {"cls": _ClsHead(), "depth": nn.Conv2d(4, 1, 1)},
                    False, False, {"optim": "adam", "lr": 1e-2}, None, device="cpu", verbose=False)
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    train = DataLoader(_Data(8, 0, _nan_input, poison_from=5), batch_size=4)  # item 5: batch 1
    with pytest.raises(BatchDataError, match="training epoch 0, batch 1"):
        tr.train(train, DataLoader(_Data(4, 1), batch_size=4), 1)
    after = tr.model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed  # batch 0 trained ...
    steps = {int(s["step"]) for s in tr.optimizer.state_dict()["state"].values()}
    assert steps == {1}  # ... and batch 1 did not: one optimiser step only


def test_wrong_input_shape_error_names_the_step(tmp_path):
    def five_channels(x, y):
        return torch.cat([x, x[:2]]), y

    with pytest.raises(RuntimeError) as err:
        _run(tmp_path, poison=five_channels)
    assert "channels" in str(err.value)
    if sys.version_info >= (3, 11):
        assert "while processing training epoch 0, batch 0 (input batch (4, 5, 8, 8) float32)" in err.value.__notes__
    _failed(tmp_path, "channels")


def test_diverging_loss_names_task_and_step(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"non-finite training loss of task\(s\) \['cls'\] at epoch 1, "
                                                 r"batch 0") as err:
        _run(tmp_path, diverge_at=2)  # finite for epoch 0's two batches
    assert "no parameter was updated" in str(err.value)
    res = _failed(tmp_path, "NonFiniteLossError")
    assert res["epochs_done"] == 1 and torch.load(tmp_path / "last.pt", weights_only=False)["epoch"] == 0


@pytest.mark.parametrize("split", ["test", "val"])
def test_empty_evaluation_split(tmp_path, split):
    with pytest.raises(BatchDataError, match=f"the {split} data yield no batch: the {split} split is empty"):
        _run(tmp_path, empty=split)
    assert list(tmp_path.iterdir()) == []  # refused before the first epoch: nothing written


def test_empty_task_split_multi_input():
    tr = MTLTrainer(_task_dict(TASKS, {}), "EW", "HPS", _Enc, {"cls": _ClsHead(), "depth": nn.Conv2d(4, 1, 1)},
                    False, True, {"optim": "adam", "lr": 1e-2}, None, device="cpu", verbose=False)
    full = {t: DataLoader(_Data(4, 0), batch_size=4) for t in TASKS}
    empty = {**full, "depth": DataLoader(_Data(0, 0), batch_size=4)}
    with pytest.raises(BatchDataError, match=r"the val data of task\(s\) \['depth'\] yield no batch"):
        tr.train(full, full, 1, val_dataloaders=empty)


# ---------------------------------------------------------------------------------------------- data files
@pytest.fixture(scope="module")
def nyu_root(tmp_path_factory) -> Path:
    from libmtl_repmtl.data.synthetic import generate

    return generate("nyuv2", tmp_path_factory.mktemp("nyu"), size=4, test_size=2, height=16, width=24, seed=2)


def _nyu(root: Path, save: Path, **kw: Any) -> dict[str, Any]:
    kw.setdefault("epochs", 1)
    return run_experiment("nyuv2", "EW", "HPS", root, save, device="cpu", encoder="tiny", pretrained="none",
                          train_bs=2, test_bs=2, verbose=False, progress=False, **kw)


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[:60])


def _label_out_of_range(p: Path) -> None:
    lab = np.load(p)
    lab[3, 3] = 13
    np.save(p, lab)


def _nan_depth(p: Path) -> None:
    d = np.load(p)
    d[0, 0, 0] = np.nan
    np.save(p, d)


def _int_image(p: Path) -> None:
    np.save(p, (np.load(p) * 255).astype(np.uint8))


def _normal_wrong_shape(p: Path) -> None:
    np.save(p, np.load(p)[:, :, :2])


@pytest.mark.parametrize("folder,damage,match", [
    ("image", _truncate, "corrupt or truncated"),
    ("label", _label_out_of_range, "label values out of range [-1, 12]: found 13"),
    ("depth", _nan_depth, "NaN/Inf"),
    ("image", _int_image, "expected a float array"),
    ("normal", _normal_wrong_shape, "expected H x W x 3"),
])
def test_damaged_npy_fails_the_run_naming_the_file(nyu_root, tmp_path, folder, damage, match):
    root = tmp_path / "data"
    shutil.copytree(nyu_root, root)
    bad = root / "train" / folder / "1.npy"
    damage(bad)
    save = tmp_path / "run"
    with pytest.raises(DatasetFormatError) as err:
        _nyu(root, save)
    assert str(bad) in str(err.value) and match in str(err.value)
    res = _failed(save, str(bad))
    assert res["epochs_done"] == 0 and not (save / "last.pt").exists()


def test_file_damaged_after_a_checkpoint_keeps_the_checkpoint(nyu_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(nyu_root, root)
    save = tmp_path / "run"
    _nyu(root, save, epochs=1)
    before = (save / "last.pt").read_bytes()
    bad = root / "val" / "depth" / "0.npy"
    _truncate(bad)
    with pytest.raises(DatasetFormatError, match="corrupt or truncated") as err:
        _nyu(root, save, epochs=2, resume=True)
    assert str(bad) in str(err.value)
    assert (save / "last.pt").read_bytes() == before  # epoch 0's checkpoint untouched
    assert _failed(save, str(bad))["epochs_done"] == 1


def test_empty_split_folder(nyu_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(nyu_root, root)
    for f in (root / "val").rglob("*.npy"):
        f.unlink()
    with pytest.raises(DatasetFormatError, match=r"val/image holds no \{i\}.npy files: the 'test' split is empty"):
        _nyu(root, tmp_path / "run")
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.fixture(scope="module")
def office_root(tmp_path_factory) -> Path:
    from libmtl_repmtl.data.synthetic import generate

    return generate("office-31", tmp_path_factory.mktemp("o31"), size=2, test_size=1, classes=2, seed=0)


def test_truncated_office_image_fails_the_run_naming_the_file(office_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(office_root, root)
    rel = (root / "webcam_train.txt").read_text().split()[0]
    bad = root / rel
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 3])
    save = tmp_path / "run"
    with pytest.raises(ValueError, match="corrupt or truncated") as err:
        run_experiment("office-31", "EW", "HPS", root, save, epochs=1, device="cpu", encoder="tiny",
                       pretrained="none", train_bs=2, test_bs=1, list_dir=str(root), image_size=16, verbose=False,
                       progress=False)
    assert str(bad) in str(err.value)
    _failed(save, str(bad))


def test_example_command_reports_a_corrupt_file(nyu_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(nyu_root, root)
    bad = root / "train" / "label" / "2.npy"
    _truncate(bad)
    save = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "examples" / "nyuv2" / "main.py"), "--dataset_path", str(root),
           "--save_path", str(save), "--encoder", "tiny", "--pretrained", "none", "--train_bs", "2", "--test_bs",
           "2", "--device", "cpu", "--no_progress", "--epochs", "1", "--weighting", "EW", "--arch", "HPS"]
    env = {k: v for k, v in os.environ.items() if k != STOP_ENV}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"error: {bad}: cannot read the .npy file" in proc.stderr and "Traceback" not in proc.stderr
    _failed(save, str(bad))


# ---------------------------------------------------------------------------------------------- full disk
def _enospc(*_a: Any, **_k: Any) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


class _FullFile(io.RawIOBase):
    """A writable binary file taking ``room`` bytes, then failing with ENOSPC (the disk fills up)."""

    def __init__(self, real: Any, room: int) -> None:
        self.real, self.room = real, room

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        data = bytes(data)
        if len(data) > self.room:
            self.real.write(data[: self.room])
            self.room = 0
            _enospc()
        self.room -= len(data)
        return self.real.write(data)


def _fill_disk_for(monkeypatch, target: str, from_write: int, where: str) -> None:
    """From the ``from_write``-th (1-based) atomic write of ``target`` on, that write fails with ENOSPC: ``write``
    (half the bytes reach the temporary file, then one write fails), ``stream`` (the file object refuses
    writes after 100 bytes, while the serialiser is writing: torch reports it as a RuntimeError), ``fsync`` or
    ``replace`` (the rename)."""
    real_write, real_fsync, real_replace = tio.atomic_write, tio.os.fsync, tio.os.replace
    state = {"n": 0, "armed": False}

    def atomic_write(path, write):
        if Path(path).name == target:
            state["n"] += 1
        state["armed"] = Path(path).name == target and state["n"] >= from_write
        if state["armed"] and where == "write":
            def half(f):
                buf = io.BytesIO()
                write(buf)
                f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
                f.flush()
                _enospc()
            try:
                return real_write(path, half)
            finally:
                state["armed"] = False
        if state["armed"] and where == "stream":
            def limited(f):
                write(_FullFile(f, room=100))
            try:
                return real_write(path, limited)
            finally:
                state["armed"] = False
        try:
            return real_write(path, write)
        finally:
            state["armed"] = False

    def fsync(fd):
        if state["armed"] and where == "fsync":
            _enospc()
        return real_fsync(fd)

    def replace(src, dst):
        if state["armed"] and where == "replace":
            _enospc()
        return real_replace(src, dst)

    monkeypatch.setattr(tio, "atomic_write", atomic_write)
    monkeypatch.setattr(tio.os, "fsync", fsync)
    monkeypatch.setattr(tio.os, "replace", replace)


def _comparable(res: dict[str, Any]) -> list[dict[str, Any]]:
    return [{k: v for k, v in e.items() if not k.endswith("seconds") and k != "peak_memory_mb"} for e in res["epochs"]]


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> dict[str, Any]:
    return _run(tmp_path_factory.mktemp("straight"), epochs=3)


@pytest.mark.parametrize("where", ["write", "stream", "fsync", "replace"])
@pytest.mark.parametrize("target,from_write", [("results.json", 2), ("last.pt", 2), ("best.pt", 1)])
def test_full_disk_while_saving(tmp_path, monkeypatch, straight, target, from_write, where):
    save = tmp_path / "run"
    _fill_disk_for(monkeypatch, target, from_write, where)
    with pytest.raises(RunFileWriteError) as err:
        _run(save, epochs=3)
    epoch = from_write - 1
    msg = str(err.value)
    assert err.value.errno == errno.ENOSPC
    assert f"could not write {save / target} at the end of epoch {epoch}" in msg and "No space left" in msg
    assert "--resume" in msg
    monkeypatch.undo()  # space freed
    res = _no_partial_files(save)
    if target == "results.json":  # the full disk also refused the "failed" status: the epoch-0 version is kept
        assert res["status"] == "running" and res["epochs_done"] == 1
    else:
        assert res["status"] == "failed" and "No space left" in res["error"]
    if target == "best.pt":
        assert not (save / "best.pt").exists() and not (save / "last.pt").exists()  # absent, never partial
    else:
        assert torch.load(save / "last.pt", weights_only=False)["epoch"] == 0  # the previous complete version
    # ... and the run continues from there exactly as if nothing had happened
    resumed = _run(save, epochs=3, resume=True)
    assert _comparable(resumed) == _comparable(straight)


def test_other_errors_while_saving_are_not_reported_as_a_full_disk(tmp_path):
    def broken(path: Path) -> None:
        raise RuntimeError("a bug in the serialiser")

    with pytest.raises(RuntimeError, match="a bug in the serialiser"):
        tio.write_run_file(tmp_path / "last.pt", broken, "the end of epoch 0")


def test_example_command_reports_a_full_disk(nyu_root, tmp_path):
    save = tmp_path / "run"
    script = (
        "import errno, sys\n"
        "from libmtl_repmtl.training import io as tio\n"
        "real = tio.os.replace\n"
        "def replace(src, dst):\n"
        "    if str(dst).endswith('last.pt'):\n"
        "        raise OSError(errno.ENOSPC, 'No space left on device')\n"
        "    return real(src, dst)\n"
        "tio.os.replace = replace\n"
        "from libmtl_repmtl.training.example_cli import main\n"
        "sys.exit(main('nyuv2', sys.argv[1:]))\n")
    cmd = [sys.executable, "-c", script, "--dataset_path", str(nyu_root), "--save_path", str(save), "--encoder",
           "tiny", "--pretrained", "none", "--train_bs", "2", "--test_bs", "2", "--device", "cpu", "--no_progress",
           "--epochs", "1", "--weighting", "EW", "--arch", "HPS"]
    env = {k: v for k, v in os.environ.items() if k != STOP_ENV}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert f"error: could not write {save / 'last.pt'} at the end of epoch 0" in proc.stderr
    assert "Traceback" not in proc.stderr
    res = _failed(save, "No space left")
    assert sorted(p.name for p in save.iterdir()) == ["best.pt", "results.json"]
    assert res["epochs_done"] == 1
