"""Shared test configuration."""

import os
import tempfile

import pytest

from tests._flavour import Flavour, probe

os.environ.setdefault("OMP_NUM_THREADS", "2")
# Pretext-pretrained encoders (libmtl_repmtl.models.pretext) are cached per test session, never in the user's cache.
os.environ.setdefault("LIBMTL_REPMTL_CACHE", tempfile.mkdtemp(prefix="libmtl_repmtl-test-cache-"))


@pytest.fixture(scope="session")
def libmtl_flavour() -> Flavour:
    """The installed LibMTL's behaviour (:class:`tests._flavour.Flavour`): 1.1.5 or the git version."""
    return probe()
