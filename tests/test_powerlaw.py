"""The power-law (ESD alpha) estimator on samples and matrices with known spectra."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from libmtl_repmtl.analysis.powerlaw import alpha_report, esd, fit_power_law, layer_alpha, main, module_group


def pareto(alpha: float, n: int, xmin: float, rng: np.random.Generator) -> np.ndarray:
    """Samples with density ``~ x^(-alpha)`` for ``x >= xmin``."""
    return xmin * (1.0 - rng.random(n)) ** (-1.0 / (alpha - 1.0))


@pytest.mark.parametrize("alpha", [2.0, 2.5, 3.0, 4.0])
def test_recovers_pareto_exponent(alpha: float) -> None:
    rng = np.random.default_rng(int(alpha * 10))
    fit = fit_power_law(pareto(alpha, 3000, 0.5, rng))
    assert abs(fit.alpha - alpha) < 0.15 * alpha
    assert fit.n_tail >= 300


def test_finds_the_tail_above_a_non_power_law_body() -> None:
    rng = np.random.default_rng(1)
    body = rng.uniform(0.1, 1.0, 3000)
    tail = pareto(2.5, 1000, 2.0, rng)
    fit = fit_power_law(np.r_[body, tail])
    assert abs(fit.alpha - 2.5) < 0.3
    assert fit.xmin >= 1.0


def test_matrix_with_prescribed_singular_values() -> None:
    rng = np.random.default_rng(2)
    rows, cols, alpha = 600, 400, 3.0
    evals = pareto(alpha, cols, 1.0, rng)  # eigenvalues of W^T W / N
    u, _ = np.linalg.qr(rng.normal(size=(rows, cols)))
    v, _ = np.linalg.qr(rng.normal(size=(cols, cols)))
    w = u @ np.diag(np.sqrt(evals * rows)) @ v.T
    np.testing.assert_allclose(np.sort(esd(w)), np.sort(evals), rtol=1e-8)
    assert abs(layer_alpha(w).alpha - alpha) < 0.4


def test_marchenko_pastur_matrix_has_no_heavy_tail() -> None:
    rng = np.random.default_rng(3)
    fit = layer_alpha(rng.normal(size=(1000, 500)))
    assert fit.alpha > 5.0


def test_degenerate_inputs_give_nan_not_errors() -> None:
    assert math.isnan(fit_power_law([1.0, 2.0]).alpha)
    assert math.isnan(fit_power_law([]).alpha)
    assert math.isnan(fit_power_law(np.ones(50)).alpha)  # one distinct value: no tail to fit
    with pytest.raises(ValueError):
        esd(np.ones(5))


def test_conv_weights_are_reshaped() -> None:
    w = torch.randn(8, 3, 3, 3)
    assert esd(w).shape == (8,)


def test_groups_and_command(tmp_path, capsys) -> None:
    assert module_group("encoder.net.0.weight") == "encoder"
    assert module_group("model.decoders.left.fc.weight") == "decoder:left"
    torch.manual_seed(0)
    model = nn.Module()
    model.encoder = nn.Sequential(nn.Conv2d(3, 32, 3), nn.Linear(64, 64))
    model.decoders = nn.ModuleDict({"a": nn.Linear(64, 40), "b": nn.Linear(64, 40)})
    report = alpha_report(model)
    assert set(report["groups"]) == {"encoder", "decoder:a", "decoder:b"}
    assert report["groups"]["encoder"]["n_layers"] == 2
    path = tmp_path / "ckpt.pt"
    torch.save({"model": model.state_dict(), "epoch": 3}, path)
    assert main([str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["groups"]["decoder:a"]["mean_alpha"] == pytest.approx(report["groups"]["decoder:a"]["mean_alpha"])
    assert main([str(path)]) == 0
    assert "decoder:b" in capsys.readouterr().out
    assert main([str(tmp_path / "missing.pt")]) == 2
