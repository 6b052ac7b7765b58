"""Hostile input through the trainer and the example commands: each gives a clear error naming the file (data
files) or the split, epoch, batch and task (batch contents), and leaves no half-written result or checkpoint.

The dataset readers' own checks are unit-tested in ``test_data_dense.py`` / ``test_data_office.py``; here the
same problems travel through ``run_experiment`` / ``MTLTrainer`` (and one example command), plus what only the
trainer sees: NaN/Inf in batches, labels out of range, targets of the wrong shape or dtype, empty splits and
diverging losses. A full disk while the run's files are written: ``test_hostile_disk.py``.
"""

from __future__ import annotations

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
from torch.utils.data import DataLoader

from libmtl_repmtl.data.dense import DatasetFormatError
from libmtl_repmtl.training import run_experiment
from libmtl_repmtl.training.checks import BatchDataError
from libmtl_repmtl.training.trainer import STOP_ENV, MTLTrainer, NonFiniteLossError
from tests._hostile import TASKS, Data, failed, no_partial_files, run_hostile, task_dict
from tests._models import PooledLinearHead, TinyConvEncoder

ROOT = Path(__file__).resolve().parents[1]


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
        run_hostile(tmp_path, poison=poison, poison_split=split, poison_from=poison_from)
    msg = str(err.value)
    assert where in msg and match in msg, msg
    failed(tmp_path, where)
    if where.startswith("training epoch 1"):  # epoch 0's files are complete and stay as they were
        assert torch.load(tmp_path / "last.pt", weights_only=False)["epoch"] == 0
        assert no_partial_files(tmp_path)["epochs_done"] == 1
    else:
        assert not (tmp_path / "last.pt").exists() or split != "train"


def test_nan_input_stops_before_any_parameter_update():
    tr = MTLTrainer(task_dict(TASKS, {}), "EW", "HPS", TinyConvEncoder,
                    {"cls": PooledLinearHead(), "depth": nn.Conv2d(4, 1, 1)},
                    False, False, {"optim": "adam", "lr": 1e-2}, None, device="cpu", verbose=False)
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    train = DataLoader(Data(8, 0, _nan_input, poison_from=5), batch_size=4)  # item 5: batch 1
    with pytest.raises(BatchDataError, match="training epoch 0, batch 1"):
        tr.train(train, DataLoader(Data(4, 1), batch_size=4), 1)
    after = tr.model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed  # batch 0 trained ...
    steps = {int(s["step"]) for s in tr.optimizer.state_dict()["state"].values()}
    assert steps == {1}  # ... and batch 1 did not: one optimiser step only


def test_wrong_input_shape_error_names_the_step(tmp_path):
    def five_channels(x, y):
        return torch.cat([x, x[:2]]), y

    with pytest.raises(RuntimeError) as err:
        run_hostile(tmp_path, poison=five_channels)
    assert "channels" in str(err.value)
    if sys.version_info >= (3, 11):
        assert "while processing training epoch 0, batch 0 (input batch (4, 5, 8, 8) float32)" in err.value.__notes__
    failed(tmp_path, "channels")


def test_diverging_loss_names_task_and_step(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"non-finite training loss of task\(s\) \['cls'\] at epoch 1, "
                                                 r"batch 0") as err:
        run_hostile(tmp_path, diverge_at=2)  # finite for epoch 0's two batches
    assert "no parameter was updated" in str(err.value)
    res = failed(tmp_path, "NonFiniteLossError")
    assert res["epochs_done"] == 1 and torch.load(tmp_path / "last.pt", weights_only=False)["epoch"] == 0


@pytest.mark.parametrize("split", ["test", "val"])
def test_empty_evaluation_split(tmp_path, split):
    with pytest.raises(BatchDataError, match=f"the {split} data yield no batch: the {split} split is empty"):
        run_hostile(tmp_path, empty=split)
    assert list(tmp_path.iterdir()) == []  # refused before the first epoch: nothing written


def test_empty_task_split_multi_input():
    tr = MTLTrainer(task_dict(TASKS, {}), "EW", "HPS", TinyConvEncoder,
                    {"cls": PooledLinearHead(), "depth": nn.Conv2d(4, 1, 1)},
                    False, True, {"optim": "adam", "lr": 1e-2}, None, device="cpu", verbose=False)
    full = {t: DataLoader(Data(4, 0), batch_size=4) for t in TASKS}
    empty = {**full, "depth": DataLoader(Data(0, 0), batch_size=4)}
    with pytest.raises(BatchDataError, match=r"the val data of task\(s\) \['depth'\] yield no batch"):
        tr.train(full, full, 1, val_dataloaders=empty)


# ---------------------------------------------------------------------------------------------- data files
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
    res = failed(save, str(bad))
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
    assert failed(save, str(bad))["epochs_done"] == 1


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
                       pretrained="none", train_bs=2, test_bs=1, list_dir=str(root), image_size=32, verbose=False,
                       progress=False)
    assert str(bad) in str(err.value)
    failed(save, str(bad))


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
    failed(save, str(bad))
