"""Packaging: every folder that ships data files is a package the build knows, so ``pip install`` prints no
setuptools warning about importable folders left out of ``packages`` (issue: the office split lists), and the
extras install what the missing-dependency messages tell the user to install."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from libmtl_repmtl.libmtl.compat.dependencies import UNDECLARED_DEPENDENCIES

setupcfg = pytest.importorskip("setuptools.config.setupcfg")

ROOT = Path(__file__).resolve().parents[1]


def test_every_folder_with_shipped_files_is_a_discovered_package() -> None:
    old = os.getcwd()
    os.chdir(ROOT)  # setup.cfg's find directives are relative to the project root
    try:
        packages = set(setupcfg.read_configuration("setup.cfg")["options"]["packages"])
    finally:
        os.chdir(old)
    shipped = {p.parent for p in (ROOT / "libmtl_repmtl").rglob("*")
               if p.is_file() and p.suffix in {".txt", ".md"}}
    assert shipped, "expected the office split lists under libmtl_repmtl/data/office_lists"
    missing = sorted(".".join(d.relative_to(ROOT).parts) for d in shipped
                     if ".".join(d.relative_to(ROOT).parts) not in packages)
    assert not missing, f"folders with data files missing from setup.cfg's packages: {missing}"


def _requirement_names(lines: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", line.strip(), maxsplit=1)[0].lower().replace("_", "-")
            for line in lines if line.strip()}


def test_every_undeclared_libmtl_dependency_is_installed_by_what_its_message_names() -> None:
    """The missing-dependency messages name ``libmtl_repmtl[libmtl-git]`` or this package itself: each package they
    tell the user to install is in that extra or in ``install_requires``."""
    old = os.getcwd()
    os.chdir(ROOT)
    try:
        options = setupcfg.read_configuration("setup.cfg")["options"]
    finally:
        os.chdir(old)
    required = _requirement_names(options["install_requires"])
    extras = {re.sub(r"[-_.]+", "-", name): reqs for name, reqs in options["extras_require"].items()}  # PEP 685
    extra = _requirement_names(extras["libmtl-git"])
    for module, (_, install) in UNDECLARED_DEPENDENCIES.items():
        alternative = re.search(r"\(or: pip install ([^)]*)\)", install)
        named = _requirement_names(alternative.group(1).split()) if alternative else {module}
        if "[libmtl-git]" in install:
            assert named <= extra, (module, named - extra)
        else:
            assert named <= required, (module, named - required)
    assert extra == {"cvxpy", "ecos", "qpsolvers", "quadprog", "torch-geometric"}  # docs/compat.md lists these
