"""Method names of the grid and how each maps onto a trainer run (weighting, architecture, settings).

A method is ``STL`` (one single-task run per task), a Rep-MTL preset (``RepMTL``, ``RepMTL-paper``,
``RepMTL-CSA``, ``RepMTL-TSR``, ``logEW``, ``RepMTL-small``) optionally with inline settings
(``RepMTL[lambda_tsr=0.1,tau=1]``), or any other weighting name (``EW``, ``MGDA``, ...). Parsing and validation
of presets and settings are :func:`libmtl_repmtl.core.presets.parse_method`'s; each method's folder and table
row is its canonical label, the same for every spelling of one setting.

``all`` stands for every weighting the installed LibMTL and the registered plugins have
(:func:`libmtl_repmtl.libmtl.host.available`, asked when the grid is planned), those without a weighting class
left out with the reason (:func:`left_out_of_all`: the git version's bilevel methods, which LibMTL's own Trainer
runs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from libmtl_repmtl.core.config import field_names
from libmtl_repmtl.core.presets import PRESETS, REPMTL_WEIGHTING, format_value, parse_method
from libmtl_repmtl.libmtl import host
from libmtl_repmtl.libmtl.capabilities import needs_rep

#: The single-task baseline method.
STL = "STL"
#: Every weighting of the installed LibMTL and the plugins (``--methods all``).
ALL = "all"


@dataclass(frozen=True)
class MethodSpec:
    """How a method maps onto a trainer run.

    Attributes:
        name: the method's canonical label (folder name and table row).
        weighting: LibMTL weighting name.
        arch: architecture name (``RepHPS`` for Rep-MTL presets, else ``HPS``).
        weight_args: the run's weighting overrides (e.g. ``{"RepMTL_lambda_tsr": 0.0}``).
        single_task: one run per task, each with only that task.
        settings: what the method runs, for the report: the full Rep-MTL config of a preset, else ``""``.
        rep_grad: run with LibMTL's ``rep_grad`` (a weighting on ``HPS`` that reads the representation's
            gradients, e.g. GradDrop: :func:`libmtl_repmtl.libmtl.capabilities.needs_rep`).
    """

    name: str
    weighting: str
    arch: str
    weight_args: dict[str, Any] = field(default_factory=dict)
    single_task: bool = False
    settings: str = ""
    rep_grad: bool = False


def installed(weighting: str) -> bool:
    """Whether the installed LibMTL (or a plugin) has a weighting class called ``weighting`` (by behaviour:
    :func:`libmtl_repmtl.libmtl.host.lookup` finds it), never by LibMTL's version."""
    try:
        host.lookup("weighting", weighting)
    except ValueError:  # UnknownMethodError, NoClassError
        return False
    return True


def method_spec(text: str) -> MethodSpec:
    """The :class:`MethodSpec` of a method (``STL``, a preset with optional ``[key=value,...]`` settings, or a
    weighting name).

    Raises:
        ValueError: malformed text, an unknown preset or setting, or a bad value (the message says what is
            allowed).
    """
    if text.strip() == STL:
        return MethodSpec(STL, "EW", "HPS", single_task=True)
    parsed = parse_method(text)
    if parsed.weighting != REPMTL_WEIGHTING or parsed.config is None:
        rep_grad = installed(parsed.weighting) and needs_rep(host.lookup("weighting", parsed.weighting))
        return MethodSpec(parsed.label, parsed.weighting, "HPS", rep_grad=rep_grad)
    config = ", ".join(f"{k}={format_value(getattr(parsed.config, k))}" for k in field_names())
    preset = PRESETS[parsed.preset].description if parsed.preset in PRESETS else ""
    return MethodSpec(parsed.label, parsed.weighting, "RepHPS", dict(parsed.weight_args),
                      settings=f"{config}" + (f" (preset {parsed.preset}: {preset})" if preset else ""))


def left_out_of_all() -> dict[str, str]:
    """The weightings the installed LibMTL accepts that ``all`` leaves out (no weighting class), with the reason."""
    bilevel = set(host.bilevel_methods())
    return {n: ("a bilevel method that LibMTL's own Trainer runs (host.protocol)" if n in bilevel else
                "LibMTL accepts the name but has no weighting class for it")
            for n in host.available("weighting")["weighting"] if not installed(n)}


def all_weightings() -> list[str]:
    """What ``all`` stands for: every weighting name :func:`~libmtl_repmtl.libmtl.host.available` lists that
    has a class (LibMTL's and the plugins', e.g. ``RepMTL`` with its defaults), in its order."""
    return [n for n in host.available("weighting")["weighting"] if installed(n)]


def expand_methods(texts: Sequence[str]) -> list[str]:
    """``texts`` with ``all`` replaced by :func:`all_weightings`, less those given elsewhere in ``texts`` (the
    same canonical label), so ``["all", "STL"]`` is every weighting and the single-task runs."""
    if ALL not in (t.strip() for t in texts):
        return list(texts)
    given = {method_spec(t).name for t in texts if t.strip() != ALL}
    out: list[str] = []
    for t in texts:
        out += [n for n in all_weightings() if method_spec(n).name not in given] if t.strip() == ALL else [t]
    return out


def method_specs(texts: Sequence[str]) -> list[MethodSpec]:
    """The specs of a grid's methods, in order (``all`` expanded: :func:`expand_methods`).

    Raises:
        ValueError: a bad method (see :func:`method_spec`), or two methods that are the same setting (they would
            share a folder and a table row).
    """
    specs: dict[str, str] = {}
    out = []
    for text in expand_methods(texts):
        spec = method_spec(text)
        if spec.name in specs:
            raise ValueError(f"methods {specs[spec.name]!r} and {text!r} are the same setting ({spec.name}); "
                             "give it once")
        specs[spec.name] = text
        out.append(spec)
    return out


__all__ = ["ALL", "STL", "MethodSpec", "all_weightings", "expand_methods", "installed", "left_out_of_all",
           "method_spec", "method_specs"]
