"""The RepMTL weighting's parameter gradients equal plain autograd on the spec's formulas (float64).

The reference (:mod:`libmtl_repmtl.core.reference`) materialises every C x C matrix, loops over positions
and takes one saliency pass per task; the implementation under test uses LibMTL's composition
``class MTLmodel(Architecture, Weighting)``, one saliency pass, Frobenius shortcuts and one encoder backward.
Every value of every option (``csa_form``, ``saliency_loss``, ``tsr_channel_mean``, ``log_loss``) and their
combinations are covered.

Device: the environment variable ``LIBMTL_REPMTL_TEST_DEVICE`` (default ``cpu``; e.g. ``cuda`` or ``cuda:1``)
chooses where the models and both computations run; the tests skip, saying why, when that device is not
available (a name torch does not know fails).
"""

from __future__ import annotations

import itertools
import os

import pytest
import torch

from libmtl_repmtl.core import RepMTLConfig
from libmtl_repmtl.core.config import CHOICES
from libmtl_repmtl.core.reference import naive_objective
from libmtl_repmtl.libmtl.architecture import RepHPS
from libmtl_repmtl.libmtl.weighting import RepMTL
from tests._models import HPS, build_model, forward_losses, make_batch, task_loss

TASKS = ["a", "b", "c"]

#: The environment variable that chooses the device of these tests.
DEVICE_ENV = "LIBMTL_REPMTL_TEST_DEVICE"

# (architecture, rep_grad): LibMTL's HPS with --rep_grad, LibMTL's HPS without it, the RepHPS plugin.
ARCHS = [(HPS, True), (HPS, False), (RepHPS, False), (RepHPS, True)]

#: Every combination of the options with named values.
OPTION_GRID = [dict(zip(CHOICES, values)) for values in itertools.product(*CHOICES.values())]


def _device_unavailable(device: torch.device) -> str | None:
    """Why float64 tests cannot run on ``device`` (None: they can)."""
    if device.type == "cpu":
        return None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return "torch sees no CUDA device"
        if device.index is not None and device.index >= torch.cuda.device_count():
            return f"only {torch.cuda.device_count()} CUDA device(s)"
        return None
    if device.type == "mps":
        return "MPS has no float64"
    return f"device type {device.type!r} is not supported by these tests"


