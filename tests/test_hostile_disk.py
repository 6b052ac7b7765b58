"""A full disk while ``results.json`` / ``best.pt`` / ``last.pt`` are written (each way a write can fail: the
bytes, the serialiser's stream, fsync, the rename): a clear error naming the file and the epoch, the previous
complete version kept (never a partial file), and a resumed run that continues exactly as if nothing had happened;
also through an example command.
"""

from __future__ import annotations

import errno
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from libmtl_repmtl.training import io as tio
from libmtl_repmtl.training.io import RunFileWriteError
from libmtl_repmtl.training.trainer import STOP_ENV
from tests._hostile import failed, no_partial_files, run_hostile


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
    return run_hostile(tmp_path_factory.mktemp("straight"), epochs=3)


@pytest.mark.parametrize("where", ["write", "stream", "fsync", "replace"])
@pytest.mark.parametrize("target,from_write", [("results.json", 2), ("last.pt", 2), ("best.pt", 1)])
def test_full_disk_while_saving(tmp_path, monkeypatch, straight, target, from_write, where):
    save = tmp_path / "run"
    _fill_disk_for(monkeypatch, target, from_write, where)
    with pytest.raises(RunFileWriteError) as err:
        run_hostile(save, epochs=3)
    epoch = from_write - 1
    msg = str(err.value)
    assert err.value.errno == errno.ENOSPC
    assert f"could not write {save / target} at the end of epoch {epoch}" in msg and "No space left" in msg
    assert "--resume" in msg
    monkeypatch.undo()  # space freed
    res = no_partial_files(save)
    if target == "results.json":  # the full disk also refused the "failed" status: the epoch-0 version is kept
        assert res["status"] == "running" and res["epochs_done"] == 1
    else:
        assert res["status"] == "failed" and "No space left" in res["error"]
    if target == "best.pt":
        assert not (save / "best.pt").exists() and not (save / "last.pt").exists()  # absent, never partial
    else:
        assert torch.load(save / "last.pt", weights_only=False)["epoch"] == 0  # the previous complete version
    # ... and the run continues from there exactly as if nothing had happened
    resumed = run_hostile(save, epochs=3, resume=True)
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
    res = failed(save, "No space left")
    assert sorted(p.name for p in save.iterdir()) == ["best.pt", "results.json"]
    assert res["epochs_done"] == 1
