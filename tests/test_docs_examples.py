"""Documentation examples are executed as tests."""

from __future__ import annotations

import doctest
import importlib
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

MODULES = ["libmtl_repmtl.core"]


@pytest.mark.parametrize("name", MODULES)
def test_module_doctests(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no doctest"
    assert result.failed == 0


_README = Path(__file__).resolve().parents[1] / "README.md"

_TRAIN_WITH_README_CHOICE = textwrap.dedent("""
    import json, torch
    from torch import nn
    from LibMTL.loss import CELoss
    from LibMTL.metrics import AccMetric
    td = {t: {"metrics": ["Acc"], "metrics_fn": AccMetric(), "loss_fn": CELoss(), "weight": [1]} for t in "ab"}
    trainer = Trainer(td, weighting=weighting, architecture=architecture, encoder_class=lambda: nn.Linear(4, 4),
                      decoders=nn.ModuleDict({t: nn.Linear(4, 3) for t in "ab"}), rep_grad=False, multi_input=False,
                      optim_param={"optim": "sgd", "lr": 0.1}, scheduler_param=None,
                      weight_args={"RepMTL_lambda_tsr": 0.9, "RepMTL_lambda_csa": 0.9}, arch_args={})
    before = [p.detach().clone() for p in trainer.model.parameters()]
    data = [(torch.randn(4, 4), {t: torch.randint(0, 3, (4,)) for t in "ab"})] * 2
    trainer.train(data, data, 1)
    changed = any(not torch.equal(b, p) for b, p in zip(before, trainer.model.parameters()))
    print("JSON" + json.dumps({"weighting": str(weighting), "changed": changed}))
""")


def _readme_python_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", _README.read_text(), flags=re.S)
    block = next(b for b in blocks if "trainer_takes_names" in b)
    return block.split("trainer = Trainer(")[0]  # the lines that choose what the Trainer takes


def test_readme_python_example_works_on_the_installed_libmtl(libmtl_flavour) -> None:
    """README's Python example picks names or classes by behaviour; a Trainer built that way trains."""
    proc = subprocess.run([sys.executable, "-c", _readme_python_example() + _TRAIN_WITH_README_CHOICE],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("JSON"))[4:])
    assert out["changed"]
    assert (out["weighting"] == "RepMTL") is libmtl_flavour.trainer_takes_names
    assert "RepMTL" in out["weighting"]
