"""Plugin host: LibMTL weightings and architectures from any installed distribution.

A distribution declares plugin classes as entry points::

    [options.entry_points]
    libmtl.weighting =
        RepMTL = libmtl_repmtl.libmtl.weighting:RepMTL
    libmtl.architecture =
        RepHPS = libmtl_repmtl.libmtl.architecture:RepHPS

:func:`register` (also ``libmtl_repmtl.register()``; called automatically when ``LibMTL`` is imported, see
``libmtl_repmtl_autoload``) loads them and makes them look like LibMTL built-ins:

* ``setattr`` on ``LibMTL.weighting`` / ``LibMTL.architecture`` (and their ``__all__``), so both
  ``from LibMTL.weighting import RepMTL`` / ``LibMTL.weighting.__dict__['RepMTL']`` (LibMTL 1.1.5's class-taking
  ``Trainer``, the example scripts) and the git version's name-taking ``Trainer`` find them;
* each plugin's ``libmtl_add_args(parser)`` flags are added to ``LibMTL.config.LibMTL_args``;
* ``LibMTL.config.prepare_args`` accepts plugin names (past its hard-coded whitelist) and puts the plugin's
  ``libmtl_args(params)`` into ``kwargs['weight_args']`` / ``kwargs['arch_args']``; an unknown
  ``--weighting`` / ``--arch`` raises :class:`UnknownMethodError` naming every available method.

Policy: an entry point that fails to load, or that is not a subclass of LibMTL's ``AbsWeighting`` /
``AbsArchitecture``, is skipped with a :class:`PluginWarning` naming the distribution. A plugin whose name is
already taken (a LibMTL built-in such as ``EW``, any other attribute of the module, or a plugin of another
distribution seen first) is refused with a :class:`PluginWarning`: nothing is ever overridden. Set
``LIBMTL_REPMTL_STRICT=1`` to turn these warnings into :class:`PluginError` exceptions.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import os
import sys
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from importlib.machinery import ModuleSpec
from typing import Any

from libmtl_repmtl.libmtl import compat

#: Entry-point group per plugin kind.
GROUPS: dict[str, str] = {"weighting": "libmtl.weighting", "architecture": "libmtl.architecture"}
#: ``prepare_args`` / command-line flag per plugin kind.
FLAGS: dict[str, str] = {"weighting": "weighting", "architecture": "arch"}
#: Built-in names ``prepare_args`` is called with in place of a plugin (they take no extra arguments).
STAND_INS: dict[str, str] = {"weighting": "EW", "architecture": "HPS"}
#: Environment variable: ``1`` makes broken / clashing plugins errors instead of warnings.
STRICT_ENV = "LIBMTL_REPMTL_STRICT"

_BASES = {"weighting": ("LibMTL.weighting.abstract_weighting", "AbsWeighting"),
          "architecture": ("LibMTL.architecture.abstract_arch", "AbsArchitecture")}


class PluginWarning(UserWarning):
    """A plugin entry point was skipped (broken, not a LibMTL class, or its name is taken)."""


class PluginError(RuntimeError):
    """As :class:`PluginWarning`, raised instead when ``LIBMTL_REPMTL_STRICT=1``."""


class UnknownMethodError(ValueError):
    """``--weighting`` / ``--arch`` names no built-in and no plugin (the message lists the available ones)."""


@dataclass(frozen=True)
class Plugin:
    """A registered plugin class."""

    kind: str  #: ``"weighting"`` or ``"architecture"``
    name: str  #: the entry-point name (the name users pass: ``--weighting RepMTL``)
    value: str  #: the entry-point target, ``module:attr``
    distribution: str  #: the distribution that declares it
    cls: type  #: the loaded class


@dataclass(frozen=True)
class EntryPointInfo:
    """A declared plugin entry point (not loaded)."""

    kind: str
    name: str
    value: str
    distribution: str


_lock = threading.RLock()
_registered: dict[tuple[str, str], Plugin] = {}
_done: set[tuple[str, str, str, str]] = set()  # (group, name, value, dist) handled (loaded, refused, broken)
_pending: dict[tuple[str, str, str, str], metadata.EntryPoint] = {}
_flags_added: dict[int, set[type]] = {}
_flushing = False


# ============================================================================================ discovery
def _dist_name(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return str(dist.name) if dist is not None and getattr(dist, "name", None) else "<unknown distribution>"


def _entry_points(group: str) -> list[metadata.EntryPoint]:
    eps = list(metadata.entry_points(group=group))
    return sorted(eps, key=lambda ep: (_dist_name(ep).lower(), ep.name))


def discover() -> list[EntryPointInfo]:
    """Every declared plugin entry point of every installed distribution (nothing is imported)."""
    return [EntryPointInfo(kind, ep.name, ep.value, _dist_name(ep))
            for kind, group in GROUPS.items() for ep in _entry_points(group)]


# ============================================================================================ helpers
_strict_override: bool | None = None


def _problem(message: str) -> None:
    strict = _strict_override
    if strict is None:
        strict = os.environ.get(STRICT_ENV, "").strip().lower() in {"1", "true", "yes", "on"}
    if strict:
        raise PluginError(message)
    warnings.warn(message, PluginWarning, stacklevel=4)


def _module(kind: str) -> Any:
    return sys.modules[f"LibMTL.{kind}"]


def _base(kind: str) -> type:
    mod, name = _BASES[kind]
    return getattr(sys.modules[mod], name)


def _package_initializing(top: str) -> bool:
    """True while a module of package ``top`` is still executing its import (a circular import in progress)."""
    for name, mod in list(sys.modules.items()):
        if (name == top or name.startswith(top + ".")) and getattr(getattr(mod, "__spec__", None),
                                                                    "_initializing", False):
            return True
    return False


class _FlushWhenLoaded(ModuleSpec):
    """Class swapped onto the spec of a module whose import is in progress while a plugin of its package waits:
    when the import machinery marks the import finished (``spec._initializing = False``), the class is swapped
    back and the deferred plugins are loaded."""

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        if name == "_initializing" and not value:
            object.__setattr__(self, "__class__", ModuleSpec)
            try:
                flush_pending()
            except Exception as exc:  # never break the import that just finished
                warnings.warn(f"libmtl_repmtl: loading deferred plugins failed ({type(exc).__name__}: {exc}); "
                              "call libmtl_repmtl.register() to retry.", PluginWarning, stacklevel=2)


def _watch_initializing(top: str) -> None:
    """Arrange for :func:`flush_pending` to run when each in-progress import of package ``top`` finishes."""
    for name, mod in list(sys.modules.items()):
        spec = getattr(mod, "__spec__", None)
        if (name == top or name.startswith(top + ".")) and getattr(spec, "_initializing", False) \
                and type(spec) is ModuleSpec:
            spec.__class__ = _FlushWhenLoaded


def _is_plugin(kind: str, name: str) -> bool:
    return (kind, name) in _registered


def builtin_names(kind: str) -> list[str]:
    """LibMTL's own classes of ``kind`` (``"weighting"`` / ``"architecture"``), without the abstract base."""
    compat.ensure_libmtl()
    mod, base = _module(kind), _base(kind)
    return sorted(n for n, v in vars(mod).items()
                  if isinstance(v, type) and issubclass(v, base) and v is not base and not _is_plugin(kind, n))


