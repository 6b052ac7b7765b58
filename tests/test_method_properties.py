"""Properties of the TSR and CSA terms and the method's behaviour on edge cases."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import libmtl_repmtl.core.saliency as saliency_module
from libmtl_repmtl.core import (
    NonFiniteLossError,
    RepMTLConfig,
    csa_loss,
    regularised_objective,
    repmtl_backward,
    tsr_entropy_map,
    tsr_loss,
)
from libmtl_repmtl.core.config import CHOICES
from libmtl_repmtl.core.reference import naive_csa, naive_tsr
from libmtl_repmtl.libmtl.architecture import RepHPS
from libmtl_repmtl.libmtl.weighting import RepMTL
from tests._models import build_model, forward_losses, make_batch

shapes = st.tuples(
    st.integers(1, 4),  # T
    st.integers(1, 4),  # B
    st.integers(1, 5),  # C
    st.integers(1, 3),  # H
    st.integers(1, 3),  # W
)


def _saliencies(shape, seed, scale=1.0, dtype=torch.float64):
    t, b, c, h, w = shape
    g = torch.Generator().manual_seed(seed)
    return [scale * torch.randn(b, c, h, w, generator=g, dtype=dtype) for _ in range(t)]


@settings(max_examples=60, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**16), log_scale=st.floats(-12, 3))
def test_tsr_is_an_entropy_in_0_log_t(shape, seed, log_scale):
    sal = _saliencies(shape, seed, 10.0**log_scale)
    value = tsr_loss(sal).item()
    assert -1e-12 <= value <= math.log(shape[0]) + 1e-12


@settings(max_examples=30, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**16))
def test_tsr_maximal_for_equal_saliencies(shape, seed):
    t = shape[0]
    one = _saliencies((1, *shape[1:]), seed)[0]
    value = tsr_loss([one.clone() for _ in range(t)]).item()
    assert value == pytest.approx(math.log(t), abs=1e-12)


def test_tsr_zero_with_one_task_and_matches_reference():
    sal = _saliencies((1, 3, 4, 2, 2), 0)
    assert tsr_loss(sal).item() == 0.0
    sal = _saliencies((3, 2, 4, 2, 3), 1)
    assert tsr_loss(sal).item() == pytest.approx(naive_tsr(sal).item(), rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(shape=shapes.filter(lambda s: s[1] >= 2), seed=st.integers(0, 2**16),
       log_scale=st.floats(-9, 4), tau=st.floats(0.05, 2.0))
def test_csa_invariant_to_one_global_rescaling(shape, seed, log_scale, tau):
    sal = _saliencies(shape, seed)
    base = csa_loss(sal, tau).item()
    scaled = csa_loss([s * 10.0**log_scale for s in sal], tau).item()
    assert scaled == pytest.approx(base, rel=1e-9, abs=1e-9)
    assert base == pytest.approx(naive_csa(sal, tau).item(), rel=1e-9)


def test_tiny_saliencies_in_float32_match_float64():
    """Saliency entries of 1e-9: the exact global rescale keeps float32 CSA/TSR accurate."""
    sal64 = _saliencies((3, 4, 16, 3, 3), 3, scale=1e-9)
    sal32 = [s.float() for s in sal64]
    assert csa_loss(sal32).item() == pytest.approx(csa_loss(sal64).item(), rel=1e-4)
    assert tsr_loss(sal32).item() == pytest.approx(tsr_loss(sal64).item(), rel=1e-4)


@pytest.mark.parametrize("form", CHOICES["csa_form"])
@pytest.mark.parametrize("ratio", [1e-6, 1e-12, 1e-20])
def test_csa_gradient_finite_when_one_sample_or_task_is_orders_below_the_batch_max(form, ratio):
    """A confidently classified sample (or one task of it) has a saliency far below the batch's largest; its
    cosines' fourth powers and 1/norm^2 derivatives once overflowed float32 (inf, then NaN parameters in
    training). The float32 gradient must be finite and equal the float64 reading's."""
    sal64 = _saliencies((3, 4, 8, 2, 2), 11)
    sal64[0][1] *= ratio  # sample 1, task 0
    for s in sal64:
        s[2] *= ratio  # sample 2, every task
    grads = {}
    for dtype in (torch.float64, torch.float32):
        leaves = [s.detach().clone().to(dtype).requires_grad_() for s in sal64]
        loss = csa_loss(leaves, tau=0.5, form=form)
        loss.backward()
        grads[dtype] = [leaf.grad for leaf in leaves]
        assert torch.isfinite(loss) and all(torch.isfinite(g).all() for g in grads[dtype])
    ref = [s.detach().clone().requires_grad_() for s in sal64]
    naive_csa(ref, 0.5, form).backward()
    for g64, g32, r in zip(grads[torch.float64], grads[torch.float32], ref):
        torch.testing.assert_close(g64, r.grad, rtol=1e-8, atol=0)
        # float32 against float64, per sample: each sample's gradient to its own scale.
        for b in range(g64.shape[0]):
            scale = g64[b].abs().max()
            if scale > 0:
                assert (g32[b].double() - g64[b]).abs().max() <= 1e-3 * scale


