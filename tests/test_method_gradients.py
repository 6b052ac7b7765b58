"""The RepMTL weighting's parameter gradients equal plain autograd on the spec's formulas (float64).

The reference (:mod:`libmtl_repmtl.core.reference`) materialises every C x C matrix, loops over positions
and takes one saliency pass per task; the implementation under test uses LibMTL's composition
``class MTLmodel(Architecture, Weighting)``, one saliency pass, Frobenius shortcuts and one encoder backward.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from libmtl_repmtl.core import RepMTLConfig
from libmtl_repmtl.core.reference import naive_objective
from libmtl_repmtl.libmtl.architecture import RepHPS
from libmtl_repmtl.libmtl.weighting import RepMTL
from tests._models import HPS, build_model, forward_losses, make_batch, task_loss

TASKS = ["a", "b", "c"]

# (architecture, rep_grad): LibMTL's HPS with --rep_grad, LibMTL's HPS without it, the RepHPS plugin.
ARCHS = [(HPS, True), (HPS, False), (RepHPS, False), (RepHPS, True)]


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


@pytest.mark.parametrize(
    "arch,rep_grad,dense,multi_input,batch,log_loss",
    [(a, rg, d, m, b, lg) for (a, rg), d, m, b, lg in itertools.product(
        ARCHS, [True, False], [False, True], [1, 4], [True, False])],
)
def test_gradients_match_naive_autograd(arch, rep_grad, dense, multi_input, batch, log_loss, recwarn):
    torch.manual_seed(0)
    model = build_model(arch, RepMTL, TASKS, dense, multi_input, rep_grad)
    inputs, targets = make_batch(TASKS, dense, multi_input, batch)
    config = RepMTLConfig(log_loss=log_loss, lambda_tsr=0.7, lambda_csa=1.3, tau=0.2)
    params, ref = reference_grads(model, inputs, targets, multi_input, config)

    model.zero_grad(set_to_none=True)
    losses = forward_losses(model, TASKS, inputs, targets, multi_input)
    weights = model.backward(losses, **config.to_weight_args())

    assert weights.shape == (3,)
    assert max_rel_err(params, ref) < 1e-9
    stats = model.repmtl_stats
    assert len(stats["objectives"]) == 3 and len(stats["saliency_norms"]) == 3
    assert stats["L_tsr"] > 0
    if batch == 1:
        assert stats["L_csa"] == 0.0


def test_unequal_multi_input_batches_use_common_prefix():
    torch.manual_seed(1)
    model = build_model(RepHPS, RepMTL, TASKS, True, True, False)
    inputs, targets = make_batch(TASKS, True, True, [4, 3, 5])
    config = RepMTLConfig()
    params, ref = reference_grads(model, inputs, targets, True, config)
    model.zero_grad(set_to_none=True)
    losses = forward_losses(model, TASKS, inputs, targets, True)
    with pytest.warns(UserWarning, match="different sizes"):
        import libmtl_repmtl.core.saliency as sal

        sal._WARNED.discard("unequal-batch")
        model.backward(losses, **config.to_weight_args())
    assert max_rel_err(params, ref) < 1e-9


def test_encoder_backpropagated_once_single_input():
    """Single-input: one encoder backward per step, whichever way LibMTL stores the representation."""
    for arch, rep_grad in ARCHS:
        model = build_model(arch, RepMTL, TASKS, True, False, rep_grad)
        calls = []
        model.encoder.net[0].weight.register_hook(lambda g, calls=calls: calls.append(1))
        inputs, targets = make_batch(TASKS, True, False, 3)
        losses = forward_losses(model, TASKS, inputs, targets, False)
        model.backward(losses, **RepMTLConfig().to_weight_args())
        assert len(calls) == 1, f"{arch.__name__} rep_grad={rep_grad}: encoder backward ran {len(calls)} times"


def test_both_terms_off_is_equal_weighting_of_log_losses():
    model = build_model(RepHPS, RepMTL, TASKS, True, False, False)
    inputs, targets = make_batch(TASKS, True, False, 3)
    params = list(model.parameters())
    zs = model.encoder(inputs[0])
    ref_losses = [task_loss(model.decoders[t](zs), targets[i]) for i, t in enumerate(TASKS)]
    ref = torch.autograd.grad(sum(torch.log(l + 1e-8) for l in ref_losses), params)
    losses = forward_losses(model, TASKS, inputs, targets, False)
    model.backward(losses, RepMTL_lambda_tsr=0, RepMTL_lambda_csa=0)
    assert max_rel_err(params, ref) < 1e-12
