"""The plugin host's side of ``LibMTL.config``: plugin flags on ``LibMTL_args``, every available name in the
help of ``--weighting`` / ``--arch``, and ``prepare_args`` wrapped for plugin names and clear unknown-name errors.

Installed by :func:`libmtl_repmtl.libmtl.host.register` (see there and ``docs/compat.md``).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import sys
from collections.abc import Callable
from typing import Any

from libmtl_repmtl.libmtl import compat, host


def _add_plugin_flags(parser: argparse.ArgumentParser) -> None:
    done = host._flags_added.setdefault(id(parser), set())
    for plugin in host.plugins():
        add = getattr(plugin.cls, "libmtl_add_args", None)
        if plugin.cls in done or add is None:
            continue
        done.add(plugin.cls)
        before = {opt for action in parser._actions for opt in action.option_strings}
        try:
            add(parser)
        except (argparse.ArgumentError, ValueError, TypeError) as exc:
            host._problem(f"libmtl_repmtl: the flags of {plugin.kind} plugin {plugin.name!r} (distribution "
                          f"{plugin.distribution!r}) could not be added to LibMTL_args: {exc}")
            continue
        new = {opt for action in parser._actions for opt in action.option_strings} - before
        odd = sorted(o for o in new if o.startswith("--") and not o.startswith(f"--{plugin.name}_"))
        if odd:
            host._problem(f"libmtl_repmtl: {plugin.kind} plugin {plugin.name!r} added flags {odd} that do not "
                          f"follow the --{plugin.name}_<key> convention (they may clash with other plugins).")


def _update_help(parser: argparse.ArgumentParser) -> None:
    for action in parser._actions:
        for kind, dest in host.FLAGS.items():
            if action.dest == dest:
                action.help = f"{kind} (default %(default)s); available: {', '.join(host.available(kind)[kind])}"


def _wrap_parser(parser: argparse.ArgumentParser) -> None:
    if compat._marked(parser.__dict__.get("parse_known_args"), "host-parser"):
        return
    original = parser.parse_known_args

    def parse_known_args(args: Any = None, namespace: Any = None) -> Any:
        host.flush_pending()
        return original(args, namespace)

    parser.parse_known_args = compat._mark(parse_known_args, "host-parser")  # type: ignore[method-assign]


def _plugin_class(kind: str, name: Any) -> type | None:
    plugin = host._registered.get((kind, str(name)))
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
            for kind in host.GROUPS:  # name the argument that is wrong (e.g. --arch for MOML + Foo)
                name = str(getattr(names, host.FLAGS[kind], None))
                if name not in host.available(kind)[kind]:
                    raise host.UnknownMethodError(host.unknown_method_message(kind, name)) from exc
            raise

    def prepare_args(params: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any], Any]:
        host.flush_pending()
        classes = {kind: _plugin_class(kind, getattr(params, host.FLAGS[kind], None)) for kind in host.GROUPS}
        if not any(classes.values()):
            return call(params, params)
        stand_in = copy.copy(params)
        for kind, cls in classes.items():
            if cls is not None:
                setattr(stand_in, host.FLAGS[kind], host.STAND_INS[kind])
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
    mod = host._module(kind)
    previous = vars(mod).get("__getattr__")
    if compat._marked(previous, "host-getattr"):
        return previous  # type: ignore[return-value]

    def __getattr__(name: str) -> Any:
        if not name.startswith("__") and host._pending:
            host.flush_pending()
            if name in vars(mod):
                return vars(mod)[name]
        if previous is not None:
            return previous(name)
        raise AttributeError(f"module {mod.__name__!r} has no attribute {name!r}")

    return compat._mark(__getattr__, "host-getattr")


def install() -> None:
    """Wrap ``LibMTL.config`` (idempotent): plugin flags, help listing every name, ``prepare_args``."""
    config = sys.modules["LibMTL.config"]
    _wrap_prepare_args(config)
    parser = getattr(config, "LibMTL_args", None)
    if isinstance(parser, argparse.ArgumentParser):
        _add_plugin_flags(parser)
        _update_help(parser)
        _wrap_parser(parser)
    for kind in host.GROUPS:
        mod = host._module(kind)
        mod.__getattr__ = _module_getattr(kind)