def _reps(batch=3, tasks=2, channels=4, dtype=torch.float64):
    z = torch.randn(batch, channels, 2, 2, dtype=dtype)
    return [z.detach().clone().requires_grad_() for _ in range(tasks)]


def test_all_zero_saliency_gives_finite_values_and_gradients():
    copies = _reps()
    # Losses independent of the representation: every saliency is exactly zero.
    w = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    losses = torch.stack([w * 1.0 + 0 * c.sum() for c in copies])
    terms = regularised_objective(losses, copies, RepMTLConfig())
    assert all(torch.isfinite(x) for x in (terms.total, terms.tsr, terms.csa))
    terms.total.backward()
    assert torch.isfinite(w.grad) and all(torch.isfinite(c.grad).all() for c in copies)


def test_one_zero_task_saliency_is_finite():
    copies = _reps(tasks=3)
    losses = torch.stack([copies[0].pow(2).mean(), copies[1].sin().mean() + 2, 0 * copies[2].sum() + 1])
    terms = regularised_objective(losses, copies, RepMTLConfig())
    terms.total.backward()
    assert torch.isfinite(terms.total) and all(torch.isfinite(c.grad).all() for c in copies)


def test_batch_of_one_skips_csa_with_one_warning():
    saliency_module._WARNED.discard("csa-batch-1")
    copies = _reps(batch=1)
    losses = torch.stack([c.pow(2).mean() + 1 for c in copies])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            terms = regularised_objective(losses, copies, RepMTLConfig())
    assert terms.csa.item() == 0.0 and torch.isfinite(terms.total)
    assert sum("no CSA negatives" in str(w.message) for w in caught) == 1


def test_single_task_is_log_loss_plus_zero_regularisers():
    copies = _reps(tasks=1)
    losses = torch.stack([copies[0].pow(2).mean() + 1])
    config = RepMTLConfig()
    terms = regularised_objective(losses, copies, config)
    assert terms.tsr.item() == 0.0
    assert terms.total.item() == pytest.approx(math.log(losses.item() + 1e-8) + config.lambda_csa * terms.csa.item())


def test_non_finite_loss_names_task_and_step_and_updates_nothing():
    tasks = ["seg", "depth", "normal"]
    model = build_model(RepHPS, RepMTL, tasks, True, False, False)
    inputs, targets = make_batch(tasks, True, False, 2)
    losses = forward_losses(model, tasks, inputs, targets, False)
    model.backward(losses)  # step 0 fine
    model.zero_grad(set_to_none=True)
    losses = forward_losses(model, tasks, inputs, targets, False)
    losses = losses * torch.tensor([1.0, float("nan"), 1.0], dtype=losses.dtype)
    with pytest.raises(NonFiniteLossError, match=r"'depth' = nan.*step 1|step 1.*'depth' = nan"):
        model.backward(losses)
    assert all(p.grad is None for p in model.parameters()), "no gradient may be applied"