# ============================================================================================ registration
def _install(kind: str, ep: metadata.EntryPoint) -> None:
    """Load one entry point and install it on ``LibMTL.<kind>`` (or defer / refuse / skip it)."""
    dist = _dist_name(ep)
    key = (GROUPS[kind], ep.name, ep.value, dist)
    where = f"{kind} plugin {ep.name!r} ({ep.name} = {ep.value}) of distribution {dist!r}"
    try:
        cls = ep.load()
    except Exception as exc:
        top = ep.value.split(":")[0].split(".")[0]
        if _package_initializing(top):
            _pending[key] = ep  # circular import in progress (e.g. LibMTL imported from the plugin's package)
            _watch_initializing(top)
            return
        _done.add(key)
        _problem(f"libmtl_repmtl: skipped {where}: it failed to load ({type(exc).__name__}: {exc}). "
                 f"Fix or uninstall {dist!r}.")
        return
    _pending.pop(key, None)
    _done.add(key)
    base = _base(kind)
    if not (isinstance(cls, type) and issubclass(cls, base)):
        _problem(f"libmtl_repmtl: skipped {where}: {cls!r} is not a subclass of LibMTL's {base.__name__}.")
        return
    if not ep.name.isidentifier():
        _problem(f"libmtl_repmtl: skipped {where}: the name is not a Python identifier.")
        return
    mod = _module(kind)
    taken = (kind, ep.name) in _registered and _registered[(kind, ep.name)].cls is not cls
    if taken:
        other = _registered[(kind, ep.name)]
        _problem(f"libmtl_repmtl: refused {where}: the name is already used by the plugin of distribution "
                 f"{other.distribution!r} ({other.value}). Rename one of the entry points.")
        return
    existing = vars(mod).get(ep.name, None)
    if ep.name in vars(mod) and existing is not cls:
        what = "LibMTL's built-in" if isinstance(existing, type) else f"the attribute LibMTL.{kind}.{ep.name} of"
        _problem(f"libmtl_repmtl: refused {where}: the name clashes with {what} {ep.name!r}; plugins never "
                 f"override LibMTL. Rename the entry point (e.g. {ep.name}Plugin).")
        return
    _registered[(kind, ep.name)] = Plugin(kind, ep.name, ep.value, dist, cls)
    setattr(mod, ep.name, cls)
    all_names = getattr(mod, "__all__", None)
    if isinstance(all_names, list) and ep.name not in all_names:
        all_names.append(ep.name)


