"""Documentation examples are executed as tests."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["libmtl_repmtl.core"]


@pytest.mark.parametrize("name", MODULES)
def test_module_doctests(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no doctest"
    assert result.failed == 0
