"""The regularised Rep-MTL objective and its one-pass backward.

``L = sum_t l_t + lambda_tsr * L_tsr + lambda_csa * L_csa``

Data flow of one step (the encoder is traversed once)::

    encoder once -> Z -> each head reads its own detached leaf copy Z'_t -> l_t
    -> all S_t = d l_t / d Z'_t in ONE pass through the heads (graph kept)
    -> L_tsr, L_csa on the S_t -> ONE backward of L into the heads and the copies
    -> the summed copy gradients pushed into the encoder in ONE backward.

Because ``S_t`` is a function of ``Z'_t`` (second order through the heads), ``dL/dZ'_t`` already holds
the regularisers' contribution; pushing ``sum_t dL/dZ'_t`` into the encoder yields exactly the gradient
of plain autograd on the formulas (tests check this in float64 against :mod:`libmtl_repmtl.core.reference`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from libmtl_repmtl.core.config import RepMTLConfig
from libmtl_repmtl.core.csa import GatherFn, csa_loss
from libmtl_repmtl.core.saliency import stack_saliencies, task_objectives, task_saliencies
from libmtl_repmtl.core.tsr import tsr_loss

#: The default hyper-parameters, quoted when a setting makes the objective overflow.
_DEFAULTS = RepMTLConfig()


class NonFiniteLossError(FloatingPointError):
    """A task loss (or the regularised objective) is NaN or infinite; no gradient was applied."""


@dataclass
class RepMTLTerms:
    """The pieces of one Rep-MTL objective evaluation.

    Attributes:
        total: scalar regularised objective ``L``.
        objectives: ``(T,)`` task objectives ``l_t``.
        tsr: scalar ``L_tsr`` (0 when switched off or ``T = 1``).
        csa: scalar ``L_csa`` (0 when switched off or batch 1).
        saliencies: ``T`` tensors ``S_t`` shaped like the representations (empty when both terms are off).
    """

    total: Tensor
    objectives: Tensor
    tsr: Tensor
    csa: Tensor
    saliencies: list[Tensor] = field(default_factory=list)

    def stats(self) -> dict[str, object]:
        """Detached per-step diagnostics as Python numbers (one device sync).

        Keys: ``objectives`` (list of T), ``L_tsr``, ``L_csa``, ``total``, ``saliency_norms`` (list of T
        Frobenius norms of ``S_t``, empty when no saliency was computed).
        """
        parts = [self.objectives.detach().double(), self.tsr.detach().double().reshape(1),
                 self.csa.detach().double().reshape(1), self.total.detach().double().reshape(1)]
        if self.saliencies:
            parts.append(torch.stack([s.detach().double().norm() for s in self.saliencies]))
        flat = torch.cat([p.to(parts[0].device) for p in parts]).tolist()
        n = self.objectives.numel()
        return {
            "objectives": flat[:n],
            "L_tsr": flat[n],
            "L_csa": flat[n + 1],
            "total": flat[n + 2],
            "saliency_norms": flat[n + 3:],
        }


def check_finite_losses(losses: Tensor, task_names: Sequence[str] | None = None, step: int | None = None) -> None:
    """Raise :class:`NonFiniteLossError` naming the task(s) and the step if any loss is NaN/inf."""
    flat = losses.detach().reshape(-1)
    finite = torch.isfinite(flat)
    if bool(finite.all()):
        return
    names = list(task_names) if task_names is not None else [f"task {i}" for i in range(flat.numel())]
    bad = [f"{names[i]!r} = {flat[i].item()}" for i in range(flat.numel()) if not bool(finite[i])]
    where = f" at step {step}" if step is not None else ""
    raise NonFiniteLossError(
        f"Rep-MTL: non-finite task loss{where}: {', '.join(bad)}. No parameter was updated. "
        "Check that batch's inputs and targets for NaN/Inf, or lower the learning rate."
    )


def regularised_objective(
    losses: Tensor | Sequence[Tensor],
    reps: Sequence[Tensor],
    config: RepMTLConfig | None = None,
    gather: GatherFn | None = None,
) -> RepMTLTerms:
    """Evaluate ``L = sum_t l_t + lambda_tsr L_tsr + lambda_csa L_csa``.

    The saliencies are ``d l_t / d Z`` or, with ``config.saliency_loss == "raw"`` and the log transform on,
    ``d L_t / d Z``; the first term is ``sum_t l_t`` either way.

    Args:
        losses: ``(T,)`` batch-mean task losses ``L_t``.
        reps: ``T`` leaf tensors ``(B_t, C, *spatial)`` requiring grad, ``reps[t]`` being what head ``t``
            read (one detached copy of the shared representation per head; multi-input: each task's own).
        config: hyper-parameters (defaults: :class:`RepMTLConfig`).
        gather: distributed gather for global CSA negatives (None: local batch).

    Returns:
        :class:`RepMTLTerms`; ``total`` is differentiable w.r.t. heads and ``reps`` (second order through
        the saliencies).
    """
    cfg = config or RepMTLConfig()
    objectives = task_objectives(losses, cfg.log_loss)
    if objectives.numel() != len(reps):
        raise ValueError(f"got {objectives.numel()} losses but {len(reps)} representations")
    zero = objectives.sum() * 0.0
    if not cfg.needs_saliency_graph:
        return RepMTLTerms(objectives.sum(), objectives, zero, zero)
    saliency_of = task_objectives(losses, log_loss=False) if cfg.saliency_of_raw_loss else objectives
    saliencies = task_saliencies(saliency_of, reps, create_graph=True)
    stacked = stack_saliencies(saliencies)
    tsr = tsr_loss(stacked, cfg.tsr_channel_mean) if cfg.lambda_tsr > 0 else stacked.sum() * 0.0
    csa = csa_loss(stacked, cfg.tau, gather, cfg.csa_form) if cfg.lambda_csa > 0 else stacked.sum() * 0.0
    total = objectives.sum() + cfg.lambda_tsr * tsr + cfg.lambda_csa * csa
    return RepMTLTerms(total, objectives, tsr, csa, saliencies)


def backward_into_encoder(sources: Sequence[Tensor], copies: Sequence[Tensor]) -> None:
    """Push the copies' gradients into the encoder in ONE backward call.

    ``copies[t]`` is a detached leaf of ``sources[t]``; copies of the same source tensor (single-input:
    all of them) have their gradients summed first, so the encoder graph is traversed once.

    Args:
        sources: ``T`` encoder outputs (the same tensor repeated, or one per task for multi-input).
        copies: ``T`` leaf copies whose ``.grad`` holds ``dL/dZ'_t`` (None: no gradient).
    """
    grads: dict[int, Tensor] = {}
    tensors: dict[int, Tensor] = {}
    for src, cp in zip(sources, copies):
        if cp.grad is None or not src.requires_grad:
            continue
        g = cp.grad.to(src.dtype)
        key = id(src)
        tensors[key] = src
        grads[key] = grads[key] + g if key in grads else g
    if tensors:
        torch.autograd.backward([tensors[k] for k in tensors], [grads[k] for k in tensors])


def repmtl_backward(
    losses: Tensor,
    sources: Sequence[Tensor],
    copies: Sequence[Tensor],
    config: RepMTLConfig | None = None,
    task_names: Sequence[str] | None = None,
    step: int | None = None,
    gather: GatherFn | None = None,
) -> RepMTLTerms:
    """One Rep-MTL backward: accumulate ``dL/dθ`` into ``.grad`` of heads and encoder.

    Args:
        losses: ``(T,)`` batch-mean task losses.
        sources: ``T`` encoder outputs ``Z`` (``sources[t]`` is what ``copies[t]`` was copied from).
        copies: ``T`` detached leaf copies read by the heads, requiring grad.
        config: hyper-parameters.
        task_names, step: used in error messages.
        gather: distributed gather for global CSA negatives.

    Raises:
        NonFiniteLossError: a task loss or the objective is not finite (nothing is backpropagated).
    """
    check_finite_losses(losses, task_names, step)
    terms = regularised_objective(losses, copies, config, gather)
    if not bool(torch.isfinite(terms.total.detach())):
        where = f" at step {step}" if step is not None else ""
        cfg = config or _DEFAULTS
        raise NonFiniteLossError(
            f"Rep-MTL: the regularised objective is not finite{where} "
            f"(L_tsr={terms.tsr.item()}, L_csa={terms.csa.item()}; the task losses are finite); no parameter was "
            f"updated. With lambda_tsr={cfg.lambda_tsr}, lambda_csa={cfg.lambda_csa}, tau={cfg.tau}: a "
            "tiny tau or huge lambdas overflow the regularisers; use values of the order of the defaults "
            f"({_DEFAULTS.lambda_tsr}, {_DEFAULTS.lambda_csa}, {_DEFAULTS.tau}), or lower the learning rate if the "
            "model diverged."
        )
    for cp in copies:
        cp.grad = None
    terms.total.backward()
    backward_into_encoder(sources, copies)
    return terms


__all__ = [
    "NonFiniteLossError",
    "RepMTLTerms",
    "backward_into_encoder",
    "check_finite_losses",
    "regularised_objective",
    "repmtl_backward",
]
