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
import os
import sys
import threading
import warnings
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from libmtl_repmtl.libmtl import compat, entry_points, flavour
from libmtl_repmtl.libmtl.entry_points import EntryPointInfo, PluginError, PluginWarning

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


class UnknownMethodError(ValueError):
    """``--weighting`` / ``--arch`` names no built-in and no plugin (the message lists the available ones)."""


class NoClassError(ValueError):
    """LibMTL accepts the name but has no class for it (a bilevel method run by its Trainer, or ``DIY``)."""


@dataclass(frozen=True)
class Plugin:
    """A registered plugin class."""

    kind: str  #: ``"weighting"`` or ``"architecture"``
    name: str  #: the entry-point name (the name users pass: ``--weighting RepMTL``)
    value: str  #: the entry-point target, ``module:attr``
    distribution: str  #: the distribution that declares it
    cls: type  #: the loaded class


_lock = threading.RLock()
_registered: dict[tuple[str, str], Plugin] = {}
_done: set[tuple[str, str, str, str]] = set()  # (group, name, value, dist) handled (loaded, refused, broken)
_pending: dict[tuple[str, str, str, str], metadata.EntryPoint] = {}
_flags_added: dict[int, set[type]] = {}
_flushing = False


def discover() -> list[EntryPointInfo]:
    """Every declared plugin entry point of every installed distribution (nothing is imported)."""
    return entry_points.discover(GROUPS)


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
    dist = entry_points.dist_name(ep)
    key = (GROUPS[kind], ep.name, ep.value, dist)
    where = f"{kind} plugin {ep.name!r} ({ep.name} = {ep.value}) of distribution {dist!r}"
    try:
        cls = ep.load()
    except Exception as exc:
        top = ep.value.split(":")[0].split(".")[0]
        if entry_points.package_initializing(top):
            _pending[key] = ep  # circular import in progress (e.g. LibMTL imported from the plugin's package)
            entry_points.watch_initializing(top, flush_pending)
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
        for ep in entry_points.entry_points(group):
            key = (group, ep.name, ep.value, entry_points.dist_name(ep))
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
                if not entry_points.package_initializing(ep.value.split(":")[0].split(".")[0]):
                    _pending.pop(key, None)
                    _install("weighting" if key[0] == GROUPS["weighting"] else "architecture", ep)
            _after_load()
        finally:
            _flushing = False
    return not _pending


def _after_load() -> None:
    host_config.install()


def register(*, strict: bool | None = None) -> dict[str, list[str]]:
    """Load every plugin entry point and install the classes into LibMTL. Idempotent.

    Args:
        strict: raise :class:`PluginError` instead of warning on a broken or clashing plugin (default:
            ``$LIBMTL_REPMTL_STRICT``).

    Returns:
        kind -> names of the registered plugins (``{"weighting": ["RepMTL"], "architecture": ["RepHPS"]}``).
    """
    global _strict_override, _register_called
    with _lock:
        _register_called = True
        compat.ensure_libmtl()
        previous, _strict_override = _strict_override, strict
        try:
            _reinstall()
            _load_all()
            _after_load()
        finally:
            _strict_override = previous
        return registered_names()


_register_called = False


def _ensure_registered() -> None:
    """:func:`register` once in this process if nobody did (the autoload hook off): lookups see the plugins."""
    if not _register_called:
        register()


def registered_names() -> dict[str, list[str]]:
    """kind -> names of the plugins registered so far."""
    return {kind: sorted(n for (k, n) in _registered if k == kind) for kind in GROUPS}


def plugins() -> list[Plugin]:
    """The registered plugins (kind, name, entry point, distribution, class)."""
    return [p for _, p in sorted(_registered.items())]


def available(kind: str | None = None) -> dict[str, list[str]]:
    """Every name the installed LibMTL accepts, plus the registered plugins, per kind (or only ``kind``).

    That is LibMTL's classes, the names its ``prepare_args`` accepts that are not classes (``DIY``; the git
    version's bilevel ``MOML``, ``FORUM``, ``AutoLambda``: see :mod:`~libmtl_repmtl.libmtl.flavour`) and the
    plugins. Sorted case-insensitively. This list is what ``libmtl-repmtl list``, the ``--weighting`` /
    ``--arch`` help and :class:`UnknownMethodError` show.
    """
    flush_pending()
    kinds = [kind] if kind is not None else list(GROUPS)
    for k in kinds:
        if k not in GROUPS:
            raise ValueError(f"unknown plugin kind {k!r}; choose from {sorted(GROUPS)}")
    return {k: sorted(set(builtin_names(k)) | set(flavour.accepted_names(k)) | set(registered_names()[k]),
                      key=str.lower) for k in kinds}


def _describe(kind: str) -> str:
    names = available(kind)[kind]
    plugin_names = set(registered_names()[kind])
    return ", ".join(f"{n} (plugin)" if n in plugin_names else n for n in names)


