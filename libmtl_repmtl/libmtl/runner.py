"""``libmtl-repmtl run`` / ``libmtl-repmtl list``: run a LibMTL script with the plugins registered.

``libmtl-repmtl run SCRIPT.py [ARGS...]`` registers the plugins and the compatibility patches
(``libmtl_repmtl.register()``, which works whether or not the autoload hook is enabled), then runs the
script as ``__main__`` exactly as ``python SCRIPT.py ARGS...`` would: ``sys.argv == [SCRIPT.py, *ARGS]``,
``sys.path[0]`` is the script's folder, and the working directory is unchanged (``--chdir`` switches to the
script's folder first). ``libmtl-repmtl run -m MODULE [ARGS...]`` runs a module like ``python -m``.
The exit status is the script's (``sys.exit(n)``), 1 for an uncaught exception.
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import sys
from collections.abc import Sequence
from pathlib import Path

import libmtl_repmtl
from libmtl_repmtl.libmtl import host


def run_script(script: str | os.PathLike[str], args: Sequence[str] = (), *, chdir: bool = False) -> int:
    """Register the plugins, then run ``script`` as ``__main__`` with ``sys.argv = [script, *args]``.

    ``sys.argv``, ``sys.path`` and the working directory are restored afterwards. Returns the exit status
    (``SystemExit`` code; 0 when the script returns normally). Exceptions of the script propagate.

    Raises:
        FileNotFoundError: ``script`` does not exist.
    """
    path = Path(script)
    if not path.exists():
        raise FileNotFoundError(f"no such script: {str(script)!r}")
    libmtl_repmtl.register()
    folder = str(path.resolve().parent if path.is_file() else path.resolve())
    saved_argv, saved_path, saved_cwd = sys.argv[:], sys.path[:], os.getcwd()
    sys.argv = [str(script), *args]
    sys.path.insert(0, folder)
    try:
        if chdir:
            os.chdir(folder)
        runpy.run_path(str(path), run_name="__main__")
        return 0
    except SystemExit as exc:
        return _exit_code(exc)
    finally:
        sys.argv[:] = saved_argv
        sys.path[:] = saved_path
        os.chdir(saved_cwd)


def run_module(module: str, args: Sequence[str] = ()) -> int:
    """Register the plugins, then run ``module`` like ``python -m module args...``. Returns the exit status."""
    libmtl_repmtl.register()
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    sys.argv = [module, *args]
    sys.path.insert(0, os.getcwd())
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        return 0
    except SystemExit as exc:
        return _exit_code(exc)
    finally:
        sys.argv[:] = saved_argv
        sys.path[:] = saved_path


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """``libmtl-repmtl run [--chdir] SCRIPT.py [ARGS...]`` or ``libmtl-repmtl run -m MODULE [ARGS...]``."""
    parser = argparse.ArgumentParser(
        prog="libmtl-repmtl run",
        description="Run a LibMTL script (e.g. one of LibMTL's examples) with the plugin weightings/"
                    "architectures registered and the LibMTL compatibility patches applied.")
    parser.add_argument("--chdir", action="store_true", help="run in the script's folder (default: current)")
    parser.add_argument("-m", dest="module", default=None, help="run a module, as python -m")
    parser.add_argument("script", nargs="?", help="the script (omit with -m)")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to the script")
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after the script (or -m MODULE) belongs to the script, including its -h and --flags.
    head: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        item = argv[i]
        if item == "-m" and i + 1 < len(argv):
            head += argv[i:i + 2]
            rest = argv[i + 2:]
            break
        if item.startswith("-") and item != "-":
            head.append(item)
            i += 1
            continue
        head.append(item)
        rest = argv[i + 1:]
        break
    ns = parser.parse_args(head)
    if ns.module:
        if ns.script:
            rest = [ns.script, *rest]
        return run_module(ns.module, rest)
    if not ns.script:
        parser.error("give a SCRIPT.py (or -m MODULE) to run")
    try:
        return run_script(ns.script, rest, chdir=ns.chdir)
    except FileNotFoundError as exc:
        print(f"libmtl-repmtl run: {exc}", file=sys.stderr)
        return 2


def list_main(argv: Sequence[str] | None = None) -> int:
    """``libmtl-repmtl list [--json]``: the available weightings and architectures (built-ins and plugins)."""
    parser = argparse.ArgumentParser(prog="libmtl-repmtl list",
                                     description="List LibMTL's weightings and architectures, plugins included.")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    ns = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    libmtl_repmtl.register()
    if ns.json:
        out = {"available": host.available(),
               "plugins": [{"kind": p.kind, "name": p.name, "entry_point": p.value, "distribution": p.distribution}
                           for p in host.plugins()]}
        print(json.dumps(out, indent=2))
    else:
        print(host.format_available())
    return 0


__all__ = ["list_main", "main", "run_module", "run_script"]
