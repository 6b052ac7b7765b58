"""Atomic writers under a full disk (ENOSPC simulated at write, fsync and rename time): the destination keeps
its old complete content (or stays absent), never a partial file, and no temporary file is left behind."""

from __future__ import annotations

import errno
import io
import json
import os

import pytest
import torch

from libmtl_repmtl.training import io as tio

OLD = {"status": "complete", "epochs": [1, 2, 3]}


class _FullDisk(io.RawIOBase):
    """A binary file that accepts ``room`` bytes, then fails with ENOSPC (like a disk filling up)."""

    def __init__(self, real, room: int) -> None:
        self.real, self.room = real, room

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        data = bytes(data)
        if len(data) > self.room:
            self.real.write(data[: self.room])
            self.real.flush()
            self.room = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.real.write(data)

    def flush(self) -> None:
        if not self.real.closed:
            self.real.flush()

    def fileno(self) -> int:
        return self.real.fileno()

    def close(self) -> None:
        self.real.close()
        super().close()


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


def _full_disk(monkeypatch, room: int) -> None:
    real_fdopen = os.fdopen

    def fdopen(fd, mode="r", *args, **kwargs):
        f = real_fdopen(fd, mode, *args, **kwargs)
        return _FullDisk(f, room) if "w" in mode else f

    monkeypatch.setattr(tio.os, "fdopen", fdopen)


def _enospc(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("existing", [True, False])
@pytest.mark.parametrize("where", ["write", "fsync", "replace"])
def test_json_results_never_half_written(tmp_path, monkeypatch, existing, where):
    target = tmp_path / "results.json"
    if existing:
        tio.atomic_write_json(target, OLD)
    before = _listing(tmp_path)
    if where == "write":
        _full_disk(monkeypatch, room=10)
    elif where == "fsync":
        monkeypatch.setattr(tio.os, "fsync", _enospc)
    else:
        monkeypatch.setattr(tio.os, "replace", _enospc)
    with pytest.raises(OSError) as err:
        tio.atomic_write_json(target, {"status": "running", "epochs": list(range(1000))})
    assert err.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert _listing(tmp_path) == before  # no temporary file left
    if existing:
        assert json.loads(target.read_text()) == OLD
    else:
        assert not target.exists()


def test_checkpoint_never_half_written(tmp_path, monkeypatch):
    target = tmp_path / "last.pt"
    tio.atomic_torch_save(target, {"epoch": 1, "w": torch.zeros(3)})
    _full_disk(monkeypatch, room=200)
    # torch's zip writer may surface the ENOSPC as a RuntimeError ("unexpected pos ..."): either way, no damage
    with pytest.raises((OSError, RuntimeError)):
        tio.atomic_torch_save(target, {"epoch": 2, "w": torch.randn(10_000)})
    monkeypatch.undo()
    assert _listing(tmp_path) == ["last.pt"]
    state = torch.load(target, weights_only=True)
    assert state["epoch"] == 1 and torch.equal(state["w"], torch.zeros(3))


def test_text_and_bytes_writers_under_full_disk(tmp_path, monkeypatch):
    for name, write in (("a.md", lambda p: tio.atomic_write_text(p, "x" * 5000)),
                        ("b.png", lambda p: tio.atomic_write_bytes(p, b"\x89PNG" + b"0" * 5000))):
        target = tmp_path / name
        _full_disk(monkeypatch, room=100)
        with pytest.raises(OSError):
            write(target)
        monkeypatch.undo()
        assert not target.exists()
    assert _listing(tmp_path) == []
