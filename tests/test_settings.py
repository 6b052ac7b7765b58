"""The training settings of a run (training/settings.py) and the resume that refuses other settings
(training/checkpoint.py): a continuation trains what the checkpoint trained, or is refused before anything runs."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import torch

from libmtl_repmtl.training.checkpoint import CHECKPOINT_FORMAT
from libmtl_repmtl.training.example_cli import main as example_main
from libmtl_repmtl.training.experiment import planned_settings, run_experiment
from libmtl_repmtl.training.settings import (
    NOT_RECORDED,
    NOT_SETTINGS,
    describe_differences,
    setting_differences,
    training_settings,
)
from tests._hostile import run_hostile

FILES = ("results.json", "last.pt", "best.pt")


# ---------------------------------------------------------------------------------------------- the settings
def test_training_settings_leave_out_only_the_allow_list():
    config = {"lr": 0.01, "seed": 0, "weight_args": {"T": 2.0}, "tasks": ("a", "b"), "epochs": 3, "device": "cpu",
              "save_path": "/x", "dataset_path": "/d", "resume": True, "num_workers": 2, "test_bs": 8,
              "argv_params": {"lr": 0.01}, "train_bs": 4, "max_per_domain": 64}
    assert training_settings(config) == {"lr": 0.01, "seed": 0, "weight_args": {"T": 2.0}, "tasks": ["a", "b"],
                                         "train_bs": 4, "max_per_domain": 64}
    assert set(config) - set(training_settings(config)) == NOT_SETTINGS
    assert training_settings({"gamma": float("nan")}) == {"gamma": None}  # as results.json stores it


def test_differences_name_each_setting_with_both_values():
    first = {"lr": 1e-4, "seed": 0, "epochs": 1, "weight_args": {"RepMTL_tau": 1.0, "RepMTL_lambda_tsr": 0.1},
             "device": "cpu"}
    second = {"lr": 0.01, "seed": 0, "epochs": 5, "weight_args": {"RepMTL_tau": 0.5, "RepMTL_lambda_tsr": 0.1},
              "device": "cuda:0", "n_train": 32}
    diffs = setting_differences(first, second)
    assert diffs == {"lr": (1e-4, 0.01), "n_train": (NOT_RECORDED, 32), "weight_args.RepMTL_tau": (1.0, 0.5)}
    assert describe_differences(diffs, "checkpoint", "this run") == (
        "lr: 0.0001 (checkpoint) vs 0.01 (this run); n_train: (not recorded) (checkpoint) vs 32 (this run); "
        "weight_args.RepMTL_tau: 1.0 (checkpoint) vs 0.5 (this run)")
    assert setting_differences(first, {**first, "epochs": 9, "device": "cuda", "resume": True}) == {}


def test_planned_settings_are_what_the_run_records(tmp_path):
    res = run_hostile(tmp_path / "r", epochs=1, lr=0.02, diverge_at=100, seed=3)
    planned = planned_settings("hostile", "EW", "HPS", None, tmp_path / "elsewhere", epochs=1, lr=0.02,
                               diverge_at=100, seed=3, device="cpu", verbose=False, progress=False, baseline="none")
    assert planned == training_settings(res["config"])
    assert planned["optim_param"]["lr"] == 0.02 and planned["diverge_at"] == 100
    assert setting_differences(planned, planned_settings("hostile", "EW", "HPS", None, tmp_path, epochs=1, lr=0.03,
                                                         diverge_at=100, seed=3, baseline="none")) == \
        {"lr": (0.02, 0.03), "optim_param.lr": (0.02, 0.03)}


# ---------------------------------------------------------------------------------------------- resume
def _digests(save: Path) -> dict[str, str]:
    return {f: hashlib.sha256((save / f).read_bytes()).hexdigest() for f in FILES}


def _trained_one_epoch(save: Path) -> dict[str, str]:
    run_hostile(save, epochs=1, diverge_at=100)
    assert torch.load(save / "last.pt", weights_only=False)["settings"]["diverge_at"] == 100
    return _digests(save)


@pytest.mark.parametrize("change,named", [
    ({"lr": 0.5}, "lr: 0.01 (checkpoint) vs 0.5 (this run)"),
    ({"seed": 5}, "seed: 0 (checkpoint) vs 5 (this run)"),
    ({"weight_args": {"T": 7.0}}, "weight_args.T: 2.0 (checkpoint) vs 7.0 (this run)"),
    ({"diverge_at": 50}, "diverge_at: 100 (checkpoint) vs 50 (this run)"),
    ({"train_bs": 2}, "train_bs: 4 (checkpoint) vs 2 (this run)"),
])
def test_resume_with_other_settings_is_refused_and_changes_nothing(tmp_path, change, named):
    save = tmp_path / "run"
    before = _trained_one_epoch(save)
    kw: dict[str, Any] = {"diverge_at": 100, **change}
    with pytest.raises(ValueError, match="cannot resume from .*last.pt: it was trained with other settings") as err:
        run_hostile(save, epochs=2, resume=True, **kw)
    msg = str(err.value)
    assert named in msg and "another --save_path" in msg and "drop --resume" in msg
    assert _digests(save) == before  # refused before training: no file written


def test_more_epochs_of_a_cosine_schedule_derived_from_them_are_refused(tmp_path):
    """T_max defaults to the epochs: the checkpoint's schedule ends at epoch 1, an uninterrupted 2-epoch run's
    would not, so the continuation would not be the run it claims to be."""
    save = tmp_path / "run"
    run_hostile(save, epochs=1, scheduler="cos")
    with pytest.raises(ValueError, match=r"scheduler_param.T_max: 1 \(checkpoint\) vs 2 \(this run\)"):
        run_hostile(save, epochs=2, resume=True, scheduler="cos")


def test_resume_with_more_epochs_and_other_allowed_settings_continues(tmp_path):
    save = tmp_path / "run"
    _trained_one_epoch(save)
    res = run_experiment("hostile", "EW", "HPS", None, save, epochs=3, resume=True, device="auto",
                         verbose=False, progress=False, baseline="none", diverge_at=100, test_bs=2)
    assert res["status"] == "complete" and res["epochs_done"] == 3 and len(res["epochs"]) == 3
    assert res["config"]["test_bs"] == 2
    # the other allowed changes (num_workers, a moved data folder) are settings this tiny benchmark does not read;
    # they are in the allow-list:
    assert {"num_workers", "dataset_path", "device", "epochs"} <= NOT_SETTINGS


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cpu_run_continues_on_cuda(tmp_path):
    save = tmp_path / "run"
    _trained_one_epoch(save)
    res = run_experiment("hostile", "EW", "HPS", None, save, epochs=2, resume=True, device="cuda", verbose=False,
                         progress=False, baseline="none", diverge_at=100)
    assert res["status"] == "complete" and res["epochs_done"] == 2 and res["device"].startswith("cuda")


def test_a_checkpoint_without_settings_gets_the_format_message(tmp_path):
    save = tmp_path / "run"
    _trained_one_epoch(save)
    state = torch.load(save / "last.pt", weights_only=False)
    state.pop("settings")
    state["format"] = "libmtl_repmtl.checkpoint/2"  # what the previous version wrote
    torch.save(state, save / "last.pt")
    before = _digests(save)
    with pytest.raises(ValueError, match=rf"its format is 'libmtl_repmtl.checkpoint/2', this version resumes only "
                                         rf"'{CHECKPOINT_FORMAT}'; use another --save_path \(or drop --resume\)"):
        run_hostile(save, epochs=2, resume=True, diverge_at=100)
    assert _digests(save) == before


def test_example_refuses_a_resume_with_another_lr_with_status_2(tmp_path, nyu_root, capsys):
    save = tmp_path / "nyu"
    argv = ["--dataset_path", str(nyu_root), "--save_path", str(save), "--encoder", "tiny", "--pretrained", "none",
            "--train_bs", "2", "--test_bs", "2", "--device", "cpu", "--no_progress", "--epochs", "1",
            "--weighting", "EW", "--arch", "HPS"]
    assert example_main("nyuv2", argv) == 0
    before = _digests(save)
    capsys.readouterr()
    assert example_main("nyuv2", [*argv, "--resume", "--epochs", "2", "--lr", "0.01"]) == 2
    err = capsys.readouterr().err
    assert "it was trained with other settings" in err and "lr: 0.0001 (checkpoint) vs 0.01 (this run)" in err
    assert _digests(save) == before
    assert example_main("nyuv2", [*argv, "--resume", "--epochs", "2"]) == 0  # the same flags, more epochs
