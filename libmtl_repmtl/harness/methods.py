"""Method names of the grid and how each maps onto a trainer run (weighting, architecture, settings).

A method is ``STL`` (one single-task run per task), a Rep-MTL preset (``RepMTL``, ``RepMTL-paper``,
``RepMTL-CSA``, ``RepMTL-TSR``, ``logEW``, ``RepMTL-small``) optionally with inline settings
(``RepMTL[lambda_tsr=0.1,tau=1]``), or any other weighting name (``EW``, ``MGDA``, ...). Parsing and validation
of presets and settings are :func:`libmtl_repmtl.core.presets.parse_method`'s; each method's folder and table
row is its canonical label, the same for every spelling of one setting.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from libmtl_repmtl.core.config import field_names
from libmtl_repmtl.core.presets import PRESETS, REPMTL_WEIGHTING, format_value, parse_method

#: The single-task baseline method.
STL = "STL"


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
    """

    name: str
    weighting: str
    arch: str
    weight_args: dict[str, Any] = field(default_factory=dict)
    single_task: bool = False
    settings: str = ""


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
        return MethodSpec(parsed.label, parsed.weighting, "HPS")
    config = ", ".join(f"{k}={format_value(getattr(parsed.config, k))}" for k in field_names())
    preset = PRESETS[parsed.preset].description if parsed.preset in PRESETS else ""
    return MethodSpec(parsed.label, parsed.weighting, "RepHPS", dict(parsed.weight_args),
                      settings=f"{config}" + (f" (preset {parsed.preset}: {preset})" if preset else ""))


def method_specs(texts: Sequence[str]) -> list[MethodSpec]:
    """The specs of a grid's methods, in order.

    Raises:
        ValueError: a bad method (see :func:`method_spec`), or two methods that are the same setting (they would
            share a folder and a table row).
    """
    specs: dict[str, str] = {}
    out = []
    for text in texts:
        spec = method_spec(text)
        if spec.name in specs:
            raise ValueError(f"methods {specs[spec.name]!r} and {text!r} are the same setting ({spec.name}); "
                             "give it once")
        specs[spec.name] = text
        out.append(spec)
    return out


__all__ = ["STL", "MethodSpec", "method_spec", "method_specs"]
