"""Packaging: every folder that ships data files is a package the build knows, so ``pip install`` prints no
setuptools warning about importable folders left out of ``packages`` (issue: the office split lists)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
