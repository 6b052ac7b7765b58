"""Atomic file writes: a temporary file in the target folder, flushed and fsync'ed, then ``os.replace``.

A reader (or a crash) never sees a half-written results file or checkpoint: the target either keeps its old
contents or holds the complete new ones. The module does not import torch itself (only
:func:`atomic_torch_save` needs it), so tools that write text results stay light.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def _default_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_MODE = _default_mode()


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> Path:
    """Write ``path`` atomically: ``write(f)`` fills a binary temporary file in the same folder, which is then
    fsync'ed and moved onto ``path`` with ``os.replace``. On any error the temporary file is removed and
    ``path`` is left untouched. Returns ``path`` as a ``Path``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _MODE)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(target.parent)
    return target


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Atomically write ``data`` to ``path``."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Atomically write ``text`` to ``path``."""
    return atomic_write_bytes(path, text.encode(encoding))


def to_jsonable(obj: Any) -> Any:
    """``obj`` with numpy / torch scalars and arrays, tuples, paths and sets turned into JSON types.

    Non-finite floats become ``None`` (strict JSON has no NaN or infinity)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    torch = sys.modules.get("torch")  # a torch object exists only where torch was imported
    if torch is not None and isinstance(obj, torch.Tensor):
        return to_jsonable(obj.detach().cpu().tolist())
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy arrays and scalars
        return to_jsonable(obj.tolist())
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, os.PathLike) or (torch is not None and isinstance(obj, (torch.device, torch.dtype))):
        return str(obj)
    if isinstance(obj, type):
        return obj.__name__
    return repr(obj)


def atomic_write_json(path: str | os.PathLike[str], obj: Any, indent: int | None = 1) -> Path:
    """Atomically write ``obj`` (made JSON-safe by :func:`to_jsonable`) as strict JSON to ``path``."""
    text = json.dumps(to_jsonable(obj), indent=indent, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def atomic_torch_save(path: str | os.PathLike[str], obj: Any) -> Path:
    """Atomically ``torch.save`` ``obj`` to ``path``."""
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f))


class RunFileWriteError(OSError):
    """A run file (``results.json``, ``best.pt``, ``last.pt``) could not be written, e.g. the disk is full.

    The message names the file, the epoch and the way out; the file itself keeps its previous complete
    version (or stays absent) and no temporary file is left (:func:`atomic_write`). ``errno`` is the
    underlying error's (``errno.ENOSPC`` for a full disk) when it had one.
    """


def _os_error(exc: BaseException) -> OSError | None:
    """``exc`` if it is an ``OSError``, else the first ``OSError`` it was raised from or during (torch's zip
    writer turns a failed ``write`` of the file object into ``RuntimeError: ... unexpected pos``)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, OSError):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


def write_run_file(path: str | os.PathLike[str], write: Callable[[Path], Any], context: str) -> None:
    """Call ``write(path)`` (one of the atomic writers); an ``OSError`` (also one that torch's zip writer
    reported as a ``RuntimeError``) becomes :class:`RunFileWriteError` naming ``path`` and ``context`` (e.g.
    ``"the end of epoch 3"``), chained to the original. Other errors pass unchanged."""
    target = Path(path)
    try:
        write(target)
    except (OSError, RuntimeError) as exc:
        os_err = _os_error(exc)
        if os_err is None:
            raise
        err = RunFileWriteError(
            f"could not write {target} at {context}: {os_err}. The previous complete {target.name} is kept (or "
            f"the file is absent) and no partial or temporary file was left; free space in {target.parent} and "
            "continue with --resume (resume=True): last.pt holds the last epoch saved completely")
        err.errno = os_err.errno
        raise err from exc


__all__ = ["RunFileWriteError", "atomic_torch_save", "atomic_write", "atomic_write_bytes", "atomic_write_json",
           "atomic_write_text", "to_jsonable", "write_run_file"]
