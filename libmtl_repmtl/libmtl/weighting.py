"""``RepMTL``: the Rep-MTL method as a LibMTL weighting.

Equal weighting of the task objectives (``log(L_t + 1e-8)`` by default) plus the TSR and CSA
regularisers on the task saliencies. Hyper-parameters arrive as LibMTL ``weight_args``:
``RepMTL_lambda_tsr``, ``RepMTL_lambda_csa``, ``RepMTL_tau``, ``RepMTL_log_loss``
(``RepMTL_global_negatives`` for distributed training).

Works with LibMTL's ``HPS`` (with or without ``--rep_grad``: without it, RepMTL switches the capture of
the representation on at model construction) and with ``RepHPS`` (recommended: one encoder backward,
float32 saliencies under autocast). Other architectures are refused at model construction.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

import numpy as np
from torch import Tensor

from libmtl_repmtl.core.config import RepMTLConfig
from libmtl_repmtl.core.csa import GatherFn
from libmtl_repmtl.core.objective import repmtl_backward
from libmtl_repmtl.libmtl.bases import AbsWeighting, LibMTL

logger = logging.getLogger("libmtl_repmtl")

_DEFAULTS = RepMTLConfig()


def _bool_arg(text: str) -> bool:
    value = text.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"expected true/false (or 1/0), got {text!r}")


class RepMTL(AbsWeighting):  # type: ignore[misc, valid-type]
    """Rep-MTL (Wang, Li, Xu, ICCV 2025) as a LibMTL weighting.

    ``backward(losses, **weight_args)``: ``losses`` is the ``(T,)`` tensor of batch-mean task losses.
    It accumulates the gradient of ``L = sum_t l_t + lambda_tsr L_tsr + lambda_csa L_csa`` into ``.grad``
    of the heads and the encoder (the encoder traversed once), stores per-step diagnostics in
    ``self.repmtl_stats`` and returns the ``(T,)`` task weights (all ones: equal weighting).
    """

    #: The representation must be captured (``RepHPS`` reads this flag).
    needs_rep = True

    #: One scalar objective per step (TSR and CSA are functions of the batch): DDP's averaged gradient is its
    #: gradient over the global batch (read by ``libmtl_repmtl.libmtl.capabilities.ddp_compatible``).
    ddp_compatible = True

    #: Set by distributed trainers to draw CSA negatives from the global batch.
    repmtl_gather: GatherFn | None = None

    # ------------------------------------------------------------------ plugin protocol (host)
    @classmethod
    def libmtl_add_args(cls, parser: argparse.ArgumentParser) -> None:
        """Add ``--RepMTL_lambda_tsr``, ``--RepMTL_lambda_csa``, ``--RepMTL_tau``, ``--RepMTL_log_loss``."""
        group = parser.add_argument_group("RepMTL")
        group.add_argument("--RepMTL_lambda_tsr", type=float, default=_DEFAULTS.lambda_tsr,
                           help="weight of the TSR entropy term (default %(default)s; 0 = off)")
        group.add_argument("--RepMTL_lambda_csa", type=float, default=_DEFAULTS.lambda_csa,
                           help="weight of the CSA contrastive term (default %(default)s; 0 = off)")
        group.add_argument("--RepMTL_tau", type=float, default=_DEFAULTS.tau,
                           help="CSA temperature (default %(default)s)")
        group.add_argument("--RepMTL_log_loss", type=_bool_arg, default=_DEFAULTS.log_loss,
                           help="task objective log(L_t + 1e-8) (default %(default)s)")
        group.add_argument("--RepMTL_global_negatives", type=_bool_arg, default=_DEFAULTS.global_negatives,
                           help="distributed: CSA negatives from the global batch (default %(default)s)")

    @classmethod
    def libmtl_args(cls, params: argparse.Namespace) -> dict[str, Any]:
        """The ``weight_args`` from parsed flags (validated; defaults where a flag is absent)."""
        raw = {k: getattr(params, k) for k in RepMTLConfig().to_weight_args() if hasattr(params, k)}
        return RepMTLConfig.from_weight_args(raw).to_weight_args()

    # ------------------------------------------------------------------ LibMTL weighting API
    def init_param(self) -> None:
        """Check the architecture at model construction and prepare the state."""
        super().init_param()
        self.repmtl_stats: dict[str, Any] = {}
        self._repmtl_step = 0
        if getattr(self, "captures_rep", False):
            return
        if isinstance(self, LibMTL.architecture.HPS):
            if not self.rep_grad:
                # LibMTL's HPS hands heads detached copies only with rep_grad: switch it on.
                self.rep_grad = True
                self.rep, self.rep_tasks = {}, {}
                logger.info("RepMTL: capturing the shared representation (as with --rep_grad)")
            return
        raise ValueError(
            f"RepMTL regularises the shared representation of hard parameter sharing; architecture "
            f"{type(self).__mro__[1].__name__!r} is not supported. Use --arch RepHPS (recommended) or "
            "--arch HPS (with or without --rep_grad)."
        )

    def backward(self, losses: Tensor, **kwargs: Any) -> np.ndarray:  # type: ignore[override]
        """Backpropagate the regularised objective; return ``(T,)`` ones (equal weighting)."""
        config = RepMTLConfig.from_weight_args(kwargs)
        copies, sources = self._captured()
        gather = self.repmtl_gather if config.global_negatives else None
        terms = repmtl_backward(losses, sources, copies, config, self.task_name, self._repmtl_step, gather)
        self.repmtl_stats = {"step": self._repmtl_step, **terms.stats()}
        self._repmtl_step += 1
        # Release the step's graph references early.
        self.rep, self.rep_tasks = {}, {}
        return np.ones(self.task_num)

    def _captured(self) -> tuple[list[Tensor], list[Tensor]]:
        missing = [t for t in self.task_name if t not in getattr(self, "rep_tasks", {})]
        if missing:
            raise RuntimeError(
                f"RepMTL: no captured representation for task(s) {missing}: run the model's forward pass "
                "for every task, with gradients enabled, before backward (LibMTL's Trainer does this)"
            )
        copies = [self.rep_tasks[t] for t in self.task_name]
        if isinstance(self.rep, dict):
            sources = [self.rep[t] for t in self.task_name]
        else:
            sources = [self.rep] * self.task_num
        return copies, sources


__all__ = ["RepMTL"]
