"""Precision policies of the training loop: float32, autocast (bfloat16/float16) and float16 with a GradScaler.

The trainer holds one :class:`Precision` and asks it for the two things precision changes:

* :meth:`Precision.forward` runs a training forward (under ``torch.autocast`` when enabled; the outputs are
  cast to float32, so losses and metrics are computed in float32);
* :meth:`Precision.backward_and_step` runs the weighting's ``backward`` and the optimiser step (with a
  GradScaler: :func:`~libmtl_repmtl.training.amp.scaled_backward`, ``scaler.step``, ``scaler.update``).

Its :meth:`~Precision.state_dict` (the GradScaler's state, or ``None``) goes into ``last.pt``.
:func:`precision_for` builds the policy of an ``--amp`` flag (:class:`~libmtl_repmtl.training.amp.AmpConfig`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from libmtl_repmtl.training.amp import AmpConfig, make_grad_scaler, scaled_backward


def float32(value: Any) -> Any:
    """Low-precision floating tensors (in nested dicts/lists/tuples) cast to float32; the rest unchanged."""
    if torch.is_tensor(value):
        return value.float() if value.dtype in (torch.float16, torch.bfloat16) else value
    if isinstance(value, Mapping):
        return {k: float32(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(float32(v) for v in value)
    return value


class Precision:
    """Float32: the forward as it is, the weighting's ``backward`` and a plain optimiser step."""

    #: The mixed-precision settings (disabled here).
    config: AmpConfig = AmpConfig()

    @property
    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """The GradScaler (float16 only)."""
        return None

    def forward(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` (a training forward)."""
        return fn(*args)

    def backward_and_step(self, model: nn.Module, losses: Tensor, optimizer: torch.optim.Optimizer,
                          weight_args: Mapping[str, Any]) -> Any:
        """Zero the gradients (kept allocated), ``model.backward(losses, **weight_args)``, ``optimizer.step()``.
        Returns what the weighting's ``backward`` returns (the task weights)."""
        optimizer.zero_grad(set_to_none=False)
        weights = model.backward(losses, **weight_args)
        optimizer.step()
        return weights

    def state_dict(self) -> dict[str, Any] | None:
        """What ``last.pt`` keeps of the policy (``None``: nothing)."""
        return None

    def load_state_dict(self, state: Mapping[str, Any] | None) -> None:
        """Restore :meth:`state_dict` (nothing to restore here)."""


class Autocast(Precision):
    """``torch.autocast`` for the training forward (bfloat16 on the CPU or CUDA; float16 without a scaler
    only when a caller builds it so); outputs cast to float32; the step as in float32."""

    def __init__(self, config: AmpConfig) -> None:
        if not config.enabled:
            raise ValueError("Autocast needs an enabled AmpConfig; use Precision() for float32")
        self.config = config

    def forward(self, fn: Callable[..., Any], *args: Any) -> Any:
        with torch.autocast(self.config.device_type, dtype=self.config.dtype):
            out = fn(*args)
        return float32(out)


class ScaledFloat16(Autocast):
    """Float16 autocast with a ``GradScaler`` (the exact scaled backward of
    :func:`~libmtl_repmtl.training.amp.scaled_backward`); the scaler's state is checkpointed."""

    def __init__(self, config: AmpConfig) -> None:
        super().__init__(config)
        scaler = make_grad_scaler(config)
        if scaler is None:
            raise ValueError("ScaledFloat16 needs an AmpConfig with use_scaler=True (float16)")
        self._scaler = scaler

    @property
    def grad_scaler(self) -> torch.amp.GradScaler:
        return self._scaler

    def backward_and_step(self, model: nn.Module, losses: Tensor, optimizer: torch.optim.Optimizer,
                          weight_args: Mapping[str, Any]) -> Any:
        """Scaled backward, ``scaler.step(optimizer)`` (skipped on inf/NaN gradients), ``scaler.update()``."""
        optimizer.zero_grad(set_to_none=False)
        weights = scaled_backward(model, losses, self._scaler, **weight_args)
        self._scaler.step(optimizer)
        self._scaler.update()
        return weights

    def state_dict(self) -> dict[str, Any]:
        return self._scaler.state_dict()

    def load_state_dict(self, state: Mapping[str, Any] | None) -> None:
        if state:
            self._scaler.load_state_dict(dict(state))


def precision_for(device: str | torch.device, amp: str | AmpConfig | None) -> Precision:
    """The policy of an ``--amp`` value (``none``/``bf16``/``fp16``) or an :class:`AmpConfig` on ``device``.

    Raises:
        ValueError: an unknown value, or one the device does not support (fp16 on the CPU).
    """
    config = AmpConfig.from_flag(device, amp)
    if not config.enabled:
        return Precision()
    return ScaledFloat16(config) if config.use_scaler else Autocast(config)


__all__ = ["Autocast", "Precision", "ScaledFloat16", "float32", "precision_for"]
