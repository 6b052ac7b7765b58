"""LibMTL's own example flags keep their meaning in our examples (the list in ``shared/spec/benchmarks.md``),
and an example run by a Python without the project's dependencies fails with one clear line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from libmtl_repmtl import launch
from libmtl_repmtl.benchmarks import BenchmarkSetupError, get
from libmtl_repmtl.data.synthetic import generate
from libmtl_repmtl.libmtl import host
from libmtl_repmtl.libmtl.bases import LibMTL
from libmtl_repmtl.training import example_cli
from libmtl_repmtl.training.experiment import weight_args_for

ROOT = Path(__file__).resolve().parents[1]
#: The shared spec: beside the checkout (CI, /work/main) or inside it.
SPEC = next((p for p in (ROOT.parent / "shared" / "spec" / "benchmarks.md",
                         ROOT / "shared" / "spec" / "benchmarks.md")
             if p.exists()), ROOT.parent / "shared" / "spec" / "benchmarks.md")

#: LibMTL's example flags, from the spec's section "LibMTL's own example flags" (checked against it below).
LIBMTL_EXAMPLE_FLAGS = {
    "office": ["--dataset", "--bs", "--epochs", "--dataset_path", "--multi_input"],
    "nyuv2": ["--aug", "--train_bs", "--test_bs", "--epochs", "--dataset_path"],
    "cityscapes": ["--train_mode", "--train_bs", "--test_bs", "--epochs", "--dataset_path"],
}
#: The LibMTL_args flags the spec names for every example.
LIBMTL_ARGS = ["--weighting", "--arch", "--rep_grad", "--multi_input", "--seed", "--gpu_id", "--mode", "--save_path",
               "--load_path", "--lr", "--weight_decay", "--optim", "--scheduler"]
#: Flags of the spec's list not built yet, with the reason (the test fails once they exist: then drop them here).
NOT_YET: dict[tuple[str, str], str] = {}


def _options(family: str) -> set[str]:
    parser = example_cli.build_parser(family, ["--dataset_path", "/d", "--save_path", "/s"])
    return {opt for action in parser._actions for opt in action.option_strings}


@pytest.mark.skipif(not SPEC.exists(), reason="the shared spec is not beside this checkout")
def test_flag_list_is_the_specs() -> None:
    section = SPEC.read_text().split("## LibMTL's own example flags", 1)[1]
    for family, spec_name in (("office", "office"), ("nyuv2", "nyu"), ("cityscapes", "cityscapes")):
        line = next(ln for ln in section.splitlines() if ln.startswith(f"{spec_name}/main.py:"))
        assert re.findall(r"--\w+", line) == LIBMTL_EXAMPLE_FLAGS[family], family
    listed = re.findall(r"--\w+", section.split("Plus LibMTL_args", 1)[1])
    assert LIBMTL_ARGS == listed[:len(LIBMTL_ARGS)]


def _libmtl_args_options() -> set[str]:
    return {opt for action in LibMTL.config.LibMTL_args._actions for opt in action.option_strings}


@pytest.mark.parametrize("family", sorted(LIBMTL_EXAMPLE_FLAGS))
def test_every_libmtl_example_flag_is_accepted(family: str) -> None:
    options = _options(family)
    assert _libmtl_args_options() <= options  # every flag of the installed LibMTL's LibMTL_args
    installed = [f for f in LIBMTL_ARGS if f in _libmtl_args_options() or f == "--save_path"]  # 1.1.5: no --mode
    for flag in LIBMTL_EXAMPLE_FLAGS[family] + installed:
        if (family, flag) in NOT_YET:
            assert flag not in options, f"{flag} exists now: remove it from NOT_YET and test its meaning"
            continue
        assert flag in options, (family, flag)


def _office(argv: list[str]):
    params = example_cli.build_parser("office", argv).parse_args(argv)
    return example_cli.options_from_args("office", params)


def test_office_bs_sets_every_split() -> None:
    base = ["--multi_input", "--dataset_path", "/d", "--save_path", "/s"]
    _, opts = _office(base + ["--bs", "4"])
    assert opts["train_bs"] == 4 and opts["test_bs"] == 4
    _, opts = _office(base)  # without --bs: the paper's batch size (LibMTL's default 64 too)
    assert opts["train_bs"] == 64 and opts["test_bs"] == 64
    _, opts = _office(base + ["--bs", "4", "--train_bs", "4"])  # agreeing flags are fine
    assert opts["train_bs"] == 4
    with pytest.raises(ValueError, match="--bs 4 and --train_bs 8 disagree"):
        _office(base + ["--bs", "4", "--train_bs", "8"])
    with pytest.raises(ValueError, match="positive"):
        _office(base + ["--bs", "0"])


@pytest.mark.parametrize("flags, message", [(["--mode", "test"], "only train"), (["--load_path", "x"], "--resume")])
def test_libmtl_flags_without_our_meaning_are_refused(flags: list[str], message: str) -> None:
    """The git version's --mode test / --load_path: refused with the reason, never silently ignored."""
    if flags[0] not in _libmtl_args_options():
        pytest.skip(f"this LibMTL has no {flags[0]}")
    with pytest.raises(ValueError, match=message):
        _office(["--multi_input", "--dataset_path", "/d", "--save_path", "/s", *flags])