def _reinstall() -> None:
    """Put registered classes back on the LibMTL modules (after ``LibMTL`` was imported afresh)."""
    for (kind, name), plugin in _registered.items():
        mod = _module(kind)
        if name not in vars(mod):
            setattr(mod, name, plugin.cls)
            if isinstance(getattr(mod, "__all__", None), list) and name not in mod.__all__:
                mod.__all__.append(name)


def _load_all() -> None:
    for kind, group in GROUPS.items():
        for ep in _entry_points(group):
            key = (group, ep.name, ep.value, _dist_name(ep))
            if key not in _done:
                _install(kind, ep)


def flush_pending() -> bool:
    """Load the entry points deferred by a circular import, where that import has finished.

    Returns True when nothing is pending any more. Called when the import in progress finishes, and from
    ``LibMTL.weighting`` / ``LibMTL.architecture`` attribute misses, ``LibMTL_args`` parsing, ``prepare_args``,
    :func:`available`, :func:`lookup` and :func:`register`.
    """
    global _flushing
    if not _pending:
        return True
    with _lock:
        if _flushing:
            return False
        _flushing = True
        try:
            for key, ep in list(_pending.items()):
                if not _package_initializing(ep.value.split(":")[0].split(".")[0]):
                    _pending.pop(key, None)
                    _install("weighting" if key[0] == GROUPS["weighting"] else "architecture", ep)
            _after_load()
        finally:
            _flushing = False
    return not _pending


def _after_load() -> None:
    _install_config()


def register(*, strict: bool | None = None) -> dict[str, list[str]]:
    """Load every plugin entry point and install the classes into LibMTL. Idempotent.

    Args:
        strict: raise :class:`PluginError` instead of warning on a broken or clashing plugin (default:
            ``$LIBMTL_REPMTL_STRICT``).

    Returns:
        kind -> names of the registered plugins (``{"weighting": ["RepMTL"], "architecture": ["RepHPS"]}``).
    """
    global _strict_override
    with _lock:
        compat.ensure_libmtl()
        previous, _strict_override = _strict_override, strict
        try:
            _reinstall()
            _load_all()
            _after_load()
        finally:
            _strict_override = previous
        return registered_names()


def registered_names() -> dict[str, list[str]]:
    """kind -> names of the plugins registered so far."""
    return {kind: sorted(n for (k, n) in _registered if k == kind) for kind in GROUPS}


