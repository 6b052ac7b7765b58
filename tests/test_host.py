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
(kw, optim, sched), text = prep(["--weighting", "DIY"])
out["diy_kwargs"] = kw
for argv in (["--weighting", "Nope"], ["--arch", "NoArch"], ["--weighting", "HalfEW", "--arch", "NoArch"],
             ["--optim", "nonsense"]):
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
    tr = LibMTL.Trainer(td, LibMTL.weighting.HalfEW, LibMTL.architecture.TinyHPS, lambda: nn.Linear(4, 4),
                        nn.ModuleDict({t: nn.Linear(4, 3) for t in "ab"}), False, False,
                        {"optim": "sgd", "lr": 0.1}, None, weight_args={"HalfEW_scale": 0.25},
                        arch_args={"TinyHPS_tag": "x"})
    data = [(torch.randn(4, 4), {t: torch.randint(0, 3, (4,)) for t in "ab"})] * 2
    w = tr.train(data, data, 1, return_weight=True)
out["trained_tag"], out["trained_w"] = tr.model.tag, w.tolist()
print("JSON" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def registered() -> dict:
    return json_out(fresh(_REGISTER))


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
    assert registered["diy_kwargs"] == {"weight_args": {}, "arch_args": {}}  # LibMTL's DIY still accepted


def test_unknown_names_list_everything(registered: dict) -> None:
    kind, msg = registered["error Nope"]
    assert kind == "UnknownMethodError"
    for name in ("EW", "UW", "GradNorm", "MGDA", "DWA", "GLS", "GradDrop", "PCGrad", "GradVac", "IMTL", "CAGrad",
                 "RLW", "HalfEW", "RepMTL"):
        assert name in msg, name
    kind, msg = registered["error NoArch"]
    assert kind == "UnknownMethodError" and "HPS" in msg and "TinyHPS" in msg and "MTAN" in msg
    assert registered["error HalfEW"][0] == "UnknownMethodError"  # plugin weighting, unknown architecture
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