def _parsed(family: str, argv: list[str]):
    base = ["--dataset_path", "/d", "--save_path", "/s"] + (["--multi_input"] if family == "office" else [])
    return example_cli.build_parser(family, base + argv).parse_args(base + argv)


@pytest.mark.parametrize("family", sorted(LIBMTL_EXAMPLE_FLAGS))
def test_libmtl_args_reach_the_run_with_libmtl_meaning(family: str, monkeypatch: pytest.MonkeyPatch) -> None:
    params = _parsed(family, ["--weighting", "DWA", "--arch", "HPS", "--rep_grad", "--seed", "7", "--optim", "sgd",
                              "--lr", "0.01", "--weight_decay", "0.001", "--momentum", "0.8", "--scheduler", "step",
                              "--step_size", "10", "--gamma", "0.3", "--T", "3.5", "--gpu_id", "1"])
    _, opts = example_cli.options_from_args(family, params)
    assert (opts["seed"], opts["optim"], opts["lr"], opts["weight_decay"], opts["momentum"]) == (7, "sgd", 0.01,
                                                                                                 0.001, 0.8)
    assert (opts["scheduler"], opts["step_size"], opts["gamma"], opts["rep_grad"]) == ("step", 10, 0.3, True)
    assert weight_args_for(LibMTL.weighting.DWA, opts["params"])["T"] == 3.5  # a weighting's own flag
    # --gpu_id N is cuda:N when the device is auto and CUDA is there; the CPU otherwise (auto resolves it)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert example_cli.options_from_args(family, params)[1]["device"] == "cuda:1"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert example_cli.options_from_args(family, params)[1]["device"] == "auto"
    explicit = _parsed(family, ["--gpu_id", "1", "--device", "cpu"])
    assert example_cli.options_from_args(family, explicit)[1]["device"] == "cpu"  # an explicit device wins


@pytest.mark.skipif(not SPEC.exists(), reason="the shared spec is not beside this checkout")
@pytest.mark.parametrize("family, spec_name", [("office", "office"), ("nyuv2", "nyu"), ("cityscapes", "cityscapes")])
def test_defaults_are_the_specs(family: str, spec_name: str) -> None:
    """Each default the spec gives in parentheses (``--train_bs (8)``, ``--bs (batch size, 64)``) is ours."""
    section = SPEC.read_text().split("## LibMTL's own example flags", 1)[1]
    line = next(ln for ln in section.splitlines() if ln.startswith(f"{spec_name}/main.py:"))
    defaults = {flag: int(value) for flag, value in re.findall(r"(--\w+) \((?:[^)]*?, )?(\d+)\)", line)}
    assert defaults, line
    _, opts = example_cli.options_from_args(family, _parsed(family, []))
    ours = {"--epochs": opts["epochs"], "--train_bs": opts["train_bs"], "--test_bs": opts["test_bs"]}
    if family == "office":
        ours["--bs"] = opts["train_bs"] if opts["train_bs"] == opts["test_bs"] else None
    assert {flag: ours[flag] for flag in defaults} == defaults


def test_repmtl_flags_with_another_weighting_are_refused() -> None:
    """``--RepMTL_tau 0.5`` with EW: nothing would read it, so it is an error naming the flag; with RepMTL (and with
    EW when the flags stay at their defaults) the run's options are built."""
    with pytest.raises(ValueError, match=r"--RepMTL_tau: Rep-MTL's settings, but --weighting EW does not read them"):
        example_cli.options_from_args("nyuv2", _parsed("nyuv2", ["--weighting", "EW", "--RepMTL_tau", "0.5"]))
    _, opts = example_cli.options_from_args("nyuv2", _parsed("nyuv2", ["--weighting", "RepMTL", "--RepMTL_tau",
                                                                       "0.5", "--arch", "RepHPS"]))
    assert weight_args_for(LibMTL.weighting.RepMTL, opts["params"])["RepMTL_tau"] == 0.5
    example_cli.options_from_args("nyuv2", _parsed("nyuv2", ["--weighting", "EW"]))


