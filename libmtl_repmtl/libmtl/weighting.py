"""``RepMTL``: the Rep-MTL method as a LibMTL weighting.

Equal weighting of the task objectives (``log(L_t + 1e-8)`` by default) plus the TSR and CSA
regularisers on the task saliencies. Hyper-parameters arrive as LibMTL ``weight_args``, one
``RepMTL_<field>`` key per field of :class:`~libmtl_repmtl.core.config.RepMTLConfig` (``RepMTL_lambda_tsr``,
``RepMTL_lambda_csa``, ``RepMTL_tau``, ``RepMTL_log_loss``, ``RepMTL_csa_form``, ``RepMTL_saliency_loss``,
``RepMTL_tsr_channel_mean``; ``RepMTL_global_negatives`` for distributed training); the flags
``--RepMTL_<field>`` are built from the same fields. An unknown ``RepMTL_*`` key is an error naming the known
ones. The weighting parses its ``weight_args`` once and holds the result (``repmtl_config``); a step re-parses
only when the ``weight_args`` it receives differ from the ones parsed.

Works with LibMTL's ``HPS`` (with or without ``--rep_grad``: without it, RepMTL switches the capture of
the representation on at model construction) and with ``RepHPS`` (recommended: one encoder backward,
float32 saliencies under autocast). Other architectures are refused at model construction.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor

from libmtl_repmtl.core.config import (
    CHOICES,
    FIELD_HELP,
    WEIGHT_ARG_PREFIX,
    RepMTLConfig,
    parse_bool,
    weight_arg_keys,
)
from libmtl_repmtl.core.csa import GatherFn
from libmtl_repmtl.core.objective import repmtl_backward
from libmtl_repmtl.libmtl.bases import AbsWeighting, LibMTL

logger = logging.getLogger("libmtl_repmtl")

_DEFAULTS = RepMTLConfig()


def _bool_arg(text: str) -> bool:
    try:
        return parse_bool(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _unchanged(new: Mapping[str, Any], old: Mapping[str, Any]) -> bool:
    """Whether ``new`` holds the same keys and values as ``old`` (identical objects, or equal scalars)."""
    if new.keys() != old.keys():
        return False
    for key, value in new.items():
        if value is old[key]:
            continue
        try:
            if not bool(value == old[key]):
                return False
        except (TypeError, ValueError, RuntimeError):  # e.g. arrays: no single truth value
            return False
    return True


def _flag_options(name: str, default: Any) -> dict[str, Any]:
    """``add_argument`` options of the flag of config field ``name`` (type, choices, help)."""
    if name in CHOICES:
        return {"type": str.lower, "choices": CHOICES[name], "default": default}
    if isinstance(default, bool):
        return {"type": _bool_arg, "default": default}
    return {"type": float, "default": default}


@dataclass(frozen=True)
class _Parsed:
    """The ``weight_args`` last parsed and their config: configuration, held in one non-plain object so that
    trainers that checkpoint a weighting's plain attributes as its state never save or restore half of it."""

    weight_args: dict[str, Any]
    config: RepMTLConfig


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
        """Add one ``--RepMTL_<field>`` flag per :class:`RepMTLConfig` field (defaults: the config's)."""
        group = parser.add_argument_group("RepMTL")
        for key, default in _DEFAULTS.to_weight_args().items():
            name = key[len(WEIGHT_ARG_PREFIX):]
            group.add_argument(f"--{key}", help=FIELD_HELP[name], **_flag_options(name, default))

    @classmethod
    def libmtl_args(cls, params: argparse.Namespace) -> dict[str, Any]:
        """The ``weight_args`` from parsed flags (validated; defaults where a flag is absent)."""
        raw = {k: getattr(params, k) for k in weight_arg_keys() if hasattr(params, k)}
        return RepMTLConfig.from_weight_args(raw).to_weight_args()

    # ------------------------------------------------------------------ LibMTL weighting API
    def init_param(self) -> None:
        """Check the architecture at model construction and prepare the state."""
        super().init_param()
        self.repmtl_stats: dict[str, Any] = {}
        self._repmtl_step = 0
        self._repmtl_parsed: _Parsed | None = None
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
        parsed = self._repmtl_parsed
        if parsed is None or not _unchanged(kwargs, parsed.weight_args):
            config = self.repmtl_configure(kwargs)
        else:
            config = parsed.config
        copies, sources = self._captured()
        gather = self.repmtl_gather if config.global_negatives else None
        terms = repmtl_backward(losses, sources, copies, config, self.task_name, self._repmtl_step, gather)
        self.repmtl_stats = {"step": self._repmtl_step, **terms.stats()}
        self._repmtl_step += 1
        # Release the step's graph references early.
        self.rep, self.rep_tasks = {}, {}
        return np.ones(self.task_num)

    def repmtl_configure(self, weight_args: Mapping[str, Any]) -> RepMTLConfig:
        """Parse ``weight_args`` (validated) into the held ``repmtl_config`` and return it.

        ``backward`` calls it when its ``weight_args`` differ from the last ones parsed (so once per run under
        LibMTL's Trainer); a trainer may call it at construction to fail before the first step.

        Raises:
            ValueError: an unknown ``RepMTL_*`` key or a bad value (the message lists what is allowed).
        """
        config = RepMTLConfig.from_weight_args(weight_args)
        self._repmtl_parsed = _Parsed(dict(weight_args), config)
        return config

    @property
    def repmtl_config(self) -> RepMTLConfig:
        """The config held: the last ``weight_args`` parsed (the defaults before the first step)."""
        parsed = getattr(self, "_repmtl_parsed", None)
        return parsed.config if parsed is not None else _DEFAULTS

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
