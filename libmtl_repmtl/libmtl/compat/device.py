"""The one device resolver: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` | a ``torch.device`` -> ``torch.device``.

Our trainer uses it (:mod:`libmtl_repmtl.training.device` re-exports it) and so does LibMTL's own ``Trainer``
under the ``trainer-device`` patch (``Trainer(device=...)``, else ``$LIBMTL_DEVICE``).
"""

from __future__ import annotations

import os
from typing import Any

#: Environment variable naming the device of LibMTL's ``Trainer`` (``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``).
DEVICE_ENV = "LIBMTL_DEVICE"

_CHOICES = "use 'auto', 'cpu', 'cuda' or 'cuda:N'"


def resolve_device(spec: Any = None) -> Any:
    """Turn a device request into a ``torch.device``.

    Args:
        spec: ``"auto"``: the current CUDA device (index 0 unless changed) when CUDA is available, else the
            CPU; ``"cpu"``; ``"cuda"`` (the current CUDA device); ``"cuda:N"``; a ``torch.device``; or ``None``:
            ``$LIBMTL_DEVICE``, else ``auto``. Strings are read case-insensitively.

    Returns:
        The device, with an explicit index for CUDA.

    Raises:
        ValueError: the request names an unknown device type or one other than CPU and CUDA, or CUDA is
            requested but not available, or the index is out of range (the message names the devices that
            exist and how to choose another).
    """
    import torch  # here, not at the top: the compatibility layer is imported before torch (pre-import patches)

    if spec is None:
        spec = os.environ.get(DEVICE_ENV, "").strip() or "auto"
    if isinstance(spec, str) and spec.strip().lower() == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = spec if isinstance(spec, torch.device) else torch.device(str(spec).strip().lower())
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {spec!r} (an invalid device string for torch); {_CHOICES}") from None
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type != "cuda":
        raise ValueError(f"device type {dev.type!r} is not supported; {_CHOICES}")
    if not torch.cuda.is_available():
        raise ValueError(f"device {str(spec)!r} requested but CUDA is not available on this machine "
                         f"(torch {torch.__version__}, built with CUDA {torch.version.cuda}); use --device cpu or "
                         f"--device auto (LibMTL's Trainer: device='cpu' or {DEVICE_ENV}=cpu)")
    count = torch.cuda.device_count()
    index = torch.cuda.current_device() if dev.index is None else dev.index
    if not 0 <= index < count:
        raise ValueError(f"device cuda:{index} requested but only {count} CUDA device(s) exist "
                         f"(cuda:0 .. cuda:{count - 1})")
    return torch.device("cuda", index)


__all__ = ["DEVICE_ENV", "resolve_device"]