def test_every_wrong_method_argument_is_named_at_once(capsys, tmp_path: Path) -> None:
    """A wrong --weighting and a wrong --arch: one error that names both flags (exit status 2, nothing written);
    a bilevel --weighting of the installed LibMTL (the git version's MOML) with a wrong --arch likewise."""
    weightings = ["Nope", *sorted(host.bilevel_methods())[:1]]
    for weighting in weightings:
        argv = ["--weighting", weighting, "--arch", "Foo", "--dataset_path", str(tmp_path / "d"),
                "--save_path", str(tmp_path / "s")]
        assert example_cli.main("nyuv2", argv) == 2
        err = capsys.readouterr().err
        assert f"'{weighting}' (--weighting)" in err and "unknown architecture 'Foo' (--arch)" in err, err
    assert not (tmp_path / "s").exists()
    assert example_cli.main("nyuv2", ["--weighting", "EW", "--arch", "Foo", "--dataset_path", str(tmp_path / "d"),
                                      "--save_path", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "(--arch)" in err and "(--weighting)" not in err  # only the wrong one is named


def test_cityscapes_train_mode_flag() -> None:
    argv = ["--dataset_path", "/d", "--save_path", "/s"]
    for extra, mode in (([], "train"), (["--train_mode", "trainval"], "trainval")):
        params = example_cli.build_parser("cityscapes", argv + extra).parse_args(argv + extra)
        _, opts = example_cli.options_from_args("cityscapes", params)
        assert opts["train_mode"] == mode
    with pytest.raises(SystemExit):
        example_cli.build_parser("cityscapes", argv).parse_args(argv + ["--train_mode", "val"])


def test_cityscapes_trainval_trains_on_train_and_val(tmp_path: Path) -> None:
    root = generate("cityscapes", tmp_path / "cs", size=6, test_size=3)
    spec = get("cityscapes")
    opts = {"dataset_path": str(root), "train_bs": 2, "test_bs": 2, "seed": 0, "num_workers": 0, "aug": False}
    train = spec.dataloaders(spec.tasks, {**opts, "train_mode": "train"})
    trainval = spec.dataloaders(spec.tasks, {**opts, "train_mode": "trainval"})
    assert len(train["train"].dataset) == 6 and len(trainval["train"].dataset) == 9  # train/ + val/
    assert len(trainval["test"].dataset) == 3 and len(trainval["train"]) == 4  # 9 items, batches of 2, last dropped
    x, y = next(iter(trainval["train"]))
    assert set(y) == set(spec.tasks) and x.shape[0] == 2
    single = spec.dataloaders(["depth"], {**opts, "train_mode": "trainval"})  # single-task runs keep their labels
    assert set(next(iter(single["train"]))[1]) == {"depth"} and len(single["train"].dataset) == 9
    with pytest.raises(BenchmarkSetupError, match="--train_mode 'val'"):
        spec.dataloaders(spec.tasks, {**opts, "train_mode": "val"})


def test_missing_environment_is_one_clear_line(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(launch, "missing_requirements", lambda: ["torch", "LibMTL"])
    assert launch.run_example("nyuv2", "examples/nyuv2/main.py", ["--help"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has no torch, LibMTL" in err
    assert ".venv/bin/python examples/nyuv2/main.py" in err and ". .venv/bin/activate" in err
    monkeypatch.undo()
    assert launch.missing_requirements() == []  # this interpreter (the project's environment) has everything


@pytest.mark.parametrize("family", ["nyuv2", "cityscapes", "office"])
def test_example_outside_the_environment_fails_with_one_line(family: str) -> None:
    """``python -S`` hides site-packages (torch, LibMTL), as a bare system Python would not have them."""
    script = f"examples/{family}/main.py"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LIBMTL_REPMTL_AUTOLOAD": "0"}
    proc = subprocess.run([sys.executable, "-S", script, "--help"], cwd=ROOT, capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == "" and proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr and f".venv/bin/python {script}" in proc.stderr


def test_readme_says_where_the_commands_run() -> None:
    """The README tells a new user that its commands run inside ``.venv`` (through ``.venv/bin/`` or after
    activating it), the rule the one-line error of an example outside the environment gives."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rule = " ".join(readme.split("Every command in this README runs inside that environment", 1)[1].split()[:30])
    assert ".venv/bin/libmtl-repmtl" in rule and ".venv/bin/python examples/" in rule and ". .venv/bin/activate" in rule
    message = launch.environment_message("x.py", ["torch"])  # the same rule
    assert ".venv/bin/python x.py" in message and ". .venv/bin/activate" in message
    assert "bash scripts/setup.sh" in readme and "bash scripts/setup.sh" in message
