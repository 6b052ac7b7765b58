"""RepMTLConfig: strict ``weight_args``, option values, the flags built from the fields, parsing once per run."""

from __future__ import annotations

import argparse

import pytest
import torch

from libmtl_repmtl.core.config import CHOICES, FIELD_HELP, RepMTLConfig, field_names, weight_arg_keys
from libmtl_repmtl.libmtl.architecture import RepHPS
from libmtl_repmtl.libmtl.weighting import RepMTL
from tests._models import build_model, forward_losses, make_batch

TASKS = ["a", "b"]


def test_round_trip_with_every_option():
    cfg = RepMTLConfig(lambda_tsr=0.3, lambda_csa=0.0, tau=0.5, log_loss=True, global_negatives=True,
                       csa_form="infonce", saliency_loss="raw", tsr_channel_mean="abs")
    assert RepMTLConfig.from_weight_args(cfg.to_weight_args()) == cfg
    assert set(cfg.to_weight_args()) == set(weight_arg_keys())
    assert set(FIELD_HELP) == set(field_names())


def test_defaults_are_the_reading_as_printed():
    cfg = RepMTLConfig()
    assert (cfg.csa_form, cfg.saliency_loss, cfg.tsr_channel_mean) == ("printed", "objective", "signed")
    assert all(getattr(cfg, name) == values[0] for name, values in CHOICES.items())


def test_misspelt_key_names_itself_the_likely_key_and_every_known_key():
    with pytest.raises(ValueError) as info:
        RepMTLConfig.from_weight_args({"RepMTL_lamda_tsr": 0.1})
    msg = str(info.value)
    assert "'RepMTL_lamda_tsr'" in msg and "did you mean 'RepMTL_lambda_tsr'" in msg
    assert all(key in msg for key in weight_arg_keys())


def test_wrong_case_prefix_is_an_error_and_other_weightings_keys_are_left_alone():
    with pytest.raises(ValueError, match="'repmtl_tau'"):
        RepMTLConfig.from_weight_args({"repmtl_tau": 0.5})
    assert RepMTLConfig.from_weight_args({"T": 2.0, "alpha": 1.5, "RepMTL_tau": None}) == RepMTLConfig()


@pytest.mark.parametrize("key,value,allowed", [
    ("RepMTL_csa_form", "ntxent", "'printed', 'infonce'"),
    ("RepMTL_saliency_loss", "log", "'objective', 'raw'"),
    ("RepMTL_tsr_channel_mean", 1, "'signed', 'abs'"),
])
def test_bad_choice_names_the_key_and_the_allowed_values(key, value, allowed):
    with pytest.raises(ValueError) as info:
        RepMTLConfig.from_weight_args({key: value})
    assert key in str(info.value) and allowed in str(info.value)


def test_choice_values_are_read_in_any_case():
    cfg = RepMTLConfig.from_weight_args({"RepMTL_csa_form": " InfoNCE", "RepMTL_saliency_loss": "RAW"})
    assert (cfg.csa_form, cfg.saliency_loss) == ("infonce", "raw")


