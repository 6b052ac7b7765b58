"""Mixed precision for LibMTL-style training: ``torch.autocast`` and an exact GradScaler path for weightings
that call ``.backward()`` themselves (``model.backward(losses, **weight_args)``).

* CUDA: float16 autocast + ``torch.amp.GradScaler`` (``--amp fp16``), or bfloat16 without a scaler (``--amp bf16``).
* CPU: bfloat16 autocast, no scaler (bfloat16 has float32's exponent range: nothing underflows).

The network runs in low precision; Rep-MTL's saliency terms stay in float32 (``RepHPS`` hands the heads float32
copies of the representation and the core computes in at least float32).

Why the losses must NOT be multiplied by the scale before ``model.backward``
--------------------------------------------------------------------------
GradScaler's contract is that every gradient is multiplied by the scale ``s``. Handing ``s * L_t`` to a
weighting only achieves that when its objective is homogeneous of degree 1 in the losses (EW, DWA, RLW, GLS).
It is wrong for Rep-MTL: with ``log_loss``, ``log(s L_t)`` differs from ``log(L_t)`` by a constant, so the
gradients are not scaled at all; with raw losses ``sum_t l_t`` scales by ``s`` but TSR and CSA are invariant
to the saliencies' scale, so the step becomes ``s grad(sum l) + grad(regularisers)``. UW's objective
``L_t / (2 e^sigma) + sigma / 2`` is not homogeneous either.

What :func:`scaled_backward` does instead (exact for every weighting listed above)
----------------------------------------------------------------------------------
It runs the weighting's own ``backward`` with every *root* gradient of the autograd calls made inside it
multiplied by ``s``: ``x.backward()`` and ``torch.autograd.grad(y, ...)`` without explicit gradients start from
``s`` instead of 1; calls with explicit gradients (Rep-MTL's push of the copies' gradients into the encoder,
which already hold ``s x``) are left alone. Backward is linear in its root gradient, so

* loss-weighting methods: every gradient is exactly ``s x`` the unscaled one;
* Rep-MTL: the saliency pass yields ``s S_t`` (protected from fp16 underflow inside the heads); TSR and CSA
  are invariant to one global positive scale of the saliencies (the core divides by ``max |S|``), so their
  values and their gradients are unchanged; the backward of the total from root ``s`` then gives
  ``s dL/dtheta`` for the heads and the copies, and the copies push ``s dL/dZ`` into the encoder.

So ``.grad`` holds ``s`` times the fp32 gradient, ``scaler.step`` unscales and skips steps with inf/NaN
gradients, and ``scaler.update`` adapts ``s``. When the scaled saliency pass overflows (Rep-MTL then refuses a
non-finite objective although the losses are finite), :func:`scaled_backward` back-propagates NaN into every
parameter instead, so the scaler skips the step and lowers the scale on every rank (DDP hooks still fire).
The patch of ``torch.autograd.backward`` / ``torch.autograd.grad`` lasts for the call only and is not
thread-safe (one training thread per process, as with torchrun).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from libmtl_repmtl.core.objective import NonFiniteLossError

_DTYPES = {"fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
           "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
_PATCH_LOCK = threading.Lock()


@dataclass(frozen=True)
class AmpConfig:
    """Mixed-precision settings for one device.

    Attributes:
        enabled: autocast on.
        device_type: ``"cuda"`` or ``"cpu"``.
        dtype: the autocast dtype (``None`` when disabled).
        use_scaler: a ``GradScaler`` is needed (float16).
    """

    enabled: bool = False
    device_type: str = "cpu"
    dtype: torch.dtype | None = None
    use_scaler: bool = False

    @classmethod
    def for_device(cls, device: str | torch.device, enabled: bool = True,
                   dtype: str | torch.dtype | None = None) -> AmpConfig:
        """Choose the precision: CUDA float16 + scaler (or bfloat16 when asked), CPU bfloat16.

        Raises:
            ValueError: an unknown dtype, float16 on the CPU, or bfloat16 on a GPU without bfloat16 support.
        """
        dev = torch.device(device)
        if not enabled:
            return cls(False, dev.type, None, False)
        if isinstance(dtype, str):
            if dtype.lower() not in _DTYPES:
                raise ValueError(f"unknown AMP dtype {dtype!r}; use fp16 or bf16")
            dtype = _DTYPES[dtype.lower()]
        if dev.type == "cuda":
            chosen = dtype or torch.float16
            if chosen == torch.bfloat16 and not torch.cuda.is_bf16_supported():
                raise ValueError("this GPU does not support bfloat16; use --amp fp16 (float16 with a GradScaler)")
        elif dev.type == "cpu":
            chosen = dtype or torch.bfloat16
            if chosen != torch.bfloat16:
                raise ValueError("CPU mixed precision uses bfloat16 (float16 with a GradScaler needs CUDA); use "
                                 "--amp bf16 on the CPU, or --amp none for float32")
        else:
            raise ValueError(f"mixed precision on device type {dev.type!r} is not supported; use cuda or cpu")
        if chosen not in (torch.float16, torch.bfloat16):
            raise ValueError(f"AMP dtype must be float16 or bfloat16, got {chosen}")
        return cls(True, dev.type, chosen, chosen == torch.float16)


    @classmethod
    def from_flag(cls, device: str | torch.device, flag: str | AmpConfig | None) -> AmpConfig:
        """The config of the ``--amp`` flag: ``"none"`` (float32; also ``None``), ``"bf16"`` or ``"fp16"``
        (an :class:`AmpConfig` is returned as it is).

        Raises:
            ValueError: an unknown value, or one the device does not support (fp16 on the CPU).
        """
        if isinstance(flag, AmpConfig):
            return flag
        name = "none" if flag is None else str(flag).strip().lower()
        if name in ("none", "off", "fp32", "float32"):
            return cls.for_device(device, enabled=False)
        if name not in _DTYPES:
            raise ValueError(f"unknown --amp value {flag!r}; choose from {AMP_CHOICES}")
        return cls.for_device(device, True, name)


#: Values of the ``--amp`` flag.
AMP_CHOICES = ("none", "bf16", "fp16")


def add_amp_args(parser: Any) -> None:
    """Add ``--amp none|bf16|fp16`` (default ``none``) to an ``argparse`` parser."""
    parser.add_argument("--amp", choices=AMP_CHOICES, default="none",
                        help="mixed precision: none (float32, default), bf16 (CPU or CUDA, no scaler) or fp16 (CUDA "
                             "only, with a GradScaler); Rep-MTL's saliency terms stay float32")


def autocast_context(device: str | torch.device, enabled: bool = True,
                     dtype: str | torch.dtype | None = None) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` for the forward pass and the loss computation (a no-op context when disabled).

    Run the weighting's ``backward`` OUTSIDE this context (autograd replays the recorded dtypes anyway)."""
    cfg = AmpConfig.for_device(device, enabled, dtype)
    if not cfg.enabled:
        return contextlib.nullcontext()
    return torch.autocast(cfg.device_type, dtype=cfg.dtype)