def unknown_method_message(kind: str, name: str) -> str:
    """The error text for an unknown ``--weighting`` / ``--arch`` (every available name, and what to do)."""
    return (f"unknown {kind} {name!r} (--{FLAGS[kind]}). Available {kind}s: {_describe(kind)}. Check the "
            f"spelling, or install a distribution that declares it under the entry-point group {GROUPS[kind]!r}.")


def _no_class_message(kind: str, name: str) -> str:
    if kind == "weighting" and name in flavour.bilevel_methods():
        info = flavour.protocol(name)
        return (f"{name!r} (--weighting) is a bilevel method that LibMTL's Trainer runs itself (train_bilevel: "
                f"inner and outer batches of half the batch size, softmax task weights with their own optimiser, "
                f"weight_args {sorted(info.weight_args)}); it has no weighting class. The model is built with "
                f"{info.model_weighting!r}: see host.protocol({name!r}). Use a trainer that implements the "
                f"bilevel loop, or another weighting.")
    return (f"{name!r} (--{FLAGS[kind]}) is accepted by LibMTL's prepare_args but is not a LibMTL {kind} class: "
            f"it stands for your own class. Pass the class itself where the trainer takes classes.")


def lookup(kind: str, name: str) -> type:
    """The class of ``kind`` (``"weighting"`` / ``"architecture"``) called ``name``: a built-in or a plugin.

    This is the one place that turns a method name into a class, for LibMTL's scripts (through
    ``prepare_args`` / ``LibMTL.weighting``) and for this package's trainers and harness. Registers the plugins
    first if nobody has (the autoload hook off), so ``RepMTL`` / ``RepHPS`` are always found.

    Raises:
        NoClassError: LibMTL accepts ``name`` but has no class for it (a bilevel method such as ``MOML``, run
            by LibMTL's own Trainer, or ``DIY``); the message says what it is and what to do.
        UnknownMethodError: no such name (the message names the flag and lists the available names).
    """
    if kind not in GROUPS:
        raise ValueError(f"unknown plugin kind {kind!r}; choose from {sorted(GROUPS)}")
    _ensure_registered()
    flush_pending()
    cls = vars(_module(kind)).get(name)
    if isinstance(cls, type) and issubclass(cls, _base(kind)):
        return cls
    if name in available(kind)[kind]:
        raise NoClassError(_no_class_message(kind, name))
    raise UnknownMethodError(unknown_method_message(kind, name))


def protocol(name: str) -> flavour.WeightingProtocol:
    """What a training loop must do for the weighting ``name`` under the installed LibMTL.

    Fields (see :class:`~libmtl_repmtl.libmtl.flavour.WeightingProtocol`): ``loss_samples`` (MoDo, SDMGrad:
    3 loss vectors from 3 batches, ``losses`` of shape ``(3, T)``), ``update_after_step`` (FAMO:
    ``model.update_w(losses)`` after ``optimizer.step()``, losses recomputed without gradient on the same
    batch), ``bilevel`` (MOML, FORUM, AutoLambda: LibMTL's Trainer runs them; extra data and flags),
    ``model_weighting``, ``weight_args`` (LibMTL's defaults). Probed on the installed LibMTL, cached.

    Raises:
        UnknownMethodError: ``name`` is not an available weighting.
    """
    _ensure_registered()
    flush_pending()
    try:
        return flavour.protocol(name)
    except KeyError:
        raise UnknownMethodError(unknown_method_message("weighting", name)) from None


def bilevel_methods() -> tuple[str, ...]:
    """The weighting names LibMTL's Trainer runs as bilevel methods (``()`` for LibMTL 1.1.5)."""
    return flavour.bilevel_methods()


def trainer_takes_names() -> bool:
    """True when ``LibMTL.Trainer`` takes names (git version), False when it takes classes (1.1.5).

    Found by behaviour (``Trainer._prepare_model`` on a stub), never by version.
    """
    return flavour.trainer_takes_names()


def add_plugin_flags(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add every registered plugin's ``libmtl_add_args`` flags to ``parser`` (once per parser); return it."""
    register()
    host_config._add_plugin_flags(parser)
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
            if not p and n not in builtin_names(kind):  # accepted by LibMTL without a class
                src = ("  [bilevel: run by LibMTL's Trainer]" if kind == "weighting" and n in bilevel_methods()
                       else "  [no class: stands for your own]")
            lines.append(f"  {n}{src}")
    return "\n".join(lines)


# host_config uses this module's functions at call time only, so it is imported last (after they exist).
from libmtl_repmtl.libmtl import host_config  # noqa: E402

WeightingProtocol = flavour.WeightingProtocol

__all__ = [
    "FLAGS", "GROUPS", "STAND_INS", "STRICT_ENV", "EntryPointInfo", "NoClassError", "Plugin", "PluginError",
    "PluginWarning", "UnknownMethodError", "WeightingProtocol", "add_plugin_flags", "available", "bilevel_methods",
    "builtin_names", "discover", "flush_pending", "format_available", "lookup", "plugins", "protocol", "register",
    "registered_names", "trainer_takes_names", "unknown_method_message",
]
