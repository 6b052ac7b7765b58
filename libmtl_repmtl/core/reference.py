"""A literal, slow reading of the Rep-MTL formulas: the reference the fast path is tested against.

Everything here follows ``docs/method.md`` step by step: per-position loops over tasks, explicit
``C x C`` affinity matrices, and one saliency backward pass per task. Use it in float64 on small models;
never in training.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from libmtl_repmtl.core.config import CHOICES, LOG_EPS, RepMTLConfig


def naive_saliencies(objectives: Sequence[Tensor], reps: Sequence[Tensor]) -> list[Tensor]:
    """``S_t = d l_t / d Z_t``, one ``autograd.grad`` per task, graph kept. ``reps[t]``: ``(B, C, ...)``."""
    return [torch.autograd.grad(l, z, create_graph=True)[0] for l, z in zip(objectives, reps)]


def naive_tsr(saliencies: Sequence[Tensor], channel_mean: str = "signed") -> Tensor:
    """``L_tsr`` by its definition (positions enumerated; assumes no all-zero position).

    ``channel_mean``: ``"signed"`` (``|mean_c S|``) or ``"abs"`` (``mean_c |S|``) per position and task.
    """
    num_tasks = len(saliencies)
    if num_tasks < 2:
        return saliencies[0].sum() * 0.0
    if channel_mean == "signed":
        magnitudes = [s.mean(dim=1).abs().reshape(-1) for s in saliencies]  # T x (B*N)
    elif channel_mean == "abs":
        magnitudes = [s.abs().mean(dim=1).reshape(-1) for s in saliencies]
    else:
        raise ValueError(f"unknown channel_mean {channel_mean!r}; allowed: {CHOICES['tsr_channel_mean']}")
    entropies = []
    for i in range(magnitudes[0].numel()):
        mags = [m[i] for m in magnitudes]
        total = sum(mags)
        h = 0.0
        for mag in mags:
            p = mag / total
            h = h - p * torch.log(p)
        entropies.append(h)
    return torch.stack(entropies).mean()


def naive_csa(saliencies: Sequence[Tensor], tau: float, form: str = "printed") -> Tensor:
    """``L_csa`` by its definition, materialising every ``C x C`` matrix.

    ``form``: ``"printed"`` (denominator: the negatives ``k != b``) or ``"infonce"`` (the positive pair too).
    """
    if form not in CHOICES["csa_form"]:
        raise ValueError(f"unknown CSA form {form!r}; allowed: {CHOICES['csa_form']}")
    batch, channels = saliencies[0].shape[:2]
    per_sample = [[s[b].reshape(channels, -1) for s in saliencies] for b in range(batch)]  # b -> t -> C x N
    anchors_hat = []
    task_affinities = []
    for b in range(batch):
        a_b = torch.stack([s_tb.mean(dim=1) for s_tb in per_sample[b]], dim=1)  # C x T
        a_hat = (a_b @ a_b.T).reshape(-1)
        anchors_hat.append(a_hat / a_hat.norm())
        task_affinities.append([(s @ s.T).reshape(-1) / (s @ s.T).norm() for s in per_sample[b]])
    terms = []
    for b in range(batch):
        negatives = sum(torch.exp(anchors_hat[b] @ anchors_hat[k] / tau) for k in range(batch) if k != b)
        for m_tb in task_affinities[b]:
            positive = torch.exp(anchors_hat[b] @ m_tb / tau)
            denominator = negatives + positive if form == "infonce" else negatives
            terms.append(-torch.log(positive / denominator))
    return torch.stack(terms).mean()


def naive_objective(losses: Sequence[Tensor], reps: Sequence[Tensor], config: RepMTLConfig) -> Tensor:
    """``sum_t l_t + lambda_tsr L_tsr + lambda_csa L_csa`` with the naive terms.

    Args:
        losses: ``T`` scalar batch-mean task losses.
        reps: ``T`` representations ``(B, C, ...)`` that the losses were computed from (NOT detached: the
            same encoder output for single-input problems, each task's own for multi-input ones).
        config: hyper-parameters (every field but ``global_negatives``, which needs several processes).
    """
    objectives = [torch.log(l + LOG_EPS) if config.log_loss else l for l in losses]
    total = sum(objectives)
    if config.lambda_tsr == 0 and config.lambda_csa == 0:
        return total
    # saliency_loss: "raw" differentiates L_t itself; "objective" (or log_loss off) differentiates l_t.
    saliency_of = list(losses) if config.log_loss and config.saliency_loss == "raw" else objectives
    saliencies = naive_saliencies(saliency_of, reps)
    batch = min(s.shape[0] for s in saliencies)
    saliencies = [s[:batch] for s in saliencies]
    if config.lambda_tsr > 0:
        total = total + config.lambda_tsr * naive_tsr(saliencies, config.tsr_channel_mean)
    if config.lambda_csa > 0 and batch > 1:
        total = total + config.lambda_csa * naive_csa(saliencies, config.tau, config.csa_form)
    return total


def materialised_csa(saliencies: Sequence[Tensor], tau: float, form: str = "printed") -> Tensor:
    """``L_csa`` with every ``C x C`` matrix formed, vectorised over samples and tasks.

    The cost baseline of ``benchmarks/step_cost.py`` ("naive" formulation); equal to :func:`naive_csa`.
    """
    if form not in CHOICES["csa_form"]:
        raise ValueError(f"unknown CSA form {form!r}; allowed: {CHOICES['csa_form']}")
    batch, channels = saliencies[0].shape[:2]
    s = torch.stack([x.reshape(batch, channels, -1) for x in saliencies])  # T, B, C, N
    anchors = s.mean(dim=-1).permute(1, 2, 0)  # B, C, T
    a_hat = (anchors @ anchors.transpose(1, 2)).reshape(batch, -1)  # B, C*C
    a_hat = a_hat / a_hat.norm(dim=1, keepdim=True)
    m = (s @ s.transpose(2, 3)).reshape(s.shape[0], batch, -1)  # T, B, C*C
    m = m / m.norm(dim=2, keepdim=True)
    pos = (a_hat.unsqueeze(0) * m).sum(dim=2)  # T, B
    neg = a_hat @ a_hat.T  # B, B
    eye = torch.eye(batch, dtype=torch.bool, device=neg.device)
    log_den = torch.logsumexp((neg / tau).masked_fill(eye, float("-inf")), dim=1).unsqueeze(0)
    if form == "infonce":
        log_den = torch.logaddexp(pos / tau, log_den)
    return (-pos / tau + log_den).mean()


def materialised_tsr(saliencies: Sequence[Tensor], channel_mean: str = "signed") -> Tensor:
    """``L_tsr`` vectorised straight from the formula (no guards; assumes no all-zero position)."""
    if channel_mean not in CHOICES["tsr_channel_mean"]:
        raise ValueError(f"unknown channel_mean {channel_mean!r}; allowed: {CHOICES['tsr_channel_mean']}")
    per_channel = [x.abs() if channel_mean == "abs" else x for x in saliencies]
    mags = torch.stack([x.mean(dim=1).abs().reshape(-1) for x in per_channel])  # T, B*N
    p = mags / mags.sum(dim=0, keepdim=True)
    return -(p * torch.log(p)).sum(dim=0).mean()
