"""``bench`` reuses a run folder only for the settings it was trained with (harness/execute.py settings_conflicts):
a finished (or interrupted) run trained with other settings is refused before anything runs, never skipped as
if it had the grid's settings, nor overwritten."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from libmtl_repmtl.harness.cli import main
from libmtl_repmtl.harness.execute import SettingsConflictError, execute, settings_conflicts
from libmtl_repmtl.harness.plan import plan_grid
from libmtl_repmtl.training.trainer import STOP_ENV

pytestmark = pytest.mark.usefixtures("tiny_digits")  # tests/conftest.py

BASE = ["--benchmarks", "digits", "--methods", "EW", "--epochs", "1"]


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def trained(tmp_path: Path, capsys) -> Path:
    """``OUT`` with one finished digits/EW/seed0 run trained with max_per_domain=20, batch_size=16."""
    out = tmp_path / "O"
    assert main([*BASE, "--out", str(out), "--option", "max_per_domain=20", "batch_size=16"]) == 0
    assert "ran 1, skipped 0" in capsys.readouterr().out
    return out


@pytest.mark.parametrize("dry", [False, True])
def test_a_finished_run_with_other_options_is_refused_naming_its_folder(trained: Path, capsys, dry: bool) -> None:
    run = trained / "digits" / "EW" / "seed0"
    before, summary = _digest(run), (trained / "summary.md").read_bytes()
    argv = [*BASE, "--out", str(trained), "--option", "max_per_domain=10", "batch_size=16", "lr=0.5"]
    with pytest.raises(SystemExit) as err:
        main([*argv, *(["--dry-run"] if dry else [])])
    msg = str(err.value)
    assert f"{run}: " in msg and "1 run folder(s) hold a run trained with other settings" in msg
    assert "lr: 0.01 (recorded) vs 0.5 (this grid)" in msg and "max_per_domain: 20 (recorded) vs 10 (this grid)" in msg
    assert "another --out" in msg and "delete those folders" in msg
    assert "batch_size" not in msg and "train_bs" not in msg  # the same batch size is no difference
    assert _digest(run) == before and (trained / "summary.md").read_bytes() == summary  # nothing ran or was written
    assert "skip" not in capsys.readouterr().out


def test_the_same_settings_are_skipped(trained: Path, capsys) -> None:
    run = trained / "digits" / "EW" / "seed0"
    before = _digest(run)
    # the same settings, spelt otherwise (train_bs/test_bs for batch_size) and on another device string
    assert main([*BASE, "--out", str(trained), "--device", "auto", "--option", "max_per_domain=20", "train_bs=16",
                 "test_bs=16"]) == 0
    assert "ran 0, skipped 1 (already complete)" in capsys.readouterr().out
    assert _digest(run) == before
    assert main([*BASE, "--out", str(trained), "--dry-run", "--option", "max_per_domain=20", "batch_size=16"]) == 0
    assert "[done] digits/EW/seed0" in capsys.readouterr().out


def test_execute_refuses_too_and_other_seeds_or_methods_are_other_folders(trained: Path) -> None:
    grid = plan_grid(["digits"], ["EW", "UW"], [0, 1], trained,
                     {"digits": {"epochs": 1, "max_per_domain": 20, "batch_size": 16, "weight_decay": 0.0}})
    conflicts = settings_conflicts(grid)
    assert [c.run.label for c in conflicts] == ["digits/EW/seed0"]  # the only folder holding a run
    assert conflicts[0].differences == {"weight_decay": (1e-5, 0.0), "optim_param.weight_decay": (1e-5, 0.0)}
    ran: list[str] = []
    with pytest.raises(SettingsConflictError, match="digits/EW/seed0: .*; weight_decay: 1e-05 \\(recorded\\) vs 0.0"):
        execute(grid, runner=lambda *a, **k: ran.append(a[1]))
    assert ran == []


def test_an_interrupted_run_with_other_settings_is_refused_before_resuming(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "O"
    argv = ["--benchmarks", "digits", "--methods", "EW", "--epochs", "2", "--out", str(out), "--option",
            "max_per_domain=20", "batch_size=16"]
    monkeypatch.setenv(STOP_ENV, "1")
    with pytest.raises(KeyboardInterrupt):  # killed after epoch 0: last.pt kept
        main(argv)
    monkeypatch.delenv(STOP_ENV)
    run = out / "digits" / "EW" / "seed0"
    assert json.loads((run / "results.json").read_text())["status"] == "interrupted" and (run / "last.pt").is_file()
    before = _digest(run)
    with pytest.raises(SystemExit, match="lr: 0.01 \\(recorded\\) vs 0.5 \\(this grid\\)"):
        main([*argv, "lr=0.5"])
    assert _digest(run) == before
    assert main(argv) == 0  # the same settings: resumed and finished
    assert json.loads((run / "results.json").read_text())["epochs_done"] == 2


def test_settings_the_previous_version_recorded_and_this_one_does_not_are_no_difference(trained: Path) -> None:
    """A finished run of the previous version records ``aug`` and ``encoder`` for digits (which never read them):
    still the same run. A setting this version records that the run lacks is still a difference."""
    results = trained / "digits" / "EW" / "seed0" / "results.json"
    grid = plan_grid(["digits"], ["EW"], [0], trained, {"digits": {"epochs": 1, "max_per_domain": 20,
                                                                   "batch_size": 16}})
    assert settings_conflicts(grid) == []
    data = json.loads(results.read_text())
    data["config"].update(aug=False, encoder=None)  # as the previous version wrote them
    results.write_text(json.dumps(data))
    assert settings_conflicts(grid) == []
    del data["config"]["lr"]
    results.write_text(json.dumps(data))
    [conflict] = settings_conflicts(grid)
    assert conflict.differences == {"lr": ("(not recorded)", 0.01)}
