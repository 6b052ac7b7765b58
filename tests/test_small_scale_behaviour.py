"""Why RepMTL's defaults stall on the small CPU benchmarks (docs/method.md, "Behaviour on small CPU benchmarks").

Two properties of the spec's formulas explain it, checked here on the formulas themselves, plus smoke tests
of the two diagnostic scripts (``benchmarks/diagnose_learning.py``, ``benchmarks/sweep_repmtl_cpu.py``) on
tiny fake data:

* TSR and CSA are invariant to the scale of the saliencies, so their gradients w.r.t. the saliencies grow as
  ``1 / scale``: near chance level (small, uninformative saliencies) they do not shrink with the task signal.
* TSR's infimum 0 is reached when one task's channel-mean saliency vanishes: "one task switched off" is
  a minimiser, whatever the task losses.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from libmtl_repmtl.core import csa_loss, tsr_loss

ROOT = Path(__file__).resolve().parents[1]


def _saliencies(seed: int, t: int = 2, shape: tuple[int, ...] = (4, 5, 3, 3)) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g, dtype=torch.float64) for _ in range(t)]


@pytest.mark.parametrize("term", ["tsr", "csa"])
@pytest.mark.parametrize("scale", [1e-6, 1e-3, 10.0])
def test_regulariser_gradient_w_r_t_saliency_is_homogeneous_of_degree_minus_one(term, scale):
    loss = tsr_loss if term == "tsr" else (lambda s: csa_loss(s, tau=0.1))
    base = [s.requires_grad_() for s in _saliencies(0)]
    g1 = torch.autograd.grad(loss(base), base)
    scaled = [(scale * s.detach()).requires_grad_() for s in base]
    value = loss(scaled)
    g2 = torch.autograd.grad(value, scaled)
    assert float(value.detach()) == pytest.approx(float(loss([s.detach() for s in base])), rel=1e-10)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(b * scale, a, rtol=1e-9, atol=1e-12)


def test_tsr_tends_to_zero_when_one_task_saliency_vanishes():
    s1, s2 = _saliencies(1)
    full = float(tsr_loss([s1, s2]))
    assert full > 0.3  # two comparable tasks: entropy well above 0 (max log 2 = 0.69)
    values = [float(tsr_loss([s1, eps * s2])) for eps in (1e-1, 1e-2, 1e-4, 1e-8)]
    assert all(a > b for a, b in zip(values, values[1:]))
    assert values[-1] < 1e-6
    # the same with the task's channel mean switched off but its saliency kept (channels cancelling)
    cancelled = s2 - s2.mean(dim=1, keepdim=True)
    assert float(tsr_loss([s1, cancelled])) == pytest.approx(0.0, abs=1e-12)
    assert float(cancelled.norm()) > 1.0


@pytest.fixture
def scripts(tiny_digits, monkeypatch):
    """The benchmark scripts importable, on the tiny digits of tests/conftest.py."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    yield
    for name in ("diagnose_learning", "sweep_repmtl_cpu"):
        sys.modules.pop(name, None)


def test_diagnose_learning_parts_add_up_to_the_training_gradient(scripts, tmp_path, capsys):
    import diagnose_learning

    out = tmp_path / "diag.json"
    results = diagnose_learning.main([
        "--settings", "default", "EW:tsr=0,csa=0", "whatif:csa=0,floor=0.05,warm=2,headreg=0", "--steps", "3",
        "--log-every", "1", "--n-train", "64", "--n-val", "32", "--batch-size", "16", "--threads", "1",
        "--json", str(out)])
    assert [r["name"] for r in results] == ["default", "EW", "whatif"]
    for r in results:
        assert len(r["log"]) == 3
        for rec in r["log"]:
            assert rec["parts_sum_rel_err"] < 1e-4
            assert set(rec["enc"]) == {"task", "tsr", "csa"} and len(rec["sal_norms"]) == 2
            assert 0.0 <= rec["tsr_grad_share_low10"] <= 1.0
    ew = results[1]["log"][-1]
    assert ew["enc"]["tsr"] == ew["enc"]["csa"] == ew["heads"]["tsr"] == ew["heads"]["csa"] == 0.0
    default = results[0]["log"][0]
    assert default["heads"]["tsr"] > 0 and default["heads"]["csa"] > 0
    assert json.loads(out.read_text())["results"][0]["name"] == "default"
    assert "| default |" in capsys.readouterr().out


def test_sweep_runs_and_resumes(scripts, tmp_path, capsys):
    import sweep_repmtl_cpu

    argv = ["--settings", "lam0.1:tsr=0.1,csa=0.1", "--benchmarks", "multimnist", "--seeds", "0",
            "--epochs", "1", "--out", str(tmp_path), "--option", "n_train=64", "n_val=32", "n_test=32",
            "batch_size=16"]
    assert sweep_repmtl_cpu.main(argv) == 0
    res = json.loads((tmp_path / "multimnist" / "lam0.1" / "seed0" / "results.json").read_text())
    assert res["complete"] and res["config"]["weight_args"]["RepMTL_lambda_tsr"] == 0.1
    table = (tmp_path / "sweep.md").read_text()
    assert "| lam0.1 | lambda_tsr=0.1, lambda_csa=0.1 | multimnist |" in table
    capsys.readouterr()
    assert sweep_repmtl_cpu.main(argv) == 0  # second call: read back, not retrained
    assert "lam0.1 multimnist seed 0" in capsys.readouterr().out


def test_diagnose_checks_runner_wiring_and_precision(scripts):
    import diagnose_learning

    out = diagnose_learning.checks(seed=0, batch_size=16)
    assert out["wiring_max_rel_diff"] < 1e-6
    assert set(out["fp32_vs_fp64"]) == {"default", "tsr_only", "csa_only"}
    assert all(v < 1e-3 for v in out["fp32_vs_fp64"].values())
