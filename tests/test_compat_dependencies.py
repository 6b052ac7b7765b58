"""LibMTL's undeclared dependencies (scipy; the git version's cvxpy, qpsolvers, torch_geometric): a missing one is
a ``MissingDependencyError`` naming it and the ``pip install`` command, with or without the autoload hook."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from libmtl_repmtl.libmtl import compat

_BLOCK = textwrap.dedent("""
    import sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name == BLOCKED or name.startswith(BLOCKED + "."):
                raise ModuleNotFoundError("No module named %r" % name, name=name)
            return None
    sys.meta_path.insert(0, Block())
""")


def _import_blocked(module: str, autoload: str) -> subprocess.CompletedProcess[str]:
    code = f"BLOCKED = {module!r}\n" + _BLOCK + textwrap.dedent("""
        try:
            if AUTOLOAD == "1":
                import LibMTL
            else:
                from libmtl_repmtl.libmtl.compat import ensure_libmtl
                ensure_libmtl()
            print("OK")
        except ImportError as exc:
            print("ERR", type(exc).__name__, exc)
    """).replace("AUTOLOAD", repr(autoload))
    if autoload == "1":
        # the finder must sit behind the autoload hook, which is installed at interpreter start
        code = "import libmtl_repmtl_autoload\n" + code
    env = {**os.environ, "LIBMTL_REPMTL_AUTOLOAD": autoload}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("autoload", ["0", "1"])
def test_missing_scipy_is_explained(autoload: str) -> None:
    proc = _import_blocked("scipy", autoload)
    assert "ERR MissingDependencyError" in proc.stdout, proc.stdout + proc.stderr[-2000:]
    assert "pip install" in proc.stdout and "scipy" in proc.stdout


@pytest.mark.parametrize("module", ["cvxpy", "qpsolvers", "torch_geometric"])
def test_missing_git_version_dependency_is_explained(module: str, libmtl_flavour) -> None:
    """LibMTL 1.1.5 imports without them; the git version needs them at import: then the error says so."""
    proc = _import_blocked(module, "0")
    out = proc.stdout.strip()
    assert out == "OK" or out.startswith("ERR MissingDependencyError"), proc.stdout + proc.stderr[-2000:]
    if out != "OK":
        assert module in out and "pip install 'libmtl_repmtl[libmtl-git]'" in out
    if libmtl_flavour.bilevel:  # the git version (its Trainer runs bilevel methods) imports all three
        assert out != "OK"


@pytest.mark.parametrize("module", sorted(compat.UNDECLARED_DEPENDENCIES))
def test_explain_import_error_names_the_install(module: str) -> None:
    err = compat.explain_import_error(ModuleNotFoundError(f"No module named '{module}.x'", name=f"{module}.x"))
    assert isinstance(err, compat.MissingDependencyError) and isinstance(err, ImportError)
    assert f"LibMTL needs {module}" in str(err) and "pip install" in str(err) and err.name == f"{module}.x"


def test_explain_import_error_ignores_others() -> None:
    assert compat.explain_import_error(ModuleNotFoundError("x", name="numpy")) is None
    assert compat.explain_import_error(ValueError("x")) is None