def test_direct_construction_validates_every_field():
    with pytest.raises(ValueError, match="csa_form.*'printed', 'infonce'"):
        RepMTLConfig(csa_form="nt-xent")
    with pytest.raises(ValueError, match="log_loss must be True or False"):
        RepMTLConfig(log_loss="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="RepMTL_tau.*> 0"):
        RepMTLConfig.from_weight_args({"RepMTL_tau": -1})
    with pytest.raises(ValueError, match="RepMTL_lambda_tsr.*number"):
        RepMTLConfig.from_weight_args({"RepMTL_lambda_tsr": True})


def test_from_overrides_uses_field_names_on_a_base():
    base = RepMTLConfig(tau=0.5)
    cfg = RepMTLConfig.from_overrides({"lambda_csa": "0", "csa_form": "infonce"}, base)
    assert cfg == RepMTLConfig(tau=0.5, lambda_csa=0.0, csa_form="infonce")
    with pytest.raises(ValueError, match="'lamda_csa'.*did you mean 'lambda_csa'"):
        RepMTLConfig.from_overrides({"lamda_csa": 0})


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(exit_on_error=False)
    RepMTL.libmtl_add_args(parser)
    return parser


def test_one_flag_per_field_with_the_config_defaults():
    parser = _parser()
    assert {a.dest for a in parser._actions if a.dest != "help"} == set(weight_arg_keys())
    params = parser.parse_args([])
    assert RepMTL.libmtl_args(params) == RepMTLConfig().to_weight_args()


def test_flags_reach_weight_args():
    params = _parser().parse_args(["--RepMTL_csa_form", "INFONCE", "--RepMTL_saliency_loss", "raw",
                                   "--RepMTL_tsr_channel_mean", "abs", "--RepMTL_log_loss", "off"])
    wa = RepMTL.libmtl_args(params)
    assert (wa["RepMTL_csa_form"], wa["RepMTL_saliency_loss"], wa["RepMTL_tsr_channel_mean"]) == \
        ("infonce", "raw", "abs")
    assert wa["RepMTL_log_loss"] is False


def test_bad_flag_value_lists_the_choices():
    with pytest.raises(argparse.ArgumentError, match="invalid choice.*'printed', 'infonce'"):
        _parser().parse_args(["--RepMTL_csa_form", "ntxent"])


def _model_and_losses():
    model = build_model(RepHPS, RepMTL, TASKS, True, False, False)
    inputs, targets = make_batch(TASKS, True, False, 3)
    return model, lambda: forward_losses(model, TASKS, inputs, targets, False)


def test_unknown_key_in_backward_is_an_error_and_updates_nothing():
    model, losses = _model_and_losses()
    with pytest.raises(ValueError, match="'RepMTL_lamda_tsr'.*known keys: RepMTL_lambda_tsr"):
        model.backward(losses(), RepMTL_lamda_tsr=0.1)
    assert all(p.grad is None for p in model.parameters())


def test_weight_args_are_parsed_once_per_run(monkeypatch):
    calls = []
    original = RepMTLConfig.from_weight_args.__func__

    def counting(cls, weight_args):
        calls.append(dict(weight_args))
        return original(cls, weight_args)

    monkeypatch.setattr(RepMTLConfig, "from_weight_args", classmethod(counting))
    model, losses = _model_and_losses()
    weight_args = RepMTLConfig(tau=0.5, csa_form="infonce").to_weight_args()  # LibMTL keeps one dict
    for _ in range(3):
        model.zero_grad(set_to_none=True)
        model.backward(losses(), **weight_args)
    assert len(calls) == 1
    assert model.repmtl_config == RepMTLConfig(tau=0.5, csa_form="infonce")

    model.backward(losses(), **{**weight_args, "RepMTL_tau": 1.0})  # a change is never ignored
    assert len(calls) == 2 and model.repmtl_config.tau == 1.0


def test_configure_before_training_fails_early_and_is_not_repeated(monkeypatch):
    model, losses = _model_and_losses()
    with pytest.raises(ValueError, match="RepMTL_saliency_loss"):
        model.repmtl_configure({"RepMTL_saliency_loss": "gradient"})
    weight_args = {"RepMTL_lambda_csa": 0.0}
    model.repmtl_configure(weight_args)

    def fail(cls, weight_args):
        raise AssertionError("parsed again")

    monkeypatch.setattr(RepMTLConfig, "from_weight_args", classmethod(fail))
    model.backward(losses(), **weight_args)
    assert model.repmtl_stats["L_csa"] == 0.0 and torch.isfinite(torch.tensor(model.repmtl_stats["total"]))


def test_libmtl_flags_path_carries_every_option(capsys):
    """LibMTL's own parser and ``prepare_args`` (the path of its example scripts) hand every option on."""
    import libmtl_repmtl

    libmtl_repmtl.register()
    from libmtl_repmtl.libmtl.bases import LibMTL

    argv = ["--weighting", "RepMTL", "--arch", "RepHPS", "--RepMTL_csa_form", "infonce",
            "--RepMTL_saliency_loss", "raw", "--RepMTL_tsr_channel_mean", "abs", "--RepMTL_tau", "0.5"]
    params = LibMTL.config.LibMTL_args.parse_args(argv)
    kwargs, _, _ = LibMTL.config.prepare_args(params)
    assert RepMTLConfig.from_weight_args(kwargs["weight_args"]) == RepMTLConfig(
        tau=0.5, csa_form="infonce", saliency_loss="raw", tsr_channel_mean="abs")
    with pytest.raises(SystemExit):
        LibMTL.config.LibMTL_args.parse_args(["--weighting", "RepMTL", "--RepMTL_csa_form", "ntxent"])
    assert "invalid choice: 'ntxent'" in capsys.readouterr().err


def _plain(v):
    if v is None or isinstance(v, (bool, int, float, str)) or torch.is_tensor(v):
        return True
    if isinstance(v, (list, tuple)):
        return all(_plain(x) for x in v)
    return isinstance(v, dict) and all(_plain(x) for x in v.values())


def test_parse_cache_is_not_weighting_state():
    """A trainer that checkpoints the weighting's plain attributes and restores them into a fresh model (as
    resume does) must not restore a parse cache without its config: the fresh model parses again."""
    model, losses = _model_and_losses()
    weight_args = RepMTLConfig(tau=0.5, csa_form="infonce").to_weight_args()
    model.backward(losses(), **weight_args)
    module_attrs = set(torch.nn.Module().__dict__)
    state = {k: v for k, v in model.__dict__.items() if k not in module_attrs and _plain(v)}
    assert "_repmtl_step" in state
    assert not any(isinstance(v, dict) and "RepMTL_tau" in v for v in state.values())
    fresh, fresh_losses = _model_and_losses()
    for k, v in state.items():
        setattr(fresh, k, v)
    fresh.backward(fresh_losses(), **weight_args)
    assert fresh.repmtl_config == RepMTLConfig(tau=0.5, csa_form="infonce")
