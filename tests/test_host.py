"""The plugin host: entry-point discovery (a second, install-free test distribution), broken-plugin warnings,
clash refusal, idempotent registration, LibMTL.config flags and prepare_args, unknown names.

Everything that registers the test plugins runs in a fresh interpreter (entry points are process-wide)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from libmtl_repmtl.libmtl import flavour
from libmtl_repmtl.libmtl.bases import AbsWeighting

PLUGIN_DIST = Path(__file__).resolve().parent / "fixtures" / "plugin_dist"


def fresh(code: str, *, plugins: bool = True, autoload: str = "0", **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (the test distributions on sys.path when ``plugins``)."""
    path = [str(PLUGIN_DIST)] if plugins else []
    full = {**os.environ, "LIBMTL_REPMTL_AUTOLOAD": autoload,
            "PYTHONPATH": os.pathsep.join(path + [os.environ.get("PYTHONPATH", "")]), **env}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=full,
                          timeout=300)


def json_out(proc: subprocess.CompletedProcess[str]) -> dict:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-4000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("JSON"))
    return json.loads(line[4:])


_REGISTER = """
import json, warnings, io, contextlib
from libmtl_repmtl.libmtl import host
out = {"discovered": [[e.kind, e.name, e.value, e.distribution] for e in host.discover()]}
import libmtl_repmtl
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    out["first"] = libmtl_repmtl.register()
out["warnings"] = [(w.category.__name__, str(w.message)) for w in caught]
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    out["second"] = libmtl_repmtl.register()
    host.register()
out["warnings_again"] = [str(w.message) for w in caught]
import LibMTL
w = LibMTL.weighting
out["EW_is_builtin"] = w.EW.__module__ == "LibMTL.weighting.EW"
out["HalfEW_module"] = w.__dict__["HalfEW"].__module__ + ":" + w.HalfEW.__name__
out["all_count"] = w.__all__.count("HalfEW")
out["arch_has_TinyHPS"] = "TinyHPS" in LibMTL.architecture.__dict__ and "TinyHPS" in LibMTL.architecture.__all__
out["available"] = host.available()
out["plugins"] = [[p.kind, p.name, p.distribution] for p in host.plugins()]
opts = {o for a in LibMTL.config.LibMTL_args._actions for o in a.option_strings}
out["flags"] = sorted(o for o in opts if "_" in o and o[2:].split("_")[0] in ("HalfEW", "TinyHPS", "RepMTL"))
out["weighting_help"] = [a.help for a in LibMTL.config.LibMTL_args._actions if a.dest == "weighting"][0]
from LibMTL.config import LibMTL_args, prepare_args
def prep(argv):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        res = prepare_args(LibMTL_args.parse_args(argv))
    return res, buf.getvalue()
(kw, optim, sched), text = prep(["--weighting", "HalfEW", "--arch", "TinyHPS", "--HalfEW_scale", "0.25",
                                 "--TinyHPS_tag", "x", "--optim", "sgd", "--lr", "0.5"])
out["plugin_kwargs"], out["plugin_optim"], out["plugin_text"] = kw, optim, text
(kw, optim, sched), text = prep(["--weighting", "DWA", "--T", "3"])
out["builtin_kwargs"] = kw
(kw, optim, sched), text = prep(["--arch", "DIY"])
out["diy_kwargs"] = kw
for argv in (["--weighting", "Nope"], ["--arch", "NoArch"], ["--weighting", "HalfEW", "--arch", "NoArch"],
             ["--weighting", "PCGrad", "--arch", "NoArch2"], ["--optim", "nonsense"]):
    try:
        prep(argv)
        out["error " + argv[1]] = None
    except ValueError as exc:
        out["error " + argv[1]] = [type(exc).__name__, str(exc)]
try:
    host.lookup("weighting", "Nope")
except host.UnknownMethodError as exc:
    out["lookup_error"] = str(exc)
out["lookup_HalfEW"] = host.lookup("weighting", "HalfEW").__name__
import torch
from torch import nn
from LibMTL.loss import CELoss
from LibMTL.metrics import AccMetric
td = {t: {"metrics": ["Acc"], "metrics_fn": AccMetric(), "loss_fn": CELoss(), "weight": [1]} for t in "ab"}
with contextlib.redirect_stdout(io.StringIO()):
    tr = LibMTL.Trainer(td, ARG(LibMTL.weighting.HalfEW), ARG(LibMTL.architecture.TinyHPS), lambda: nn.Linear(4, 4),
                        nn.ModuleDict({t: nn.Linear(4, 3) for t in "ab"}), False, False,
                        {"optim": "sgd", "lr": 0.1}, None, weight_args={"HalfEW_scale": 0.25},
                        arch_args={"TinyHPS_tag": "x"})
    data = [(torch.randn(4, 4), {t: torch.randint(0, 3, (4,)) for t in "ab"})] * 2
    tr.train(data, data, 1, return_weight=True)  # the git version's train() drops the returned weights
out["trained_tag"], out["trained_w"] = tr.model.tag, tr.batch_weight.tolist()
print("JSON" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def registered(libmtl_flavour) -> dict:
    arg = "(lambda c: c.__name__)" if libmtl_flavour.trainer_takes_names else "(lambda c: c)"
    return json_out(fresh(f"ARG = {arg}\n" + _REGISTER))


def test_discovery_reads_every_distribution(registered: dict) -> None:
    found = {(k, n, d) for k, n, _, d in registered["discovered"]}
    assert ("weighting", "HalfEW", "libmtl-testplugin") in found
    assert ("architecture", "TinyHPS", "libmtl-testplugin") in found
    assert ("weighting", "Broken", "libmtl-testplugin-bad") in found
    assert ("weighting", "RepMTL", "libmtl_repmtl") in found or ("weighting", "RepMTL", "libmtl-repmtl") in found


def test_register_installs_good_plugins(registered: dict) -> None:
    assert "HalfEW" in registered["first"]["weighting"]
    assert "TinyHPS" in registered["first"]["architecture"]
    assert registered["HalfEW_module"] == "libmtl_testplugin:HalfEW"  # the first distribution's, not OtherHalfEW
    assert registered["arch_has_TinyHPS"]
    assert ["weighting", "HalfEW", "libmtl-testplugin"] in registered["plugins"]
    assert "HalfEW" in registered["available"]["weighting"] and "EW" in registered["available"]["weighting"]
    assert "TinyHPS" in registered["available"]["architecture"] and "HPS" in registered["available"]["architecture"]
    assert "AbsWeighting" not in registered["available"]["weighting"]


def test_broken_plugins_warn_and_are_skipped(registered: dict) -> None:
    messages = [m for cat, m in registered["warnings"] if cat == "PluginWarning"]
    broken = [m for m in messages if "'Broken'" in m]
    assert len(broken) == 1
    assert "libmtl-testplugin-bad" in broken[0] and "failed to load" in broken[0]
    assert "libmtl_testplugin_missing_module" in broken[0]
    not_class = [m for m in messages if "'NotAWeighting'" in m]
    assert len(not_class) == 1 and "not a subclass" in not_class[0]
    assert "Broken" not in registered["available"]["weighting"]
    assert "NotAWeighting" not in registered["available"]["weighting"]


def test_clashes_are_refused(registered: dict) -> None:
    messages = [m for _, m in registered["warnings"]]
    clash = [m for m in messages if "'EW'" in m]
    assert len(clash) == 1 and "built-in" in clash[0] and "libmtl-testplugin-bad" in clash[0]
    assert registered["EW_is_builtin"]
    dup = [m for m in messages if "'HalfEW'" in m]
    assert len(dup) == 1 and "already used" in dup[0] and "libmtl-testplugin'" in dup[0]


def test_register_is_idempotent(registered: dict) -> None:
    assert registered["second"] == registered["first"]
    assert registered["warnings_again"] == []
    assert registered["all_count"] == 1


def test_plugin_flags_on_libmtl_args(registered: dict) -> None:
    assert "--HalfEW_scale" in registered["flags"] and "--TinyHPS_tag" in registered["flags"]
    assert "HalfEW" in registered["weighting_help"] and "RepMTL" in registered["weighting_help"]


def test_prepare_args_with_plugins(registered: dict) -> None:
    assert registered["plugin_kwargs"] == {"weight_args": {"HalfEW_scale": 0.25}, "arch_args": {"TinyHPS_tag": "x"}}
    assert registered["plugin_optim"]["optim"] == "sgd" and registered["plugin_optim"]["lr"] == 0.5
    text = registered["plugin_text"]
    assert "HalfEW" in text and "TinyHPS" in text and "HalfEW_scale: 0.25" in text
    assert "EW\n" not in text.replace("HalfEW\n", "")  # the stand-in name is not shown


def test_prepare_args_builtins_unchanged(registered: dict) -> None:
    assert registered["builtin_kwargs"] == {"weight_args": {"T": 3.0}, "arch_args": {}}
    assert registered["diy_kwargs"] == {"weight_args": {}, "arch_args": {}}  # LibMTL's --arch DIY still accepted


def test_unknown_names_list_everything(registered: dict) -> None:
    kind, msg = registered["error Nope"]
    assert kind == "UnknownMethodError"
    for name in ("EW", "UW", "GradNorm", "MGDA", "DWA", "GLS", "GradDrop", "PCGrad", "GradVac", "IMTL", "CAGrad",
                 "RLW", "HalfEW", "RepMTL"):
        assert name in msg, name
    kind, msg = registered["error NoArch"]
    assert kind == "UnknownMethodError" and "HPS" in msg and "TinyHPS" in msg and "MTAN" in msg
    kind, msg = registered["error HalfEW"]  # plugin weighting, unknown architecture: the message names --arch
    assert kind == "UnknownMethodError" and msg.startswith("unknown architecture 'NoArch' (--arch)")
    kind, msg = registered["error PCGrad"]  # built-in weighting, unknown architecture
    assert kind == "UnknownMethodError" and msg.startswith("unknown architecture 'NoArch2' (--arch)")
    assert registered["error nonsense"][0] == "ValueError"  # LibMTL's own errors pass through
    assert "HalfEW" in registered["lookup_error"]
    assert registered["lookup_HalfEW"] == "HalfEW"


def test_strict_mode_raises() -> None:
    proc = fresh("""
        import libmtl_repmtl
        from libmtl_repmtl.libmtl.host import PluginError
        try:
            libmtl_repmtl.register(strict=True)
        except PluginError as exc:
            print("PluginError", exc)
    """)
    assert "PluginError" in proc.stdout and "libmtl-testplugin-bad" in proc.stdout, proc.stderr[-2000:]


def test_plugin_trains_through_libmtl_trainer(registered: dict) -> None:
    assert registered["trained_tag"] == "x"
    assert registered["trained_w"] == [[[0.25, 0.25]], [[0.25, 0.25]]]


def test_deferred_registration_when_imported_from_the_plugin_package() -> None:
    """``import libmtl_repmtl.libmtl.bases`` imports LibMTL while the package is mid-import (autoload on):
    the plugins are installed as soon as that import has finished."""
    out = json_out(fresh("""
        import json
        from libmtl_repmtl.libmtl.bases import AbsWeighting
        import LibMTL.weighting as w
        out = {"getattr": hasattr(w, "HalfEW"), "dict": "HalfEW" in w.__dict__}
        try:
            from libmtl_repmtl.libmtl.weighting import RepMTL
            out["RepMTL"] = w.RepMTL is RepMTL and w.__dict__["RepMTL"] is RepMTL
        except ImportError:
            out["RepMTL"] = "missing"
        print("JSON" + json.dumps(out))
    """, autoload="1"))
    assert out["getattr"] and out["dict"]
    assert out["RepMTL"] in (True, "missing")


def test_in_process_api_without_test_plugins() -> None:
    import libmtl_repmtl
    from libmtl_repmtl.libmtl import host

    first = libmtl_repmtl.register()
    assert libmtl_repmtl.register() == first
    names = host.available()
    assert {"EW", "CAGrad"} <= set(names["weighting"]) and {"HPS", "MTAN"} <= set(names["architecture"])
    assert host.available("weighting").keys() == {"weighting"}
    with pytest.raises(ValueError, match="unknown plugin kind"):
        host.available("optimizer")
    text = host.format_available()
    assert text.startswith("weightings:") and "architectures:" in text


# ------------------------------------------------------------------ every name the installed LibMTL accepts
_PROTOCOL_PROBE = """
import json, io, contextlib
import libmtl_repmtl
from libmtl_repmtl.libmtl import flavour, host
libmtl_repmtl.register()
from LibMTL.config import LibMTL_args, prepare_args
out = {"accepted": {k: flavour.accepted_names(k) for k in host.GROUPS}, "available": host.available(),
       "help": {a.dest: a.help for a in LibMTL_args._actions if a.dest in ("weighting", "arch")},
       "bilevel": list(host.bilevel_methods()), "takes_names": host.trainer_takes_names(), "errors": {}}
