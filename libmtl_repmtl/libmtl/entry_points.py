"""Plugin entry points: discovery without import, and loading deferred while a circular import is in progress.

Used by :mod:`libmtl_repmtl.libmtl.host` (its ``discover`` and deferred registration); see ``docs/compat.md``.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from importlib.machinery import ModuleSpec
from typing import Any


class PluginWarning(UserWarning):
    """A plugin entry point was skipped (broken, not a LibMTL class, or its name is taken)."""


class PluginError(RuntimeError):
    """As :class:`PluginWarning`, raised instead when ``LIBMTL_REPMTL_STRICT=1``."""


@dataclass(frozen=True)
class EntryPointInfo:
    """A declared plugin entry point (not loaded)."""

    kind: str
    name: str
    value: str
    distribution: str


def dist_name(ep: metadata.EntryPoint) -> str:
    """The name of the distribution that declares ``ep``."""
    dist = getattr(ep, "dist", None)
    return str(dist.name) if dist is not None and getattr(dist, "name", None) else "<unknown distribution>"


def entry_points(group: str) -> list[metadata.EntryPoint]:
    """The entry points of ``group``, by distribution name then entry-point name (the order of precedence)."""
    eps = list(metadata.entry_points(group=group))
    return sorted(eps, key=lambda ep: (dist_name(ep).lower(), ep.name))


def discover(groups: dict[str, str]) -> list[EntryPointInfo]:
    """Every declared entry point of ``groups`` (kind -> group) of every installed distribution; no import."""
    return [EntryPointInfo(kind, ep.name, ep.value, dist_name(ep))
            for kind, group in groups.items() for ep in entry_points(group)]


def package_initializing(top: str) -> bool:
    """True while a module of package ``top`` is still executing its import (a circular import in progress)."""
    for name, mod in list(sys.modules.items()):
        if (name == top or name.startswith(top + ".")) and getattr(getattr(mod, "__spec__", None),
                                                                    "_initializing", False):
            return True
    return False


_on_finished: list[Callable[[], Any]] = []


class _FlushWhenLoaded(ModuleSpec):
    """Class swapped onto the spec of a module whose import is in progress while a plugin of its package waits:
    when the import machinery marks the import finished (``spec._initializing = False``), the class is swapped
    back and the callbacks given to :func:`watch_initializing` run."""

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        if name == "_initializing" and not value:
            object.__setattr__(self, "__class__", ModuleSpec)
            for callback in list(_on_finished):
                try:
                    callback()
                except Exception as exc:  # never break the import that just finished
                    warnings.warn(f"libmtl_repmtl: loading deferred plugins failed ({type(exc).__name__}: "
                                  f"{exc}); call libmtl_repmtl.register() to retry.", PluginWarning, stacklevel=2)


def watch_initializing(top: str, callback: Callable[[], Any]) -> None:
    """Arrange for ``callback`` to run when each in-progress import of package ``top`` finishes."""
    if callback not in _on_finished:
        _on_finished.append(callback)
    for name, mod in list(sys.modules.items()):
        spec = getattr(mod, "__spec__", None)
        if (name == top or name.startswith(top + ".")) and getattr(spec, "_initializing", False) \
                and type(spec) is ModuleSpec:
            spec.__class__ = _FlushWhenLoaded


__all__ = ["EntryPointInfo", "PluginError", "PluginWarning", "discover", "dist_name", "entry_points",
           "package_initializing", "watch_initializing"]
