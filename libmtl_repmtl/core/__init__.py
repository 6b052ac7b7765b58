"""The Rep-MTL method core: pure functions, no LibMTL import.

>>> import torch
>>> from libmtl_repmtl.core import RepMTLConfig, regularised_objective
>>> z = torch.randn(4, 8, 3, 3)                       # shared representation, B x C x H x W
>>> copies = [z.detach().clone().requires_grad_() for _ in range(2)]
>>> heads = [torch.nn.Conv2d(8, 1, 1) for _ in range(2)]
>>> losses = torch.stack([heads[t](copies[t]).pow(2).mean() for t in range(2)])
>>> terms = regularised_objective(losses, copies, RepMTLConfig())
>>> terms.total.ndim, tuple(terms.saliencies[0].shape)
(0, (4, 8, 3, 3))
>>> 0.0 <= terms.tsr.item() <= torch.log(torch.tensor(2.0)).item()
True
"""

from libmtl_repmtl.core.config import RepMTLConfig
from libmtl_repmtl.core.csa import affinity_norms, contrastive_terms, csa_loss, csa_similarities
from libmtl_repmtl.core.objective import (
    NonFiniteLossError,
    RepMTLTerms,
    backward_into_encoder,
    check_finite_losses,
    regularised_objective,
    repmtl_backward,
)
from libmtl_repmtl.core.presets import PRESETS, MethodSpec, parse_method, parse_methods
from libmtl_repmtl.core.saliency import global_rescale, stack_saliencies, task_objectives, task_saliencies
from libmtl_repmtl.core.tsr import channel_magnitudes, entropy_map, task_distribution, tsr_entropy_map, tsr_loss

__all__ = [
    "PRESETS",
    "MethodSpec",
    "NonFiniteLossError",
    "RepMTLConfig",
    "RepMTLTerms",
    "affinity_norms",
    "backward_into_encoder",
    "check_finite_losses",
    "contrastive_terms",
    "channel_magnitudes",
    "csa_loss",
    "csa_similarities",
    "entropy_map",
    "global_rescale",
    "parse_method",
    "parse_methods",
    "regularised_objective",
    "repmtl_backward",
    "stack_saliencies",
    "task_distribution",
    "task_objectives",
    "task_saliencies",
    "tsr_entropy_map",
    "tsr_loss",
]
