"""Mixed precision: bf16 autocast trains RepMTL on the CPU with float32 saliency terms; the GradScaler path
(scaled_backward) gives exactly s x the unscaled gradient for RepMTL and loss weightings, where scaling the
losses would not."""

from __future__ import annotations

import pytest
import torch

from libmtl_repmtl.core import RepMTLConfig, regularised_objective
from libmtl_repmtl.training.amp import (
    AmpConfig,
    autocast_context,
    make_grad_scaler,
    scale_backward_roots,
    scaled_backward,
)
from tests._models import HPS, build_model, forward_losses, make_batch

TASKS = ["a", "b", "c"]


def _repmtl_model(dtype=torch.float64, multi_input=False):
    from libmtl_repmtl.libmtl.architecture import RepHPS
    from libmtl_repmtl.libmtl.weighting import RepMTL

    torch.manual_seed(0)
    return build_model(RepHPS, RepMTL, TASKS, True, multi_input, False, dtype=dtype)


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def test_config_per_device():
    assert AmpConfig.for_device("cpu") == AmpConfig(True, "cpu", torch.bfloat16, False)
    assert AmpConfig.for_device("cpu", enabled=False).enabled is False
    with pytest.raises(ValueError, match="bfloat16"):
        AmpConfig.for_device("cpu", dtype="fp16")
    with pytest.raises(ValueError, match="unknown AMP dtype"):
        AmpConfig.for_device("cpu", dtype="int8")
    assert make_grad_scaler(AmpConfig.for_device("cpu")) is None
    if torch.cuda.is_available():
        cfg = AmpConfig.for_device("cuda")
        assert cfg.dtype == torch.float16 and cfg.use_scaler and make_grad_scaler(cfg) is not None


def test_bf16_autocast_trains_repmtl_with_float32_saliency_terms():
    model = _repmtl_model(torch.float32)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    inputs, targets = make_batch(TASKS, True, False, 4, dtype=torch.float32)
    history = []
    for _ in range(4):
        with autocast_context("cpu", dtype="bf16"):
            preds = model(inputs[0])
            assert all(p.dtype == torch.bfloat16 for p in preds.values())  # the network runs in bf16
            losses = torch.stack([(preds[t].float() - y).pow(2).mean() for t, y in zip(TASKS, targets)])
        assert all(model.rep_tasks[t].dtype == torch.float32 for t in TASKS)  # float32 copies
        # the core's terms on the captured copies: float32
        terms = regularised_objective(losses, [model.rep_tasks[t] for t in TASKS], RepMTLConfig())
        assert all(s.dtype == torch.float32 for s in terms.saliencies)
        assert terms.tsr.dtype == torch.float32 and terms.csa.dtype == torch.float32
        with autocast_context("cpu", dtype="bf16"):  # fresh graph for the real step
            preds = model(inputs[0])
            losses = torch.stack([(preds[t].float() - y).pow(2).mean() for t, y in zip(TASKS, targets)])
        opt.zero_grad()
        scaled_backward(model, losses, None)  # no scaler with bf16
        opt.step()
        stats = model.repmtl_stats
        assert all(torch.isfinite(torch.tensor([stats["total"], stats["L_tsr"], stats["L_csa"]])))
        history.append(float(losses.detach().sum()))
    assert all(torch.isfinite(torch.tensor(history)))
    assert all(torch.isfinite(p).all() for p in model.parameters())


def _repmtl_grads(scale: float | None, log_loss: bool, multi_input: bool = False):
    model = _repmtl_model(multi_input=multi_input)
    inputs, targets = make_batch(TASKS, True, multi_input, 3)
    losses = forward_losses(model, TASKS, inputs, targets, multi_input)
    wa = RepMTLConfig(log_loss=log_loss).to_weight_args()
    if scale is None:
        model.backward(losses, **wa)
    else:
        with scale_backward_roots(scale):
            model.backward(losses, **wa)
    return _grads(model), model.repmtl_stats


@pytest.mark.parametrize("log_loss", [True, False])
@pytest.mark.parametrize("multi_input", [False, True])
def test_root_scaling_gives_exactly_s_times_the_repmtl_gradient(log_loss, multi_input):
    ref, ref_stats = _repmtl_grads(None, log_loss, multi_input)
    got, stats = _repmtl_grads(1024.0, log_loss, multi_input)
    for name, g in ref.items():
        torch.testing.assert_close(got[name] / 1024.0, g, rtol=1e-10, atol=1e-14, msg=name)
    assert stats["total"] == pytest.approx(ref_stats["total"], rel=1e-12)


def test_scaling_the_losses_instead_would_be_wrong_for_repmtl():
    """The reason scaled_backward exists: s * L_t handed to RepMTL does not give s x the gradient."""
    ref, _ = _repmtl_grads(None, log_loss=False)
    model = _repmtl_model()
    inputs, targets = make_batch(TASKS, True, False, 3)
    losses = forward_losses(model, TASKS, inputs, targets, False)
    model.backward(losses * 1024.0, **RepMTLConfig(log_loss=False).to_weight_args())
    wrong = _grads(model)
    assert any(not torch.allclose(wrong[n] / 1024.0, ref[n], rtol=1e-6) for n in ref)


@pytest.mark.parametrize("weighting", ["EW", "UW", "GLS", "RepMTL"])
def test_grad_scaler_step_equals_unscaled_float32_step(weighting):
    from libmtl_repmtl.libmtl.bases import LibMTL
    from libmtl_repmtl.libmtl.weighting import RepMTL

    def run(use_scaler: bool):
        torch.manual_seed(0)
        if weighting == "RepMTL":
            model = _repmtl_model(torch.float32)
        else:
            model = build_model(HPS, LibMTL.weighting.__dict__[weighting], TASKS, True, False, False,
                                dtype=torch.float32)
        assert weighting != "RepMTL" or isinstance(model, RepMTL)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12) if use_scaler else None
        inputs, targets = make_batch(TASKS, True, False, 3, dtype=torch.float32)
        for _ in range(2):
            opt.zero_grad()
            losses = forward_losses(model, TASKS, inputs, targets, False).abs() + 0.1
            scaled_backward(model, losses, scaler)
            if scaler is not None:
                assert scaler.get_scale() == 2.0**12
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
        return {n: p.detach().clone() for n, p in model.named_parameters()}

    ref, got = run(False), run(True)
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=1e-5, atol=1e-6, msg=name)


def test_overflow_in_the_scaled_saliency_pass_skips_the_step():
    from libmtl_repmtl.core.objective import NonFiniteLossError

    model = _repmtl_model(torch.float32)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127 * 1.9)  # so large that s * S overflows float32
    inputs, targets = make_batch(TASKS, True, False, 3, dtype=torch.float32)
    losses = forward_losses(model, TASKS, inputs, targets, False)
    opt.zero_grad()
    scaled_backward(model, losses, scaler)
    scaler.step(opt)
    scaler.update()
    assert scaler.get_scale() < 2.0**127
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), before[n], rtol=0, atol=0)
    # a genuinely non-finite loss is still an error
    losses = forward_losses(model, TASKS, inputs, targets, False)
    with pytest.raises(NonFiniteLossError):
        scaled_backward(model, losses * float("nan"), scaler)
