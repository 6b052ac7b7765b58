"""Shared test configuration."""

import os
import tempfile

os.environ.setdefault("OMP_NUM_THREADS", "2")
# Pretext-pretrained encoders (libmtl_repmtl.models.pretext) are cached per test session, never in the user's cache.
os.environ.setdefault("LIBMTL_REPMTL_CACHE", tempfile.mkdtemp(prefix="libmtl_repmtl-test-cache-"))