def plugins() -> list[Plugin]:
    """The registered plugins (kind, name, entry point, distribution, class)."""
    return [p for _, p in sorted(_registered.items())]


def available(kind: str | None = None) -> dict[str, list[str]]:
    """Every usable name: LibMTL's built-ins and the registered plugins, per kind (or only ``kind``)."""
    flush_pending()
    kinds = [kind] if kind is not None else list(GROUPS)
    for k in kinds:
        if k not in GROUPS:
            raise ValueError(f"unknown plugin kind {k!r}; choose from {sorted(GROUPS)}")
    return {k: sorted(set(builtin_names(k)) | set(registered_names()[k]), key=str.lower) for k in kinds}


def _describe(kind: str) -> str:
    names = available(kind)[kind]
    plugin_names = set(registered_names()[kind])
    return ", ".join(f"{n} (plugin)" if n in plugin_names else n for n in names)


def unknown_method_message(kind: str, name: str) -> str:
    """The error text for an unknown ``--weighting`` / ``--arch`` (every available name, and what to do)."""
    return (f"unknown {kind} {name!r} (--{FLAGS[kind]}). Available {kind}s: {_describe(kind)}. Check the "
            f"spelling, or install a distribution that declares it under the entry-point group {GROUPS[kind]!r}.")


def lookup(kind: str, name: str) -> type:
    """The class called ``name`` of ``kind`` (a built-in or a plugin).

    Raises:
        UnknownMethodError: no such name (the message lists the available ones).
    """
    compat.ensure_libmtl()
    flush_pending()
    cls = vars(_module(kind)).get(name)
    if isinstance(cls, type) and issubclass(cls, _base(kind)):
        return cls
    raise UnknownMethodError(unknown_method_message(kind, name))


# ============================================================================================ LibMTL.config
def _add_plugin_flags(parser: argparse.ArgumentParser) -> None:
    done = _flags_added.setdefault(id(parser), set())
    for plugin in plugins():
        add = getattr(plugin.cls, "libmtl_add_args", None)
        if plugin.cls in done or add is None:
            continue
        done.add(plugin.cls)
        before = {opt for action in parser._actions for opt in action.option_strings}
        try:
            add(parser)
        except (argparse.ArgumentError, ValueError, TypeError) as exc:
            _problem(f"libmtl_repmtl: the flags of {plugin.kind} plugin {plugin.name!r} (distribution "
                     f"{plugin.distribution!r}) could not be added to LibMTL_args: {exc}")
            continue
        new = {opt for action in parser._actions for opt in action.option_strings} - before
        odd = sorted(o for o in new if o.startswith("--") and not o.startswith(f"--{plugin.name}_"))
        if odd:
            _problem(f"libmtl_repmtl: {plugin.kind} plugin {plugin.name!r} added flags {odd} that do not follow "
                     f"the --{plugin.name}_<key> convention (they may clash with other plugins).")


def _update_help(parser: argparse.ArgumentParser) -> None:
    for action in parser._actions:
        for kind, dest in FLAGS.items():
            if action.dest == dest:
                action.help = f"{kind} (default %(default)s); available: {', '.join(available(kind)[kind])}"


def _wrap_parser(parser: argparse.ArgumentParser) -> None:
    if compat._marked(parser.__dict__.get("parse_known_args"), "host-parser"):
        return
    original = parser.parse_known_args

    def parse_known_args(args: Any = None, namespace: Any = None) -> Any:
        flush_pending()
        return original(args, namespace)

    parser.parse_known_args = compat._mark(parse_known_args, "host-parser")  # type: ignore[method-assign]


def _plugin_class(kind: str, name: Any) -> type | None:
    plugin = _registered.get((kind, str(name)))
    return plugin.cls if plugin is not None else None


def _plugin_args(cls: type, params: argparse.Namespace) -> dict[str, Any]:
    fn: Callable[[argparse.Namespace], Any] | None = getattr(cls, "libmtl_args", None)
    return dict(fn(params)) if fn is not None else {}