def make_grad_scaler(config: AmpConfig, init_scale: float = 2.0**16) -> torch.amp.GradScaler | None:
    """A ``torch.amp.GradScaler`` when ``config`` needs one (float16), else ``None``."""
    if not (config.enabled and config.use_scaler):
        return None
    return torch.amp.GradScaler(config.device_type, init_scale=init_scale)


@contextlib.contextmanager
def scale_backward_roots(scale: float | Tensor) -> Iterator[None]:
    """Within the block, ``x.backward()`` / ``torch.autograd.backward(xs)`` / ``torch.autograd.grad(ys, ...)``
    without explicit gradients start from ``scale`` instead of 1 (explicit gradients are left alone)."""
    orig_backward, orig_grad = torch.autograd.backward, torch.autograd.grad

    def roots(tensors: Any, grads: Any) -> Any:
        ts = [tensors] if torch.is_tensor(tensors) else list(tensors)
        if grads is None:
            gs: list[Any] = [None] * len(ts)
        else:
            gs = [grads] if torch.is_tensor(grads) else list(grads)
        return [torch.as_tensor(scale, dtype=t.dtype, device=t.device).expand_as(t) if g is None else g
                for t, g in zip(ts, gs)]

    def backward(tensors: Any, grad_tensors: Any = None, *args: Any, **kwargs: Any) -> Any:
        return orig_backward(tensors, roots(tensors, grad_tensors), *args, **kwargs)

    def grad(outputs: Any, inputs: Any, grad_outputs: Any = None, *args: Any, **kwargs: Any) -> Any:
        return orig_grad(outputs, inputs, roots(outputs, grad_outputs), *args, **kwargs)

    with _PATCH_LOCK:
        torch.autograd.backward = backward  # the patch lasts for the block only
        torch.autograd.grad = grad
        try:
            yield
        finally:
            torch.autograd.backward = orig_backward
            torch.autograd.grad = orig_grad


def _poison_gradients(params: Sequence[nn.Parameter]) -> None:
    """Back-propagate NaN into every parameter (one backward: DDP's hooks fire once each)."""
    total = sum((p.sum() for p in params), torch.zeros((), device=params[0].device))
    (total * float("nan")).backward()


def scaled_backward(model: nn.Module, losses: Tensor, scaler: torch.amp.GradScaler | None,
                    **weight_args: Any) -> Any:
    """The weighting's ``backward`` with GradScaler semantics: afterwards ``.grad`` holds ``s`` times the
    unscaled gradient (``s = scaler.get_scale()``), for Rep-MTL and the loss-weighting methods alike.

    Args:
        model: the composed LibMTL model (or its DDP wrapper).
        losses: ``(T,)`` task losses (float32; compute them under autocast, then call this outside it).
        scaler: a GradScaler, or ``None``/disabled (then this is ``model.backward(losses, **weight_args)``).
        weight_args: LibMTL's ``weight_args``.

    Returns:
        What ``model.backward`` returns (the task weights). Follow with ``scaler.step(optimizer)`` and
        ``scaler.update()`` (``scaler.unscale_(optimizer)`` first if you clip gradients).
    """
    if scaler is None or not scaler.is_enabled():
        return model.backward(losses, **weight_args)
    scale = scaler.scale(torch.ones((), device=losses.device, dtype=torch.float32))  # initialises the scale
    try:
        with scale_backward_roots(scale.detach()):
            weights = model.backward(losses, **weight_args)
    except NonFiniteLossError:
        if not bool(torch.isfinite(losses.detach()).all()):
            raise  # the data or the model diverged: not an overflow of the scaled gradients
        _poison_gradients([p for p in model.parameters() if p.requires_grad])
        return None
    stats = getattr(model, "repmtl_stats", None)
    if isinstance(stats, dict) and stats.get("saliency_norms"):
        s = float(scale)
        stats["saliency_norms"] = [v / s for v in stats["saliency_norms"]]  # report unscaled saliencies
    return weights


__all__ = ["AMP_CHOICES", "AmpConfig", "add_amp_args", "autocast_context", "make_grad_scaler", "scale_backward_roots",
           "scaled_backward"]
