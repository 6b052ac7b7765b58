"""CSA: cross-task saliency alignment (a sample-wise contrastive term, minimised).

For sample ``b`` let ``S_tb`` be ``S_t[b]`` as a ``C x N`` matrix and ``A_b = [mean_n S_1b, ..., mean_n S_Tb]``
(``C x T``). Task affinity ``M_tb = S_tb S_tb^T``, anchor affinity ``Â_b = A_b A_b^T`` (both ``C x C``),
flattened and L2-normalised to ``m_tb`` and ``a_b``. Positives ``(a_b, m_tb)``, negatives ``(a_b, a_k)``,
``k != b``; cosine similarity, temperature ``tau``::

    L_csa = mean_{b,t} -log( exp(a_b.m_tb / tau) / D_tb )

with ``D_tb = sum_{k != b} exp(a_b.a_k / tau)`` as printed (``form="printed"``) or, as in SimCLR's NT-Xent
(``form="infonce"``), ``D_tb = exp(a_b.m_tb / tau) + sum_{k != b} exp(a_b.a_k / tau)`` (the positive pair in
the denominator too: its gradient on the positive vanishes once the positive wins; the printed one's never does).

No ``C x C`` matrix is ever formed: every quantity is a Frobenius product with a cheap form,

* ``<Â_b, M_tb> = ||A_b^T S_tb||^2``                  (``T x N``),
* ``||M_tb||    = ||S_tb^T S_tb||`` or ``||S_tb S_tb^T||`` (the smaller of ``N x N`` and ``C x C``),
* ``||Â_b||     = ||A_b^T A_b||``                       (``T x T``),
* ``<Â_b, Â_k> = ||A_b^T A_k||^2``                     (``T x T``).

A zero affinity matrix has no direction: its cosines are defined as 0 (no NaN, no gradient).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from libmtl_repmtl.core.config import CHOICES
from libmtl_repmtl.core.saliency import global_rescale, stack_saliencies, warn_once

#: Gathers a per-rank tensor ``(B_local, ...)`` into the global ``(B_global, ...)`` one, keeping gradients
#: for the local slice, and returns ``(global_tensor, offset_of_local_slice)``.
GatherFn = Callable[[Tensor], tuple[Tensor, int]]


def _safe_sqrt(x: Tensor) -> Tensor:
    ok = x > 0
    return torch.where(ok, torch.sqrt(torch.where(ok, x, torch.ones_like(x))), torch.zeros_like(x))


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    ok = den > 0
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(num))


def unit_max(x: Tensor, dims: tuple[int, ...]) -> Tensor:
    """``x`` divided by its detached max absolute entry over ``dims`` (kept as is where that is 0).

    Every CSA cosine is invariant to a positive scale of either of its arguments, so this is exact (value and
    gradient) for the pieces it is applied to: each sample's anchor ``A_b`` and each task-sample saliency
    ``S_tb`` of the positives. It keeps their second and fourth powers, and the derivatives of the cosines
    (which carry ``1 / norm^2``), inside float32's range when one sample's or task's saliency is many orders of
    magnitude below the batch's largest (a confidently classified sample, after a global rescale).
    """
    scale = x.detach().abs().amax(dim=dims, keepdim=True)
    return x / torch.where(scale > 0, scale, torch.ones_like(scale))


def affinity_norms(stacked: Tensor) -> Tensor:
    """``||M_tb||_F`` for all tasks and samples without forming ``C x C`` matrices.

    Args:
        stacked: ``(T, B, C, N)``.

    Returns:
        ``(T, B)``.
    """
    channels, positions = stacked.shape[-2], stacked.shape[-1]
    if positions <= channels:
        gram = torch.einsum("tbcn,tbcm->tbnm", stacked, stacked)
    else:
        gram = torch.einsum("tbcn,tbdn->tbcd", stacked, stacked)
    return _safe_sqrt(gram.pow(2).sum(dim=(-2, -1)))


def csa_similarities(stacked: Tensor, gather: GatherFn | None = None) -> tuple[Tensor, Tensor, int]:
    """Positive and negative cosine similarities of CSA.

    Args:
        stacked: ``(T, B, C, N)`` saliencies (globally rescaled or not: cosines are scale-invariant).
        gather: optional distributed gather of the anchors (see :data:`GatherFn`); negatives are then
            drawn from the global batch.

    Returns:
        ``pos`` ``(T, B)`` with ``cos(a_b, m_tb)``; ``neg`` ``(B, B_all)`` with ``cos(a_b, a_k)`` against
        every anchor ``k`` of the (global) batch; ``offset``: the index in ``B_all`` of local sample 0.
    """
    # Each cosine is scale-free in each argument: the anchors per sample and the saliencies per task and
    # sample are brought to a max entry of 1 (exact, see unit_max) before any square is taken.
    anchors = unit_max(stacked.mean(dim=-1).permute(1, 2, 0), dims=(1, 2))  # (B, C, T)
    per_task = unit_max(stacked, dims=(2, 3))  # (T, B, C, N)
    # <Â_b, M_tb> = ||A_b^T S_tb||^2
    proj = torch.einsum("bcs,tbcn->tbsn", anchors, per_task)
    pos_num = proj.pow(2).sum(dim=(-2, -1))  # (T, B)
    m_norm = affinity_norms(per_task)  # (T, B)
    a_norm = _safe_sqrt(torch.einsum("bcs,bcu->bsu", anchors, anchors).pow(2).sum(dim=(-2, -1)))  # (B,)
    pos = _safe_div(pos_num, a_norm.unsqueeze(0) * m_norm)

    offset = 0
    all_anchors, all_norms = anchors, a_norm
    if gather is not None:
        all_anchors, offset = gather(anchors)
        all_norms, _ = gather(a_norm)
    # <Â_b, Â_k> = ||A_b^T A_k||^2
    cross = torch.einsum("bcs,kcu->bksu", anchors, all_anchors).pow(2).sum(dim=(-2, -1))  # (B, B_all)
    neg = _safe_div(cross, a_norm.unsqueeze(1) * all_norms.unsqueeze(0))
    return pos, neg, offset


def csa_loss(
    saliencies: Sequence[Tensor] | Tensor,
    tau: float = 0.1,
    gather: GatherFn | None = None,
    form: str = "printed",
) -> Tensor:
    """The CSA contrastive term ``L_csa``.

    Args:
        saliencies: ``T`` tensors ``(B, C, *spatial)`` (or ``(B, C)``), or a stacked ``(T, B, C, N)``.
        tau: temperature (> 0).
        gather: optional distributed gather of anchors for global negatives (see :func:`csa_similarities`).
        form: ``"printed"`` (denominator: the negatives only) or ``"infonce"`` (the positive pair too).

    Returns:
        Scalar, in at least float32. With a (global) batch of 1 there are no negatives: the term is skipped
        (0, warned once), never NaN.
    """
    if tau <= 0:
        raise ValueError(f"CSA temperature tau must be > 0, got {tau}")
    if form not in CHOICES["csa_form"]:
        raise ValueError(f"CSA form must be one of {CHOICES['csa_form']}, got {form!r}")
    stacked = saliencies if isinstance(saliencies, Tensor) else stack_saliencies(saliencies)
    stacked = global_rescale(stacked)
    pos, neg, offset = csa_similarities(stacked, gather)
    if neg.shape[1] < 2:
        warn_once("csa-batch-1", "Rep-MTL: batch of 1 sample has no CSA negatives; the CSA term is skipped")
        return stacked.sum() * 0.0
    return contrastive_terms(pos, neg, offset, tau, form).mean()


def contrastive_terms(pos: Tensor, neg: Tensor, offset: int, tau: float, form: str = "printed") -> Tensor:
    """Per-pair CSA terms ``-log( exp(pos_tb / tau) / D_tb )`` from the cosine similarities.

    Args:
        pos: ``(T, B)`` positive cosines ``a_b.m_tb``.
        neg: ``(B, B_all)`` cosines ``a_b.a_k`` against every anchor of the (global) batch, ``B_all >= 2``.
        offset: the column of ``neg`` holding local sample 0 (its own anchor, excluded from the negatives).
        tau: temperature (> 0).
        form: ``"printed"`` (``D_tb``: the negatives) or ``"infonce"`` (the negatives and the positive).

    Returns:
        ``(T, B)``. Their derivative w.r.t. ``pos`` is ``-1/tau`` (printed) or ``-(1 - p_tb)/tau`` (infonce,
        ``p_tb`` the softmax weight of the positive).
    """
    batch = neg.shape[0]
    self_mask = torch.zeros_like(neg, dtype=torch.bool)
    self_mask[torch.arange(batch), torch.arange(batch) + offset] = True
    logits = (neg / tau).masked_fill(self_mask, float("-inf"))
    log_negatives = torch.logsumexp(logits, dim=1).unsqueeze(0)  # (1, B)
    log_denominator = torch.logaddexp(pos / tau, log_negatives) if form == "infonce" else log_negatives
    return -pos / tau + log_denominator


__all__ = ["GatherFn", "affinity_norms", "contrastive_terms", "csa_loss", "csa_similarities", "unit_max"]