def test_overflowing_settings_are_named_when_the_objective_is_not_finite():
    """Finite losses but a temperature so small that CSA overflows: the error names the settings and the fix."""
    sources = [torch.randn(4, 3, 2, 2, requires_grad=True) for _ in range(2)]
    copies = [s.detach().requires_grad_() for s in sources]
    losses = torch.stack([(c ** 2).mean() + 1 for c in copies])
    with pytest.raises(NonFiniteLossError, match=r"tau=1e-40: a tiny tau or huge lambdas overflow") as err:
        repmtl_backward(losses, sources, copies, RepMTLConfig(tau=1e-40), step=3)
    assert "at step 3" in str(err.value) and "task losses are finite" in str(err.value)
    assert all(s.grad is None for s in sources)  # nothing was backpropagated


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_saliency_terms_in_float32(dtype):
    from libmtl_repmtl.core import task_saliencies

    copies = [c.to(dtype).detach().requires_grad_() for c in _reps(dtype=torch.float32)]
    losses = torch.stack([(c.float() ** 2).mean() + 1 for c in copies])
    sal = task_saliencies(torch.log(losses), copies)
    assert all(s.dtype == torch.float32 for s in sal)
    terms = regularised_objective(losses, copies, RepMTLConfig())
    assert terms.tsr.dtype == torch.float32 and terms.csa.dtype == torch.float32
    assert torch.isfinite(terms.total)


def test_rephps_copies_are_float32_for_half_models():
    tasks = ["a", "b"]
    model = build_model(RepHPS, RepMTL, tasks, False, False, False, dtype=torch.bfloat16)
    inputs, targets = make_batch(tasks, False, False, 3, dtype=torch.bfloat16)
    losses = forward_losses(model, tasks, inputs, targets, False).float()
    assert all(c.dtype == torch.float32 for c in model.rep_tasks.values())
    model.backward(losses)
    assert all(p.grad is not None and torch.isfinite(p.grad.float()).all() for p in model.parameters())


def test_entropy_map_shape():
    sal = _saliencies((3, 2, 4, 3, 5), 0)
    assert tuple(tsr_entropy_map(sal).shape) == (2, 3, 5)


def test_config_validation_and_weight_args_round_trip():
    cfg = RepMTLConfig(lambda_tsr=0.7, lambda_csa=1.1, tau=0.2, log_loss=False)
    assert RepMTLConfig.from_weight_args(cfg.to_weight_args()) == cfg
    assert RepMTLConfig.from_weight_args({"RepMTL_log_loss": "false", "T": 2.0}).log_loss is False
    with pytest.raises(ValueError, match="tau"):
        RepMTLConfig(tau=0)
    with pytest.raises(ValueError, match="RepMTL_lambda_csa"):
        RepMTLConfig.from_weight_args({"RepMTL_lambda_csa": "abc"})
    with pytest.raises(ValueError, match=">= 0"):
        RepMTLConfig(lambda_tsr=-1)


def test_unsupported_architecture_refused_at_construction():
    from libmtl_repmtl.libmtl.bases import AbsArchitecture

    class Custom(AbsArchitecture):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.encoder = self.encoder_class()

    with pytest.raises(ValueError, match="RepHPS"):
        build_model(Custom, RepMTL, ["a", "b"], False, False, False)


