"""Rep-MTL presets and the ``NAME[key=value,...]`` method parser (no model is built)."""

from __future__ import annotations

import doctest
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import libmtl_repmtl.core.presets as presets_module
from libmtl_repmtl.core.config import CHOICES, RepMTLConfig, field_names
from libmtl_repmtl.core.presets import PRESETS, parse_method, parse_methods, preset_names

DEFAULTS = RepMTLConfig()


def test_module_examples():
    assert doctest.testmod(presets_module, raise_on_error=False).failed == 0


def test_preset_configs():
    configs = {name: parse_method(name).config for name in preset_names()}
    assert configs["RepMTL"] == DEFAULTS
    assert configs["RepMTL-paper"] == RepMTLConfig(lambda_tsr=0.9, lambda_csa=0.9, tau=0.1, log_loss=True,
                                                   csa_form="printed", saliency_loss="objective",
                                                   tsr_channel_mean="signed")
    assert configs["RepMTL-CSA"] == RepMTLConfig(lambda_tsr=0.0, lambda_csa=DEFAULTS.lambda_csa)
    assert configs["RepMTL-TSR"] == RepMTLConfig(lambda_csa=0.0, lambda_tsr=DEFAULTS.lambda_tsr)
    assert configs["logEW"] == RepMTLConfig(lambda_tsr=0.0, lambda_csa=0.0, log_loss=True)
    assert configs["RepMTL-small"] == RepMTLConfig(lambda_tsr=0.1, lambda_csa=0.1, tau=1.0)
    assert all(parse_method(name).weighting == "RepMTL" for name in preset_names())


def test_ablations_follow_the_defaults_and_the_paper_preset_does_not():
    """The ablations are relative to the defaults (a later sweep changes them); RepMTL-paper pins every value."""
    assert parse_method("RepMTL").weight_args == {}
    assert parse_method("RepMTL-CSA").weight_args == {"RepMTL_lambda_tsr": 0.0}
    assert parse_method("RepMTL-TSR").weight_args == {"RepMTL_lambda_csa": 0.0}
    pinned = set(parse_method("RepMTL-paper").weight_args)
    assert pinned == {"RepMTL_" + n for n in ("lambda_tsr", "lambda_csa", "tau", "log_loss", *CHOICES)}


def test_inline_settings_override_the_preset_and_give_a_canonical_label():
    spec = parse_method("RepMTL[lambda_tsr=0.1,tau=1]")
    assert spec.label == "RepMTL[lambda_tsr=0.1,tau=1]"
    assert spec.weight_args == {"RepMTL_lambda_tsr": 0.1, "RepMTL_tau": 1.0}
    assert spec.config == RepMTLConfig(lambda_tsr=0.1, tau=1.0)
    paper = parse_method("RepMTL-paper[tau=0.5]")
    assert paper.label == "RepMTL-paper[tau=0.5]" and paper.config.tau == 0.5
    assert paper.weight_args["RepMTL_lambda_csa"] == 0.9 and paper.weight_args["RepMTL_tau"] == 0.5
    assert parse_method("RepMTL-CSA[lambda_tsr=0.3]").weight_args == {"RepMTL_lambda_tsr": 0.3}


def test_every_spelling_of_one_setting_has_one_label():
    spellings = ["RepMTL[tau=1,lambda_tsr=0.1]", " RepMTL [ lambda_tsr = 0.10 , tau = 1.0 ] ",
                 "RepMTL[tau=1e0,lambda_tsr=.1]"]
    assert {parse_method(s).label for s in spellings} == {"RepMTL[lambda_tsr=0.1,tau=1]"}
    spec = parse_method("RepMTL[csa_form=InfoNCE,log_loss=OFF,global_negatives=1]")
    assert spec.label == "RepMTL[log_loss=false,global_negatives=true,csa_form=infonce]"


