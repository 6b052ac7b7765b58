"""Device choice for LibMTL's ``Trainer`` (``device=``, ``$LIBMTL_DEVICE``, ``auto``)."""

from __future__ import annotations

import os
from typing import Any

#: Environment variable naming the device of LibMTL's ``Trainer`` (``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``).
DEVICE_ENV = "LIBMTL_DEVICE"


def resolve_device(spec: Any = None) -> Any:
    """The ``torch.device`` for LibMTL's ``Trainer``.

    Args:
        spec: ``None`` (use ``$LIBMTL_DEVICE``, default ``auto``), ``"auto"`` (CUDA when available, else
            CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``, any ``torch.device`` string, or a ``torch.device``.

    Raises:
        ValueError: malformed device string, or CUDA requested where it is not available (the message says
            how to choose another device).
    """
    import torch

    if spec is None:
        spec = os.environ.get(DEVICE_ENV, "").strip() or "auto"
    if isinstance(spec, torch.device):
        device = spec
    else:
        text = str(spec).strip().lower()
        if text == "auto":
            return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
        try:
            device = torch.device(text)
        except RuntimeError as exc:
            raise ValueError(f"invalid device {spec!r} (use auto, cpu, cuda or cuda:N; ${DEVICE_ENV})") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r} requested but CUDA is not available; use device='cpu' "
                             f"or {DEVICE_ENV}=cpu (or auto)")
        index = 0 if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r} requested but only {torch.cuda.device_count()} CUDA "
                             f"device(s) are visible")
        device = torch.device("cuda", index)
    return device