out["protocols"] = {n: [p.loss_samples, p.update_after_step, p.bilevel, p.has_class, p.model_weighting,
                        sorted(p.weight_args)]
                    for n in out["available"]["weighting"] for p in [host.protocol(n)]}
for name in out["available"]["weighting"]:
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            prepare_args(LibMTL_args.parse_args(["--weighting", name, "--arch", "Foo"]))
    except ValueError as exc:
        out["errors"][name] = [type(exc).__name__, str(exc)]
for kind, name in (("weighting", "Nope"), ("architecture", "DIY"), *[("weighting", b) for b in out["bilevel"]]):
    try:
        host.lookup(kind, name)
    except ValueError as exc:
        out["lookup " + name] = [type(exc).__name__, str(exc)]
print("JSON" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def protocols() -> dict:
    return json_out(fresh(_PROTOCOL_PROBE, plugins=False))


def test_every_accepted_name_is_available_and_in_the_help(protocols: dict) -> None:
    for kind, dest in (("weighting", "weighting"), ("architecture", "arch")):
        assert set(protocols["accepted"][kind]) <= set(protocols["available"][kind]), kind
        for name in protocols["available"][kind]:
            assert name in protocols["help"][dest], (kind, name)
    assert "DIY" in protocols["available"]["architecture"]  # both flavours' prepare_args accept --arch DIY
    assert not {"adam", "sgd", "weight_args", "T"} & set(protocols["available"]["weighting"])  # not method names


def test_the_wrong_argument_is_named(protocols: dict) -> None:
    """``--weighting X --arch Foo`` with every available weighting X: the error is about --arch."""
    assert set(protocols["errors"]) == set(protocols["available"]["weighting"])
    for name, (kind, msg) in protocols["errors"].items():
        assert kind == "UnknownMethodError" and msg.startswith("unknown architecture 'Foo' (--arch)"), name


def test_protocol_facts(protocols: dict) -> None:
    table = protocols["protocols"]
    assert table["EW"] == [1, None, False, True, "EW", []]
    assert table["RepMTL"][:4] == [1, None, False, True]
    if "MoDo" in table:  # the git version: several loss samples, update after the step
        assert table["MoDo"][0] == 3 and table["SDMGrad"][0] == 3
        assert table["FAMO"][1] == "update_w" and table["FAMO"][0] == 1
    for name in protocols["bilevel"]:
        samples, update, bilevel, has_class, model_weighting, args = table[name]
        assert bilevel and not has_class and model_weighting == "EW" and {"outer_lr", "inner_step"} <= set(args)
    assert all(not row[2] for n, row in table.items() if n not in protocols["bilevel"])


def test_names_without_a_class_are_refused_with_the_reason(protocols: dict) -> None:
    kind, msg = protocols["lookup Nope"]
    assert kind == "UnknownMethodError" and "(--weighting)" in msg and "EW" in msg
    kind, msg = protocols["lookup DIY"]
    assert kind == "NoClassError" and "your own class" in msg
    for name in protocols["bilevel"]:
        kind, msg = protocols["lookup " + name]
        assert kind == "NoClassError" and "bilevel" in msg and "outer_lr" in msg


def test_flavour_matches_the_trainer(protocols: dict, libmtl_flavour) -> None:
    assert protocols["takes_names"] is libmtl_flavour.trainer_takes_names
    assert tuple(protocols["bilevel"]) == libmtl_flavour.bilevel
    if libmtl_flavour.bilevel:
        assert libmtl_flavour.trainer_takes_names  # only the name-taking Trainer has bilevel methods


def test_loss_samples_probe_finds_what_backward_indexes() -> None:
    """A weighting whose backward reads rows 0..2 of ``losses`` (each a (T,) vector) needs 3 samples."""

    class ThreeRows(AbsWeighting):
        def backward(self, losses, **kwargs):
            sum(losses[i][0] + losses[i][1] for i in range(3)).backward()

    class OneRow(AbsWeighting):
        def backward(self, losses, **kwargs):
            assert losses.shape == (2,)
            (losses[0] + losses[1]).backward()

    class Broken(AbsWeighting):
        def backward(self, losses, **kwargs):
            raise RuntimeError("always\nsecond line")

    assert flavour._loss_samples(ThreeRows, {}) == (3, "")
    assert flavour._loss_samples(OneRow, {}) == (1, "")
    samples, note = flavour._loss_samples(Broken, {})
    assert samples == 1 and "RuntimeError: always" in note and "second line" not in note
    assert torch.is_grad_enabled()


def test_lookup_registers_when_nobody_did() -> None:
    """With the autoload hook off and no register() call, host.lookup still finds the plugins."""
    out = json_out(fresh("""
        import json
        from libmtl_repmtl.libmtl import compat, host
        LibMTL = compat.ensure_libmtl()  # autoload off: patched, but nothing registered yet
        before = hasattr(LibMTL.weighting, "HalfEW")
        cls = host.lookup("weighting", "HalfEW")
        print("JSON" + json.dumps({"before": before, "cls": cls.__name__, "proto": host.protocol("HalfEW").name,
                                   "registered": host.registered_names()["weighting"]}))
    """))
    assert out["before"] is False and out["cls"] == "HalfEW" and out["proto"] == "HalfEW"
    assert "HalfEW" in out["registered"]
