"""A literal, slow reading of the Rep-MTL formulas: the reference the fast path is tested against.

Everything here follows ``docs/method.md`` step by step: per-position loops over tasks, explicit
``C x C`` affinity matrices, and one saliency backward pass per task. Use it in float64 on small models;
never in training.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from libmtl_repmtl.core.config import LOG_EPS, RepMTLConfig


def naive_saliencies(objectives: Sequence[Tensor], reps: Sequence[Tensor]) -> list[Tensor]:
    """``S_t = d l_t / d Z_t``, one ``autograd.grad`` per task, graph kept. ``reps[t]``: ``(B, C, ...)``."""
    return [torch.autograd.grad(l, z, create_graph=True)[0] for l, z in zip(objectives, reps)]


def naive_tsr(saliencies: Sequence[Tensor]) -> Tensor:
    """``L_tsr`` by its definition (positions enumerated; assumes no all-zero position)."""
    num_tasks = len(saliencies)
    if num_tasks < 2:
        return saliencies[0].sum() * 0.0
    channel_means = [s.mean(dim=1).reshape(-1) for s in saliencies]  # T x (B*N)
    entropies = []
    for i in range(channel_means[0].numel()):
        mags = [m[i].abs() for m in channel_means]
        total = sum(mags)
        h = 0.0
        for mag in mags:
            p = mag / total
            h = h - p * torch.log(p)
        entropies.append(h)
    return torch.stack(entropies).mean()


def naive_csa(saliencies: Sequence[Tensor], tau: float) -> Tensor:
    """``L_csa`` by its definition, materialising every ``C x C`` matrix."""
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
        denominator = sum(torch.exp(anchors_hat[b] @ anchors_hat[k] / tau) for k in range(batch) if k != b)
        for m_tb in task_affinities[b]:
            terms.append(-torch.log(torch.exp(anchors_hat[b] @ m_tb / tau) / denominator))
    return torch.stack(terms).mean()


def naive_objective(losses: Sequence[Tensor], reps: Sequence[Tensor], config: RepMTLConfig) -> Tensor:
    """``sum_t l_t + lambda_tsr L_tsr + lambda_csa L_csa`` with the naive terms.

    Args:
        losses: ``T`` scalar batch-mean task losses.
        reps: ``T`` representations ``(B, C, ...)`` that the losses were computed from (NOT detached: the
            same encoder output for single-input problems, each task's own for multi-input ones).
        config: hyper-parameters.
    """
    objectives = [torch.log(l + LOG_EPS) if config.log_loss else l for l in losses]
    total = sum(objectives)
    if config.lambda_tsr == 0 and config.lambda_csa == 0:
        return total
    saliencies = naive_saliencies(objectives, reps)
    batch = min(s.shape[0] for s in saliencies)
    saliencies = [s[:batch] for s in saliencies]
    if config.lambda_tsr > 0:
        total = total + config.lambda_tsr * naive_tsr(saliencies)
    if config.lambda_csa > 0 and batch > 1:
        total = total + config.lambda_csa * naive_csa(saliencies, config.tau)
    return total


def materialised_csa(saliencies: Sequence[Tensor], tau: float) -> Tensor:
    """``L_csa`` with every ``C x C`` matrix formed, vectorised over samples and tasks.

    The cost baseline of ``benchmarks/step_cost.py`` ("naive" formulation); equal to :func:`naive_csa`.
    """
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
    log_den = torch.logsumexp((neg / tau).masked_fill(eye, float("-inf")), dim=1)
    return (-pos / tau + log_den.unsqueeze(0)).mean()


def materialised_tsr(saliencies: Sequence[Tensor]) -> Tensor:
    """``L_tsr`` vectorised straight from the formula (no guards; assumes no all-zero position)."""
    mags = torch.stack([x.mean(dim=1).abs().reshape(-1) for x in saliencies])  # T, B*N
    p = mags / mags.sum(dim=0, keepdim=True)
    return -(p * torch.log(p)).sum(dim=0).mean()
