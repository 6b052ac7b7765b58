"""``libmtl-repmtl run`` / ``list`` and the CLI dispatcher."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from libmtl_repmtl import cli
from libmtl_repmtl.libmtl import host, runner

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "plugin_dist"

_SHOW = """
import json, os, sys
json.dump({"argv": sys.argv, "path0": sys.path[0], "cwd": os.getcwd(), "name": __name__},
          open(os.environ["RUNNER_OUT"], "w"))
"""


def _script(tmp_path: Path, body: str = _SHOW, name: str = "show.py") -> Path:
    folder = tmp_path / "scripts"
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(body)
    return path


def test_run_script_like_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = _script(tmp_path)
    out = tmp_path / "out.json"
    monkeypatch.setenv("RUNNER_OUT", str(out))
    monkeypatch.chdir(tmp_path)
    argv, path = sys.argv[:], sys.path[:]
    assert cli.main(["run", str(script), "--weighting", "EW", "-h", "x y"]) == 0
    got = json.loads(out.read_text())
    assert got["argv"] == [str(script), "--weighting", "EW", "-h", "x y"]
    assert got["path0"] == str(script.parent)
    assert got["cwd"] == str(tmp_path)  # unchanged, as with `python SCRIPT.py`
    assert got["name"] == "__main__"
    assert sys.argv == argv and sys.path == path and os.getcwd() == str(tmp_path)  # restored


def test_run_chdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = _script(tmp_path)
    out = tmp_path / "out.json"
    monkeypatch.setenv("RUNNER_OUT", str(out))
    monkeypatch.chdir(tmp_path)
    assert runner.main(["--chdir", str(script), "a"]) == 0
    got = json.loads(out.read_text())
    assert got["cwd"] == str(script.parent) and got["argv"] == [str(script), "a"]
    assert os.getcwd() == str(tmp_path)


def test_run_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert runner.run_script(_script(tmp_path, "import sys; sys.exit(3)\n", "three.py")) == 3
    assert runner.run_script(_script(tmp_path, "import sys; sys.exit('bad input')\n", "msg.py")) == 1
    assert "bad input" in capsys.readouterr().err
    with pytest.raises(RuntimeError, match="boom"):
        runner.run_script(_script(tmp_path, "raise RuntimeError('boom')\n", "boom.py"))
    assert runner.main([str(tmp_path / "missing.py")]) == 2
    assert "no such script" in capsys.readouterr().err


def test_run_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "runner_mod_fixture.py").write_text(_SHOW)
    out = tmp_path / "out.json"
    monkeypatch.setenv("RUNNER_OUT", str(out))
    monkeypatch.chdir(tmp_path)
    assert runner.main(["-m", "runner_mod_fixture", "--x", "1"]) == 0
    got = json.loads(out.read_text())
    assert got["argv"][1:] == ["--x", "1"] and got["name"] == "__main__"
    sys.modules.pop("runner_mod_fixture", None)


def test_run_libmtl_script_without_autoload(tmp_path: Path) -> None:
    """The runner registers by itself: a LibMTL-style script with a plugin weighting and its flag."""
    out = tmp_path / "train.json"
    env = {**os.environ, "LIBMTL_REPMTL_AUTOLOAD": "0",
           "PYTHONPATH": os.pathsep.join([str(FIXTURES), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "libmtl_repmtl.cli", "run", str(FIXTURES / "example_train.py"),
                           "--weighting", "HalfEW", "--arch", "TinyHPS", "--HalfEW_scale", "0.25", "--epochs", "1",
                           "--lr", "0.01", "--out", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(out.read_text())
    assert got["weight_args"] == {"HalfEW_scale": 0.25} and got["arch_args"] == {"TinyHPS_tag": "tiny"}
    assert got["changed"] and got["device"] in {"cpu", "cuda:0"}
    assert "Wighting: HalfEW" in proc.stdout


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["list"]) == 0
    text = capsys.readouterr().out
    assert "weightings:" in text and "  EW" in text and "architectures:" in text and "  HPS" in text
    names = host.available()
    for kind in ("weighting", "architecture"):  # every name the installed LibMTL accepts (DIY, MOML, ...)
        for name in names[kind]:
            assert f"\n  {name}" in text, (kind, name)
    assert "  DIY  [no class: stands for your own]" in text
    for name in host.bilevel_methods():
        assert f"  {name}  [bilevel: run by LibMTL's Trainer]" in text
    assert cli.main(["list", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert "CAGrad" in data["available"]["weighting"]
    assert all({"kind", "name", "entry_point", "distribution"} <= set(p) for p in data["plugins"])


def test_dispatcher(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "usage: libmtl-repmtl COMMAND" in capsys.readouterr().out
    assert cli.main(["--help"]) == 0
    text = capsys.readouterr().out
    assert all(c in text for c in cli.COMMANDS)
    assert cli.main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err
    assert cli.main(["--version"]) == 0
    for target, _ in cli.COMMANDS.values():
        module, func = target.split(":")
        assert module.startswith("libmtl_repmtl.") and func.isidentifier()


def test_cli_import_is_lazy() -> None:
    proc = subprocess.run([sys.executable, "-c", "import libmtl_repmtl, libmtl_repmtl.cli, sys; "
                           "print(any(m.startswith(('torch', 'LibMTL')) for m in sys.modules))"],
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "False", proc.stderr
