"""Explicit device selection for training (LibMTL 1.1.5 hard-codes ``cuda:0``)."""

from __future__ import annotations

import torch


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """Turn a device request into a ``torch.device``.

    Args:
        spec: ``"auto"`` (or ``None``): CUDA device 0 when CUDA is available, else the CPU; ``"cpu"``;
            ``"cuda"`` (the current CUDA device, index 0 unless changed); ``"cuda:N"``; or a ``torch.device``.

    Returns:
        The device, with an explicit index for CUDA.

    Raises:
        ValueError: the request names an unknown device type, or CUDA is requested but not available, or
            the index is out of range (the message names the devices that exist and how to choose another).
    """
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "auto"):
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(spec.strip() if isinstance(spec, str) else spec)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"unknown device {spec!r} ({exc}); use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type != "cuda":
        raise ValueError(f"device type {dev.type!r} is not supported by the trainer; use 'auto', 'cpu', 'cuda' "
                         "or 'cuda:N'")
    if not torch.cuda.is_available():
        raise ValueError(f"device {str(spec)!r} requested but CUDA is not available on this machine "
                         f"(torch {torch.__version__}, built with CUDA {torch.version.cuda}); "
                         "use --device cpu or --device auto")
    count = torch.cuda.device_count()
    index = torch.cuda.current_device() if dev.index is None else dev.index
    if not 0 <= index < count:
        raise ValueError(f"device cuda:{index} requested but only {count} CUDA device(s) exist "
                         f"(cuda:0 .. cuda:{count - 1})")
    return torch.device("cuda", index)


__all__ = ["resolve_device"]
