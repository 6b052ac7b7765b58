"""Explicit device selection for training (LibMTL 1.1.5 hard-codes ``cuda:0``).

The resolver itself lives with the compatibility layer (:mod:`libmtl_repmtl.libmtl.compat.device`), which
LibMTL's own ``Trainer`` uses too: one rule for ``auto``, ``cuda`` and the messages.
"""

from __future__ import annotations

from libmtl_repmtl.libmtl.compat.device import DEVICE_ENV, resolve_device

__all__ = ["DEVICE_ENV", "resolve_device"]
