"""Named Rep-MTL presets and method names with inline settings, parsed and validated without building anything.

A method is written ``NAME`` or ``NAME[key=value,...]``:

>>> spec = parse_method("RepMTL-paper[tau=0.5, csa_form=InfoNCE]")
>>> spec.weighting, spec.label
('RepMTL', 'RepMTL-paper[tau=0.5,csa_form=infonce]')
>>> spec.weight_args["RepMTL_tau"], spec.config.lambda_tsr
(0.5, 0.9)
>>> parse_method("EW").weight_args
{}

``NAME`` is a preset (:data:`PRESETS`: run as the ``RepMTL`` weighting) or any other weighting name (passed on
as it is; whether it exists is checked by the plugin host when the run is built). Keys in brackets are
:class:`~libmtl_repmtl.core.config.RepMTLConfig` field names, allowed on presets only; they override the preset.
The canonical :attr:`MethodSpec.label` (keys in the config's field order, values normalised) is the same for
every spelling of one setting, parses back to the same spec, and holds only ``A-Z a-z 0-9 _ . - + = , [ ]``,
so it can name a folder and a table row.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from libmtl_repmtl.core.config import CHOICES, WEIGHT_ARG_PREFIX, RepMTLConfig, field_names

#: The weighting every preset runs as.
REPMTL_WEIGHTING = "RepMTL"


@dataclass(frozen=True)
class Preset:
    """A named Rep-MTL setting.

    Attributes:
        name: the method name (``RepMTL``, ``RepMTL-paper``, ...).
        overrides: config fields set by the preset (field name -> value); the others follow
            ``RepMTLConfig()``'s defaults, so a preset defined by the defaults follows them when they change.
        description: one line for listings and docs.
    """

    name: str
    overrides: Mapping[str, Any]
    description: str


#: The paper's literal reading: its stated numbers and, for each open choice, the reading as printed.
_PAPER = {"lambda_tsr": 0.9, "lambda_csa": 0.9, "tau": 0.1, "log_loss": True,
          **{name: values[0] for name, values in CHOICES.items()}}

PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("RepMTL", {}, "the defaults (RepMTLConfig())"),
    Preset("RepMTL-paper", _PAPER, "the paper's literal numbers: both lambdas 0.9, tau 0.1, log losses, "
                                   "printed CSA form, saliency of the objective, signed TSR channel mean"),
    Preset("RepMTL-CSA", {"lambda_tsr": 0.0}, "ablation: the defaults with TSR off (CSA only)"),
    Preset("RepMTL-TSR", {"lambda_csa": 0.0}, "ablation: the defaults with CSA off (TSR only)"),
    Preset("logEW", {"lambda_tsr": 0.0, "lambda_csa": 0.0, "log_loss": True},
           "both terms off: equal weighting of log losses, run as the RepMTL weighting"),
    Preset("RepMTL-small", {"lambda_tsr": 0.1, "lambda_csa": 0.1, "tau": 1.0},
           "both lambdas 0.1, tau 1, pinned (today's defaults, chosen by the CPU sweep; kept if they change)"),
)}

_METHOD = re.compile(r"\s*([A-Za-z][A-Za-z0-9_.+-]*)\s*(?:\[(.*)\])?\s*", re.DOTALL)
_WEIGHTING = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_SYNTAX = "expected NAME or NAME[key=value,...]"


@dataclass(frozen=True)
class MethodSpec:
    """A parsed method.

    Attributes:
        label: canonical name (folder name and table row): ``NAME`` or ``NAME[key=value,...]``.
        weighting: the weighting to run (``RepMTL`` for every preset).
        preset: the preset's name, or ``None`` for another weighting.
        settings: the inline settings (field name -> value, normalised), in the config's field order.
        weight_args: the ``RepMTL_<field>`` overrides of the run (the preset's, then the inline ones; empty for
            another weighting); pass them as ``weight_args`` overrides.
        config: the full :class:`RepMTLConfig` (today's defaults plus the overrides); ``None`` for another
            weighting.
    """

    label: str
    weighting: str
    preset: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    weight_args: dict[str, Any] = field(default_factory=dict)
    config: RepMTLConfig | None = None


def preset_names() -> tuple[str, ...]:
    """The preset names, in the order of :data:`PRESETS`."""
    return tuple(PRESETS)


def format_value(value: Any) -> str:
    """A setting's value as written in a label: ``1`` for 1.0, ``0.1``, ``true``/``false``, a choice's name."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text
    return str(value)


def _split_settings(text: str, body: str) -> list[tuple[str, str]]:
    if not body.strip():
        raise ValueError(f"method {text!r}: empty brackets; write the name alone or NAME[key=value,...]")
    if "[" in body or "]" in body:
        raise ValueError(f"method {text!r}: malformed ({_SYNTAX}; brackets do not nest)")
    pairs = []
    for item in body.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"method {text!r}: malformed setting {item.strip()!r} ({_SYNTAX})")
        pairs.append((key.strip(), value.strip()))
    return pairs