def _wrap_prepare_args(config: Any) -> None:
    original = config.prepare_args
    if compat._marked(original, "host-prepare-args"):
        return

    def call(params: argparse.Namespace, names: argparse.Namespace) -> Any:
        try:
            return original(params)
        except ValueError as exc:
            for kind in GROUPS:
                name = str(getattr(names, FLAGS[kind], None))
                known = vars(_module(kind)).get(name)
                if not (isinstance(known, type) and issubclass(known, _base(kind))):
                    raise UnknownMethodError(unknown_method_message(kind, name)) from exc
            raise

    def prepare_args(params: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any], Any]:
        flush_pending()
        classes = {kind: _plugin_class(kind, getattr(params, FLAGS[kind], None)) for kind in GROUPS}
        if not any(classes.values()):
            return call(params, params)
        stand_in = copy.copy(params)
        for kind, cls in classes.items():
            if cls is not None:
                setattr(stand_in, FLAGS[kind], STAND_INS[kind])
        captured = io.StringIO()
        with contextlib.redirect_stdout(captured):
            kwargs, optim_param, scheduler_param = call(stand_in, params)
        kwargs = dict(kwargs)
        for kind, cls in classes.items():
            if cls is not None:
                kwargs["weight_args" if kind == "weighting" else "arch_args"] = _plugin_args(cls, params)
        display = getattr(config, "_display", None)
        try:
            if display is None:
                raise TypeError("no _display")
            display(params, kwargs, optim_param, scheduler_param)
        except (TypeError, AttributeError, KeyError):
            sys.stdout.write(captured.getvalue())
        return kwargs, optim_param, scheduler_param

    prepare_args.__doc__ = (original.__doc__ or "") + (
        "\n\nPatched by libmtl_repmtl: plugin weightings/architectures (their libmtl_args into weight_args / "
        "arch_args); unknown names raise UnknownMethodError listing the available ones.")
    prepare_args.__wrapped__ = original  # type: ignore[attr-defined]
    config.prepare_args = compat._mark(prepare_args, "host-prepare-args")


def _module_getattr(kind: str) -> Callable[[str], Any]:
    mod = _module(kind)
    previous = vars(mod).get("__getattr__")
    if compat._marked(previous, "host-getattr"):
        return previous  # type: ignore[return-value]

    def __getattr__(name: str) -> Any:
        if not name.startswith("__") and _pending:
            flush_pending()
            if name in vars(mod):
                return vars(mod)[name]
        if previous is not None:
            return previous(name)
        raise AttributeError(f"module {mod.__name__!r} has no attribute {name!r}")

    return compat._mark(__getattr__, "host-getattr")


def _install_config() -> None:
    config = sys.modules["LibMTL.config"]
    _wrap_prepare_args(config)
    parser = getattr(config, "LibMTL_args", None)
    if isinstance(parser, argparse.ArgumentParser):
        _add_plugin_flags(parser)
        _update_help(parser)
        _wrap_parser(parser)
    for kind in GROUPS:
        mod = _module(kind)
        mod.__getattr__ = _module_getattr(kind)


def add_plugin_flags(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add every registered plugin's ``libmtl_add_args`` flags to ``parser`` (once per parser); return it."""
    register()
    _add_plugin_flags(parser)
    return parser


def format_available(names: dict[str, list[str]] | None = None, *, with_sources: bool = True) -> str:
    """A human-readable listing of the available weightings and architectures (for ``libmtl-repmtl list``)."""
    names = names or available()
    by_name = {(p.kind, p.name): p for p in plugins()}
    lines: list[str] = []
    for kind, items in names.items():
        lines.append(f"{kind}s:")
        for n in items:
            p = by_name.get((kind, n))
            src = f"  [plugin: {p.distribution}, {p.value}]" if (p and with_sources) else ""
            lines.append(f"  {n}{src}")
    return "\n".join(lines)


__all__ = [
    "FLAGS", "GROUPS", "STAND_INS", "STRICT_ENV", "EntryPointInfo", "Plugin", "PluginError", "PluginWarning",
    "UnknownMethodError", "add_plugin_flags", "available", "builtin_names", "discover", "flush_pending",
    "format_available", "lookup", "plugins", "register", "registered_names", "unknown_method_message",
]