@settings(max_examples=50, deadline=None)
@given(preset=st.sampled_from(list(PRESETS)),
       values=st.fixed_dictionaries({}, optional={
           "lambda_tsr": st.floats(0, 5, allow_nan=False), "lambda_csa": st.floats(0, 5, allow_nan=False),
           "tau": st.floats(1e-4, 10), "log_loss": st.booleans(),
           **{name: st.sampled_from(vals) for name, vals in CHOICES.items()}}))
def test_label_parses_back_to_the_same_spec_and_names_a_folder(preset, values):
    body = ",".join(f"{k}={v}" for k, v in values.items())
    spec = parse_method(f"{preset}[{body}]" if body else preset)
    assert parse_method(spec.label) == spec
    assert re.fullmatch(r"[A-Za-z0-9_.+=,\[\]-]+", spec.label)
    assert all(getattr(spec.config, k) == (v if not isinstance(v, float) else float(v)) for k, v in values.items())


def test_other_weightings_pass_through_without_settings():
    spec = parse_method("EW")
    assert (spec.label, spec.weighting, spec.preset, spec.weight_args, spec.config) == ("EW", "EW", None, {}, None)
    with pytest.raises(ValueError, match=r"inline settings are for the Rep-MTL presets.*'EW' takes none"):
        parse_method("EW[tau=1]")


@pytest.mark.parametrize("text,message", [
    ("RepMTL[lamda_tsr=0.1]", r"unknown setting 'lamda_tsr' \(did you mean 'lambda_tsr'\?\); known: lambda_tsr"),
    ("RepMTL[RepMTL_tau=1]", r"write 'tau' without the RepMTL_ prefix"),
    ("RepMTL[tau=0]", r"tau .*must be > 0"),
    ("RepMTL[tau=abc]", r"bad value for tau: expected a number"),
    ("RepMTL[csa_form=ntxent]", r"bad value for csa_form: expected one of 'printed', 'infonce'"),
    ("RepMTL[log_loss=maybe]", r"bad value for log_loss: expected a boolean"),
    ("RepMTL[tau=1,tau=2]", r"'tau' is given twice"),
    ("RepMTL[tau=1", r"malformed \(expected NAME or NAME\[key=value,...\]"),
    ("RepMTL[tau=1]x", r"malformed"),
    ("RepMTL[[tau=1]]", r"brackets do not nest"),
    ("RepMTL[]", r"empty brackets"),
    ("RepMTL[tau]", r"malformed setting 'tau'"),
    ("RepMTL[tau=1,]", r"malformed setting ''"),
    ("RepMTL-papr", r"unknown preset 'RepMTL-papr' \(did you mean 'RepMTL-paper'\?\); presets: RepMTL, RepMTL-paper"),
    ("repmtl", r"unknown preset 'repmtl' \(did you mean 'RepMTL'\?\)"),
    ("", r"malformed"),
])
def test_bad_methods_say_what_is_wrong_and_what_is_allowed(text, message):
    with pytest.raises(ValueError, match=message):
        parse_method(text)


def test_parse_methods_reports_every_bad_method_and_duplicate_labels():
    specs = parse_methods(["EW", "logEW", "RepMTL", "RepMTL[tau=1]", "RepMTL-paper"])
    assert [s.label for s in specs] == ["EW", "logEW", "RepMTL", "RepMTL[tau=1]", "RepMTL-paper"]
    with pytest.raises(ValueError) as info:
        parse_methods(["RepMTL[tau=0]", "EW", "RepMTL-foo"])
    assert "tau" in str(info.value) and "'RepMTL-foo'" in str(info.value)
    with pytest.raises(ValueError, match=r"listed twice: RepMTL\[tau=1\]"):
        parse_methods(["RepMTL[tau=1]", "RepMTL[tau=1.0]"])


def test_every_field_can_be_set_inline():
    for name in field_names():
        value = {"lambda_tsr": "0.2", "lambda_csa": "0.2", "tau": "2", "log_loss": "false",
                 "global_negatives": "true"}.get(name) or CHOICES[name][-1]
        assert name in parse_method(f"RepMTL[{name}={value}]").settings
