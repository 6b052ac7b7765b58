"""The autoload hook (``libmtl_repmtl.pth`` -> ``libmtl_repmtl_autoload``), in fresh interpreters: cheap at
start-up, patches and plugins on ``import LibMTL``, opt-out, errors reported, and an end-to-end training
script written like LibMTL's examples."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "plugin_dist"
SCRIPT = FIXTURES / "example_train.py"


def run(args: list[str], *, autoload: str | None = None, plugins: bool = False, timeout: int = 300,
        **env: str) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ)
    full.pop("LIBMTL_REPMTL_AUTOLOAD", None)
    if autoload is not None:
        full["LIBMTL_REPMTL_AUTOLOAD"] = autoload
    if plugins:
        full["PYTHONPATH"] = os.pathsep.join([str(FIXTURES), full.get("PYTHONPATH", "")])
    full.update(env)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=full, timeout=timeout)


def code(src: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return run(["-c", textwrap.dedent(src)], **kw)  # type: ignore[arg-type]




# ------------------------------------------------------------------ cost at interpreter start
def test_hook_is_installed_by_the_pth_and_opt_out_works() -> None:
    src = "import sys; print([type(f).__name__ for f in sys.meta_path]); print('torch' in sys.modules)"
    on = code(src)
    off = code(src, autoload="0")
    assert "LibMTLFinder" in on.stdout, on.stdout + on.stderr
    assert "LibMTLFinder" not in off.stdout
    assert on.stdout.splitlines()[1] == "False"  # nothing heavy imported at start-up


def test_startup_imports_nothing_beyond_the_hook() -> None:
    src = "import sys; print(' '.join(sorted(sys.modules)))"
    on = set(code(src).stdout.split())
    off = set(code(src, autoload="0").stdout.split())
    assert "libmtl_repmtl_autoload" in on
    assert on - off == set()  # the .pth imports the module in both cases; enabling it imports nothing more
    assert not any(m == "libmtl_repmtl" or m.startswith(("libmtl_repmtl.", "torch", "LibMTL")) for m in on)


def test_startup_cost_is_small() -> None:
    proc = run(["-X", "importtime", "-c", "pass"])
    line = next((ln for ln in proc.stderr.splitlines() if ln.rstrip().endswith("libmtl_repmtl_autoload")), None)
    assert line is not None, proc.stderr[-2000:]
    cumulative_us = int(re.split(r"\s*\|\s*", line.split(":", 1)[1].strip())[1])
    assert cumulative_us < 50_000, line  # typically < 1 ms

    def best(autoload: str | None) -> float:
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            run(["-c", "pass"], autoload=autoload)
            times.append(time.perf_counter() - t0)
        return min(times)

    assert best(None) - best("0") < 0.05  # generous: < 50 ms added to `python -c pass`


# ------------------------------------------------------------------ import LibMTL
def test_import_libmtl_registers_plugins_and_patches() -> None:
    proc = code("""
        import json, sys
        from LibMTL.config import prepare_args          # the first LibMTL import of the program
        import LibMTL
        from libmtl_repmtl.libmtl import compat
        out = {"HalfEW": hasattr(LibMTL.weighting, "HalfEW"), "TinyHPS": "TinyHPS" in LibMTL.architecture.__dict__,
               "RepMTL": "RepMTL" in LibMTL.weighting.__dict__,
               "prepare_args_wrapped": getattr(prepare_args, compat.MARKER, None),
               "state": compat.patch_state()}
        print("JSON" + json.dumps(out))
    """, plugins=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("JSON", 1)[1])
    assert out["HalfEW"] and out["TinyHPS"]
    assert out["prepare_args_wrapped"] == "host-prepare-args"
    assert out["state"]["process-data-next"] == "applied"
    if importlib.util.find_spec("libmtl_repmtl.libmtl.weighting") is not None:
        assert out["RepMTL"]


def test_opt_out_leaves_libmtl_alone_until_register(libmtl_flavour) -> None:
    proc = code("""
        import sys
        try:
            import LibMTL
            print("imported", hasattr(LibMTL.weighting, "HalfEW"))
        except ImportError as exc:
            print("import failed:", exc)
            for m in [m for m in sys.modules if m.split(".")[0] == "LibMTL"]:
                del sys.modules[m]
        import libmtl_repmtl
        libmtl_repmtl.register()
        import LibMTL
        print("after register", hasattr(LibMTL.weighting, "HalfEW"))
    """, autoload="0", plugins=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = proc.stdout.splitlines()[0]
    if not libmtl_flavour.imports_without_shim:
        assert "torchvision.models.utils" in first  # LibMTL 1.1.5 needs the pre-import patch
    else:
        assert first == "imported False"
    assert "after register True" in proc.stdout


def test_hook_errors_are_reported_not_hidden() -> None:
    proc = code("""
        import warnings
        warnings.simplefilter("always")
        import libmtl_repmtl
        def broken(*a, **k):
            raise ZeroDivisionError("simulated failure")
        libmtl_repmtl.register = broken
        import LibMTL
        print("imported", LibMTL.__name__)
    """)
    assert "imported LibMTL" in proc.stdout, proc.stderr[-3000:]
    assert "RuntimeWarning" in proc.stderr and "simulated failure" in proc.stderr
    assert "LIBMTL_REPMTL_AUTOLOAD=0" in proc.stderr and "register()" in proc.stderr


def test_pre_import_failure_warns_and_import_error_still_raises(libmtl_flavour) -> None:
    proc = code("""
        import sys, warnings
        warnings.simplefilter("always")
        sys.modules["libmtl_repmtl.libmtl.compat"] = None   # make the pre-import step fail
        try:
            import LibMTL
            print("imported")
        except ImportError as exc:
            print("ImportError:", exc)
    """)
    assert "pre-import compatibility patches" in proc.stderr, proc.stderr[-3000:]
    if not libmtl_flavour.imports_without_shim:
        assert "ImportError: No module named 'torchvision.models.utils'" in proc.stdout
    else:
        assert "imported" in proc.stdout  # the git version falls back to torch.hub by itself


# ------------------------------------------------------------------ end to end: a LibMTL-style script
def _train(tmp_path: Path, *argv: str) -> tuple[subprocess.CompletedProcess[str], dict | None]:
    out = tmp_path / f"out_{len(list(tmp_path.iterdir()))}.json"
    proc = run([str(SCRIPT), "--epochs", "1", "--out", str(out), *argv])
    return proc, (json.loads(out.read_text()) if out.exists() else None)


def test_example_script_trains_with_builtin(tmp_path: Path) -> None:
    proc, out = _train(tmp_path, "--weighting", "EW", "--lr", "0.01")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out is not None and out["changed"] and out["device"] in {"cpu", "cuda:0"}
    assert out["weight_args"] == {}


def test_example_script_trains_with_repmtl(tmp_path: Path) -> None:
    if importlib.util.find_spec("libmtl_repmtl.libmtl.weighting") is None:
        pytest.skip("RepMTL has not landed yet")
    proc, out = _train(tmp_path, "--weighting", "RepMTL", "--arch", "RepHPS", "--RepMTL_tau", "0.5", "--lr", "0.01")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out is not None and out["changed"]
    assert out["weight_args"]["RepMTL_tau"] == 0.5
    assert out["arch"] == "RepHPS"


def test_example_script_unknown_weighting_fails_listing_names(tmp_path: Path) -> None:
    proc, out = _train(tmp_path, "--weighting", "Nope")
    assert proc.returncode != 0 and out is None
    assert "unknown weighting 'Nope'" in proc.stderr
    for name in ("EW", "UW", "MGDA", "PCGrad", "CAGrad", "RLW", "GradDrop", "IMTL"):
        assert name in proc.stderr.splitlines()[-1]
