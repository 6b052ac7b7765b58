"""Shared parts of the compatibility patches: the marker on patched functions, warnings, errors, stubs."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

#: Attribute set on every function/descriptor the patches install (value: the patch name).
MARKER = "__libmtl_repmtl_patch__"


class CompatWarning(UserWarning):
    """A compatibility patch could not be checked or applied (the message says which and why)."""


class MissingDependencyError(ImportError):
    """LibMTL needs a package that is not installed (the message names it and the ``pip`` command)."""


@dataclass(frozen=True)
class PatchInfo:
    """One compatibility patch: its name, phase, and the symptom it cures (the first docstring line)."""

    name: str
    phase: str
    symptom: str


def _marked(obj: Any, name: str) -> bool:
    """True when ``obj`` was installed by the patch ``name``."""
    return getattr(obj, MARKER, None) == name


def _mark(obj: Any, name: str) -> Any:
    """Mark ``obj`` as installed by the patch ``name``; return it."""
    setattr(obj, MARKER, name)
    return obj


_lend_lock = threading.RLock()


@contextlib.contextmanager
def lent_attribute(module: Any, name: str, value: Any) -> Iterator[None]:
    """``module.<name>`` is ``value`` inside the block, and exactly as before afterwards (absent stays absent).

    For the patches that give a LibMTL method back a function its library removed, only while that method runs.
    One block at a time (a re-entrant lock), so two threads never see each other's restore.
    """
    with _lend_lock:
        had = name in module.__dict__
        previous = module.__dict__.get(name)
        setattr(module, name, value)
        try:
            yield
        finally:
            if had:
                setattr(module, name, previous)
            else:
                delattr(module, name)


def lend_while_running(cls: type, method: str, module: Any, name: str, value: Any, patch: str, note: str) -> None:
    """Replace ``cls.<method>`` by a wrapper that runs the original with ``module.<name>`` lent as ``value``
    (:func:`lent_attribute`), marked as installed by ``patch``; ``note`` ends its docstring."""
    original = getattr(cls, method)

    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        with lent_attribute(module, name, value):
            return original(self, *args, **kwargs)

    wrapper.__name__, wrapper.__qualname__ = original.__name__, original.__qualname__
    wrapper.__doc__ = (original.__doc__ or "") + f"\n\nPatched by libmtl_repmtl: {note}"
    wrapper.__wrapped__ = original  # type: ignore[attr-defined]
    setattr(cls, method, _mark(wrapper, patch))


def tiny_parts(libmtl: Any) -> tuple[Any, Any]:
    """A stub weighting-with-encoder class (``Linear(2, 2)``, CPU) for the probes, and ``torch``."""
    import torch
    from torch import nn

    weighting_base = libmtl.weighting.abstract_weighting.AbsWeighting

    class _Holder(weighting_base):  # type: ignore[misc, valid-type]
        def __init__(self, dtype: Any = torch.float32) -> None:
            super().__init__()
            self.encoder = nn.Linear(2, 2).to(dtype)
            self.device = torch.device("cpu")

        def get_share_params(self) -> Any:
            return self.encoder.parameters()

    return _Holder, torch


def probe_step(libmtl: Any, weighting: type, **weight_args: Any) -> None:
    """One training step of a stub 2-task model (LibMTL's ``HPS`` with ``weighting``, ``Linear(2, 2)`` encoder and
    ``Linear(2, 1)`` heads, CPU), for the probes that detect a weighting's symptom by running it: whatever the
    step raises propagates to the caller."""
    import torch  # lazily, like every probe: patches are installed before anything imports torch's models
    from torch import nn

    class _Probe(libmtl.architecture.HPS, weighting):  # type: ignore[misc, valid-type]
        pass

    model = _Probe(["a", "b"], lambda: nn.Linear(2, 2), nn.ModuleDict({"a": nn.Linear(2, 1), "b": nn.Linear(2, 1)}),
                   False, False, torch.device("cpu"))
    model.init_param()
    with torch.enable_grad():
        out = model(torch.ones(3, 2))
        model.backward(torch.stack([out["a"].pow(2).mean(), out["b"].pow(2).mean()]), **weight_args)