@pytest.fixture(scope="module")
def device() -> torch.device:
    name = os.environ.get(DEVICE_ENV, "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        pytest.fail(f"{DEVICE_ENV}={name!r} is not a torch device ({exc}); use e.g. cpu, cuda or cuda:0")
    reason = _device_unavailable(dev)
    if reason is not None:
        pytest.skip(f"{DEVICE_ENV}={name!r}: {reason}")
    return dev


def reference_grads(model, inputs, targets, multi_input, config):
    params = [p for p in model.parameters() if p.requires_grad]
    zs = [model.encoder(x) for x in inputs]
    reps = [zs[t] if multi_input else zs[0] for t in range(len(TASKS))]
    losses = [task_loss(model.decoders[t](reps[i]), targets[i]) for i, t in enumerate(TASKS)]
    return params, torch.autograd.grad(naive_objective(losses, reps, config), params)


def max_rel_err(params, ref):
    errs = []
    for p, r in zip(params, ref):
        assert p.grad is not None, "a parameter received no gradient"
        errs.append(((p.grad - r).norm() / r.norm().clamp_min(1e-300)).item())
    return max(errs)


def _check_against_reference(device, arch, rep_grad, dense, multi_input, batch, config):
    torch.manual_seed(0)
    model = build_model(arch, RepMTL, TASKS, dense, multi_input, rep_grad, device=device)
    inputs, targets = make_batch(TASKS, dense, multi_input, batch, device=device)
    params, ref = reference_grads(model, inputs, targets, multi_input, config)

    model.zero_grad(set_to_none=True)
    losses = forward_losses(model, TASKS, inputs, targets, multi_input)
    weights = model.backward(losses, **config.to_weight_args())

    assert weights.shape == (3,)
    assert model.repmtl_config == config
    assert max_rel_err(params, ref) < 1e-9
    return model.repmtl_stats


@pytest.mark.parametrize(
    "arch,rep_grad,dense,multi_input,batch,log_loss",
    [(a, rg, d, m, b, lg) for (a, rg), d, m, b, lg in itertools.product(
        ARCHS, [True, False], [False, True], [1, 4], [True, False])],
)
def test_gradients_match_naive_autograd(device, arch, rep_grad, dense, multi_input, batch, log_loss, recwarn):
    config = RepMTLConfig(log_loss=log_loss, lambda_tsr=0.7, lambda_csa=1.3, tau=0.2)
    stats = _check_against_reference(device, arch, rep_grad, dense, multi_input, batch, config)
    assert len(stats["objectives"]) == 3 and len(stats["saliency_norms"]) == 3
    assert stats["L_tsr"] > 0
    if batch == 1:
        assert stats["L_csa"] == 0.0


@pytest.mark.parametrize("options", OPTION_GRID, ids=lambda o: "-".join(o.values()))
@pytest.mark.parametrize("dense,multi_input", list(itertools.product([True, False], [False, True])))
def test_every_option_combination_matches_naive_autograd(device, options, dense, multi_input):
    """The options act in the core, after the architecture: RepHPS stands for every architecture here."""
    config = RepMTLConfig(lambda_tsr=0.7, lambda_csa=1.3, tau=0.2, **options)
    stats = _check_against_reference(device, RepHPS, False, dense, multi_input, 4, config)
    assert stats["L_tsr"] > 0 and stats["L_csa"] != 0.0


@pytest.mark.parametrize("options", OPTION_GRID, ids=lambda o: "-".join(o.values()))
def test_every_option_combination_without_log_transform(device, options):
    config = RepMTLConfig(lambda_tsr=0.7, lambda_csa=1.3, tau=0.2, log_loss=False, **options)
    _check_against_reference(device, RepHPS, False, True, False, 3, config)


@pytest.mark.parametrize("form", CHOICES["csa_form"])
@pytest.mark.parametrize("which", ["csa", "tsr"])
def test_one_term_alone_matches_naive_autograd(device, form, which):
    """Each regulariser alone (the ablations), each CSA form, raw-loss saliency and absolute TSR magnitudes."""
    lambdas = {"lambda_tsr": 0.0} if which == "csa" else {"lambda_csa": 0.0}
    config = RepMTLConfig(tau=0.5, csa_form=form, saliency_loss="raw", tsr_channel_mean="abs",
                          **{"lambda_tsr": 0.9, "lambda_csa": 0.9, **lambdas})
    stats = _check_against_reference(device, RepHPS, False, True, False, 4, config)
    assert (stats["L_tsr"] == 0.0) == (which == "csa")
    assert (stats["L_csa"] == 0.0) == (which == "tsr")


def test_options_change_the_gradient(device):
    """Each non-default value changes the step (so a test of the default alone would not cover it)."""
    inputs, targets = make_batch(TASKS, True, False, 4, device=device)

    def grads(**options):
        torch.manual_seed(0)
        model = build_model(RepHPS, RepMTL, TASKS, True, False, False, device=device)
        losses = forward_losses(model, TASKS, inputs, targets, False)
        model.backward(losses, **RepMTLConfig(**options).to_weight_args())
        return torch.cat([p.grad.reshape(-1) for p in model.parameters()])

    base = grads()
    for name, values in CHOICES.items():
        for value in values[1:]:
            diff = (grads(**{name: value}) - base).norm() / base.norm()
            assert diff > 1e-6, f"{name}={value} did not change the gradient"


def test_unequal_multi_input_batches_use_common_prefix(device):
    torch.manual_seed(1)
    model = build_model(RepHPS, RepMTL, TASKS, True, True, False, device=device)
    inputs, targets = make_batch(TASKS, True, True, [4, 3, 5], device=device)
    config = RepMTLConfig()
    params, ref = reference_grads(model, inputs, targets, True, config)
    model.zero_grad(set_to_none=True)
    losses = forward_losses(model, TASKS, inputs, targets, True)
    with pytest.warns(UserWarning, match="different sizes"):
        import libmtl_repmtl.core.saliency as sal

        sal._WARNED.discard("unequal-batch")
        model.backward(losses, **config.to_weight_args())
    assert max_rel_err(params, ref) < 1e-9


def test_encoder_backpropagated_once_single_input(device):
    """Single-input: one encoder backward per step, whichever way LibMTL stores the representation."""
    for arch, rep_grad in ARCHS:
        model = build_model(arch, RepMTL, TASKS, True, False, rep_grad, device=device)
        calls = []
        model.encoder.net[0].weight.register_hook(lambda g, calls=calls: calls.append(1))
        inputs, targets = make_batch(TASKS, True, False, 3, device=device)
        losses = forward_losses(model, TASKS, inputs, targets, False)
        model.backward(losses, **RepMTLConfig().to_weight_args())
        assert len(calls) == 1, f"{arch.__name__} rep_grad={rep_grad}: encoder backward ran {len(calls)} times"


def test_both_terms_off_is_equal_weighting_of_log_losses(device):
    model = build_model(RepHPS, RepMTL, TASKS, True, False, False, device=device)
    inputs, targets = make_batch(TASKS, True, False, 3, device=device)
    params = list(model.parameters())
    zs = model.encoder(inputs[0])
    ref_losses = [task_loss(model.decoders[t](zs), targets[i]) for i, t in enumerate(TASKS)]
    ref = torch.autograd.grad(sum(torch.log(l + 1e-8) for l in ref_losses), params)
    losses = forward_losses(model, TASKS, inputs, targets, False)
    model.backward(losses, RepMTL_lambda_tsr=0, RepMTL_lambda_csa=0)
    assert max_rel_err(params, ref) < 1e-12