def test_materialised_reference_equals_loop_reference():
    from libmtl_repmtl.core.reference import materialised_csa, materialised_tsr

    sal = _saliencies((3, 4, 5, 2, 3), 7)
    assert materialised_csa(sal, 0.3).item() == pytest.approx(naive_csa(sal, 0.3).item(), rel=1e-12)
    assert materialised_tsr(sal).item() == pytest.approx(naive_tsr(sal).item(), rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(shape=shapes.filter(lambda s: s[1] >= 2), seed=st.integers(0, 2**16),
       log_scale=st.floats(-9, 4), tau=st.floats(0.05, 2.0))
def test_infonce_form_matches_reference_is_positive_and_above_printed(shape, seed, log_scale, tau):
    sal = [s * 10.0**log_scale for s in _saliencies(shape, seed)]
    infonce = csa_loss(sal, tau, form="infonce").item()
    assert infonce == pytest.approx(naive_csa(_saliencies(shape, seed), tau, "infonce").item(), rel=1e-9)
    # The positive pair in the denominator: every term is -log of a probability (> 0) and above the printed one.
    assert infonce > 0
    assert infonce > csa_loss(sal, tau, form="printed").item()


def test_infonce_gradient_on_the_positive_vanishes_once_it_wins_and_printed_does_not():
    from libmtl_repmtl.core.csa import contrastive_terms

    tau = 0.05
    neg = 0.5 * torch.rand(4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for form in CHOICES["csa_form"]:
        pos = torch.ones(2, 4, dtype=torch.float64, requires_grad=True)  # every positive wins by >= 0.5
        contrastive_terms(pos, neg, 0, tau, form).sum().backward()
        if form == "printed":
            torch.testing.assert_close(pos.grad, torch.full_like(pos, -1 / tau))
        else:
            assert 0 < -pos.grad.max().item() and -pos.grad.min().item() < 3 * math.exp(-0.5 / tau) / tau


@settings(max_examples=40, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**16), log_scale=st.floats(-12, 3))
def test_abs_channel_mean_tsr_is_an_entropy_and_matches_reference(shape, seed, log_scale):
    sal = _saliencies(shape, seed, 10.0**log_scale)
    value = tsr_loss(sal, "abs").item()
    assert -1e-12 <= value <= math.log(shape[0]) + 1e-12
    if shape[0] >= 2:
        assert value == pytest.approx(naive_tsr(sal, "abs").item(), rel=1e-9, abs=1e-12)


def test_abs_channel_mean_ignores_channel_signs_and_signed_does_not():
    sal = _saliencies((3, 2, 4, 2, 2), 11)
    flip = torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=torch.float64).reshape(1, 4, 1, 1)
    flipped = [sal[0] * flip, sal[1], sal[2]]
    assert tsr_loss(flipped, "abs").item() == pytest.approx(tsr_loss(sal, "abs").item(), rel=1e-12)
    assert tsr_loss(flipped, "signed").item() != pytest.approx(tsr_loss(sal, "signed").item(), rel=1e-6)


def test_raw_saliency_is_the_objective_saliency_times_the_loss():
    """With the log transform, d L_t/dZ = (L_t + 1e-8) d l_t/dZ; the sum of objectives is unchanged."""
    copies = _reps(tasks=3)
    losses = torch.stack([copies[0].pow(2).mean() + 0.5, copies[1].sin().mean() + 2, copies[2].exp().mean()])
    obj = regularised_objective(losses, copies, RepMTLConfig())
    raw = regularised_objective(losses, copies, RepMTLConfig(saliency_loss="raw"))
    for t in range(3):
        torch.testing.assert_close(raw.saliencies[t], obj.saliencies[t] * (losses[t].detach() + 1e-8))
    torch.testing.assert_close(raw.objectives, obj.objectives)
    assert raw.tsr.item() != pytest.approx(obj.tsr.item(), rel=1e-6)  # per-task scales move P
    # Without the log transform the two readings are the same saliency.
    off = [regularised_objective(losses, copies, RepMTLConfig(log_loss=False, saliency_loss=s)) for s in
           CHOICES["saliency_loss"]]
    torch.testing.assert_close(off[0].total, off[1].total)


def test_bad_core_option_values_are_refused():
    sal = _saliencies((2, 3, 2, 1, 1), 0)
    with pytest.raises(ValueError, match="'printed', 'infonce'"):
        csa_loss(sal, 0.1, form="ntxent")
    with pytest.raises(ValueError, match="'signed', 'abs'"):
        tsr_loss(sal, "l2")
