"""Method names of the grid and how each maps onto a trainer run (weighting, architecture, settings)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class MethodSpec:
    """How a method name maps onto a trainer run.

    Attributes:
        name: the method's name in the grid (folder name).
        weighting: LibMTL weighting name.
        arch: architecture name.
        weight_args: extra weighting options (e.g. ``{"RepMTL_lambda_tsr": 0.0}``).
        single_task: one run per task, each with only that task.
    """

    name: str
    weighting: str
    arch: str
    weight_args: dict[str, Any] = field(default_factory=dict)
    single_task: bool = False


def method_spec(name: str) -> MethodSpec:
    """The :class:`MethodSpec` of a method name (``RepMTL``, ``RepMTL-CSA``, ``RepMTL-TSR``, ``RepMTL-small``,
    ``STL`` or a LibMTL weighting).

    Raises:
        ValueError: a name that cannot be a weighting.
    """
    if name == "RepMTL":
        return MethodSpec(name, "RepMTL", "RepHPS")
    if name == "RepMTL-CSA":
        return MethodSpec(name, "RepMTL", "RepHPS", {"RepMTL_lambda_tsr": 0.0})
    if name == "RepMTL-TSR":
        return MethodSpec(name, "RepMTL", "RepHPS", {"RepMTL_lambda_csa": 0.0})
    if name == "RepMTL-small":
        return MethodSpec(name, "RepMTL", "RepHPS",
                          {"RepMTL_lambda_tsr": 0.1, "RepMTL_lambda_csa": 0.1, "RepMTL_tau": 1.0})
    if name == "STL":
        return MethodSpec(name, "EW", "HPS", single_task=True)
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
        raise ValueError(f"bad method name {name!r}")
    return MethodSpec(name, name, "HPS")


__all__ = ["MethodSpec", "method_spec"]