def _check_key(text: str, key: str, seen: set[str]) -> None:
    names = field_names()
    if key in seen:
        raise ValueError(f"method {text!r}: {key!r} is given twice")
    if key.startswith(WEIGHT_ARG_PREFIX) and key[len(WEIGHT_ARG_PREFIX):] in names:
        raise ValueError(f"method {text!r}: write {key[len(WEIGHT_ARG_PREFIX):]!r} without the "
                         f"{WEIGHT_ARG_PREFIX} prefix inside the brackets")
    if key not in names:
        close = difflib.get_close_matches(key, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"method {text!r}: unknown setting {key!r}{hint}; known: {', '.join(names)}")


def _unknown_name(text: str, name: str) -> ValueError:
    close = [p for p in PRESETS if p.lower() == name.lower()] or difflib.get_close_matches(name, PRESETS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ValueError(f"method {text!r}: unknown preset {name!r}{hint}; presets: {', '.join(PRESETS)}; other "
                      "methods are weighting names (letters, digits, _) without settings")


def parse_method(text: str) -> MethodSpec:
    """Parse ``NAME`` or ``NAME[key=value,...]`` into a validated :class:`MethodSpec` (nothing is built).

    Raises:
        ValueError: malformed text, an unknown preset or setting, settings on a non-preset weighting, a key
            given twice, or a bad value; the message names the problem and what is allowed.
    """
    match = _METHOD.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"method {text!r}: malformed ({_SYNTAX})")
    name, body = match.group(1), match.group(2)
    if name not in PRESETS:
        near_preset = any(p.lower() == name.lower() for p in PRESETS)
        if near_preset or not _WEIGHTING.fullmatch(name):
            raise _unknown_name(text, name)
        if body is not None:
            raise ValueError(f"method {text!r}: inline settings are for the Rep-MTL presets "
                             f"({', '.join(PRESETS)}); {name!r} takes none")
        return MethodSpec(label=name, weighting=name)
    pairs = _split_settings(text, body) if body is not None else []
    seen: set[str] = set()
    for key, _ in pairs:
        _check_key(text, key, seen)
        seen.add(key)
    preset = PRESETS[name]
    try:
        inline = RepMTLConfig.from_overrides(dict(pairs), RepMTLConfig.from_overrides(preset.overrides))
    except ValueError as exc:
        raise ValueError(f"method {text!r}: {exc}") from None
    settings = {key: getattr(inline, key) for key in field_names() if key in seen}
    overrides = {**preset.overrides, **settings}
    label = name + ("[" + ",".join(f"{k}={format_value(v)}" for k, v in settings.items()) + "]" if settings else "")
    return MethodSpec(label=label, weighting=REPMTL_WEIGHTING, preset=name, settings=settings,
                      weight_args={WEIGHT_ARG_PREFIX + k: v for k, v in overrides.items()}, config=inline)


def parse_methods(texts: Iterable[str]) -> list[MethodSpec]:
    """Parse every method (all errors of one kind are reported at once) and refuse two with the same label.

    Raises:
        ValueError: one line per bad method, or the methods that share a label (two spellings of one setting).
    """
    specs, errors = [], []
    for text in texts:
        try:
            specs.append(parse_method(text))
        except ValueError as exc:
            errors.append(str(exc))
    if errors:
        raise ValueError("\n".join(errors))
    labels = [s.label for s in specs]
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:
        raise ValueError(f"the same method is listed twice: {', '.join(twice)} (each label names one folder)")
    return specs


def describe_presets() -> str:
    """One line per preset: ``name: description``."""
    return "\n".join(f"{p.name}: {p.description}" for p in PRESETS.values())


__all__ = ["PRESETS", "REPMTL_WEIGHTING", "MethodSpec", "Preset", "describe_presets", "format_value",
           "parse_method", "parse_methods", "preset_names"]
