"""The README's commands on generated data work as written (the generated Office lists are read from the data
folder; the README's batch size yields batches), and the default batch size on that data fails clearly."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from libmtl_repmtl.data.synthetic import generate
from libmtl_repmtl.training.checks import BatchDataError
from libmtl_repmtl.training.experiment import run_experiment

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[list[str]]:
    """The commands of the README's generated-data block, one argv each (line continuations joined)."""
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    block = next(b for b in blocks if "libmtl_repmtl.data.synthetic office-31" in b)
    return [shlex.split(c) for c in block.replace("\\\n", " ").splitlines() if c.strip()]


def _in(cmds: list[list[str]], tmp: Path) -> list[list[str]]:
    """The README's commands with its ``/tmp/...`` folders moved under ``tmp`` (nothing else changed)."""
    return [[str(tmp / a[len("/tmp/"):]) if a.startswith("/tmp/") else a for a in c] for c in cmds]


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    assert cmd[0] == "python"
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    return subprocess.run([sys.executable, *cmd[1:]], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=1800)


def test_readme_office_command_on_generated_data_runs(tmp_path: Path) -> None:
    """The README's two Office lines, as written (paths under tmp; ``--encoder tiny`` added for speed)."""
    cmds = _in(_readme_commands(), tmp_path)
    gen, train = [c for c in cmds if "office-31" in c]
    assert "--list_dir" not in train  # the lists are found in the data folder
    assert _run(gen, ROOT).returncode == 0
    proc = _run([*train, "--encoder", "tiny", "--no_progress"], ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((Path(train[train.index("--save_path") + 1]) / "results.json").read_text())
    assert res["status"] == "complete" and res["epochs_done"] == 1


@pytest.mark.slow
def test_readme_generated_data_commands_run_exactly_as_written(tmp_path: Path) -> None:
    """Every command of the block, exactly as written (paths under tmp), from the checkout's root."""
    for cmd in _in(_readme_commands(), tmp_path):
        proc = _run(cmd, ROOT)
        assert proc.returncode == 0, (cmd, proc.stderr[-3000:])


def test_default_batch_size_on_generated_office_data_says_what_to_do(tmp_path: Path) -> None:
    root = generate("office-31", tmp_path / "o31", size=8)
    with pytest.raises(BatchDataError, match=r"amazon: 8 item\(s\) at batch size 64.*--bs"):
        run_experiment("office-31", "EW", "HPS", str(root), str(tmp_path / "run"), epochs=1, encoder="tiny",
                       pretrained="none", device="cpu", verbose=False)
