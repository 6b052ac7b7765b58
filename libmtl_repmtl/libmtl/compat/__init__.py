"""Compatibility layer: LibMTL 1.1.5 (PyPI) and LibMTL's git version on current torch / torchvision / Python.

One module per patch (``torchvision_models_utils``, ``trainer_device``, ``process_data_next``,
``reset_grad_none``, ``zero_grad_share_params``, ``grad2vec_device``, ``same_rep``, ``cagrad_task_count``,
``aligned_mtl_symeig``, ``sdmgrad_alltrue``), plus ``device`` (:func:`resolve_device`) and ``dependencies``
(:func:`explain_import_error`); this module is the registry that probes and applies them.

Every patch cures one symptom. It is applied only when the installed LibMTL *shows* that symptom, found by a
small behavioural probe (never by a version string: the git checkout of LibMTL also says 1.1.5), and it is
idempotent (a patched function carries the attribute ``__libmtl_repmtl_patch__``; a second run finds the
marker, or finds the symptom gone, and does nothing). ``docs/compat.md`` lists them all.

Phases:

* pre-import (:func:`apply_pre_import_patches`): before ``LibMTL/__init__.py`` runs (it imports its
  submodules, which need these). The autoload hook runs them from its import finder.
* post-import (:func:`apply_post_import_patches`): on the imported LibMTL classes.

:func:`ensure_libmtl` does both around ``import LibMTL`` (with or without the autoload hook); import LibMTL
symbols through ``libmtl_repmtl.libmtl.bases``.

Device choice for LibMTL 1.1.5's ``Trainer`` (patch ``trainer-device``): the ``device=`` keyword of
``Trainer(...)``, else the environment variable ``LIBMTL_DEVICE`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``),
else ``auto`` (CUDA when available, else CPU). See :func:`resolve_device`.
"""

from __future__ import annotations

import importlib
import sys
import types
import warnings
from collections.abc import Callable
from typing import Any

from libmtl_repmtl.libmtl.compat._common import MARKER, CompatWarning, MissingDependencyError, PatchInfo
from libmtl_repmtl.libmtl.compat._common import _mark as _mark  # re-exported for the host
from libmtl_repmtl.libmtl.compat._common import _marked as _marked
from libmtl_repmtl.libmtl.compat.aligned_mtl_symeig import _patch_aligned_mtl_symeig
from libmtl_repmtl.libmtl.compat.cagrad_task_count import _patch_cagrad_task_count
from libmtl_repmtl.libmtl.compat.dependencies import UNDECLARED_DEPENDENCIES, explain_import_error
from libmtl_repmtl.libmtl.compat.device import DEVICE_ENV, resolve_device
from libmtl_repmtl.libmtl.compat.grad2vec_device import _patch_grad2vec
from libmtl_repmtl.libmtl.compat.process_data_next import _patch_process_data
from libmtl_repmtl.libmtl.compat.reset_grad_none import _patch_reset_grad
from libmtl_repmtl.libmtl.compat.same_rep import _patch_same_rep
from libmtl_repmtl.libmtl.compat.sdmgrad_alltrue import _patch_sdmgrad_alltrue
from libmtl_repmtl.libmtl.compat.torchvision_models_utils import _ensure_torchvision_models_utils
from libmtl_repmtl.libmtl.compat.trainer_device import _patch_trainer_device
from libmtl_repmtl.libmtl.compat.zero_grad_share_params import _patch_zero_grad_share_params

#: patch name -> "applied" | "not needed" | "probe failed: ..." (what happened in this process).
_STATE: dict[str, str] = {}
#: patch name -> the LibMTL module it was checked against (probes run once per imported LibMTL).
_CHECKED: dict[str, Any] = {}


# ============================================================================================ registry
_PRE: list[tuple[str, Callable[[], bool]]] = [
    ("torchvision-models-utils", _ensure_torchvision_models_utils),
]
# Order matters: the CAGrad probe runs a training step, so the gradient patches come first.
_POST: list[tuple[str, Callable[[Any], bool]]] = [
    ("trainer-device", _patch_trainer_device),
    ("process-data-next", _patch_process_data),
    ("reset-grad-none", _patch_reset_grad),
    ("zero-grad-share-params", _patch_zero_grad_share_params),
    ("grad2vec-device", _patch_grad2vec),
    ("same-rep", _patch_same_rep),
    ("cagrad-task-count", _patch_cagrad_task_count),
    ("aligned-mtl-symeig", _patch_aligned_mtl_symeig),
    ("sdmgrad-alltrue", _patch_sdmgrad_alltrue),
]


def _run(name: str, fn: Callable[..., bool], *args: Any) -> bool:
    try:
        applied = bool(fn(*args))
    except Exception as exc:  # a probe on an unexpected LibMTL: report, leave LibMTL as it is
        _STATE[name] = f"probe failed: {type(exc).__name__}: {exc}"
        warnings.warn(f"libmtl_repmtl: compatibility patch {name!r} could not be checked "
                      f"({type(exc).__name__}: {exc}); LibMTL is left unpatched there. "
                      f"See docs/compat.md.", CompatWarning, stacklevel=3)
        return False
    if applied:
        _STATE[name] = "applied"
    else:
        _STATE.setdefault(name, "not needed")
    return applied


def apply_pre_import_patches() -> dict[str, bool]:
    """Apply the patches needed before ``LibMTL/__init__.py`` runs. Returns name -> applied now."""
    return {name: _run(name, fn) for name, fn in _PRE}


def apply_post_import_patches(libmtl: Any | None = None) -> dict[str, bool]:
    """Apply the patches on LibMTL's classes (``libmtl``: the imported package; default ``sys.modules``).

    Returns name -> applied now (False: not needed, already applied, or the probe failed with a warning).
    """
    if libmtl is None:
        libmtl = sys.modules["LibMTL"]
    for sub in ("trainer", "weighting", "architecture", "weighting.abstract_weighting",
                "architecture.abstract_arch", "config"):
        importlib.import_module(f"LibMTL.{sub}")
    result = {}
    for name, fn in _POST:
        if _CHECKED.get(name) is libmtl:  # probed already for this LibMTL: nothing to do
            result[name] = False
            continue
        result[name] = _run(name, fn, libmtl)
        _CHECKED[name] = libmtl
    return result


def patches() -> list[PatchInfo]:
    """Every patch this module knows, in application order."""
    out = []
    for phase, table in (("pre-import", _PRE), ("post-import", _POST)):
        for name, fn in table:
            doc = (fn.__doc__ or "").strip().splitlines()
            out.append(PatchInfo(name, phase, doc[0] if doc else ""))
    return out


def patch_state() -> dict[str, str]:
    """What happened to each patch in this process: ``applied``, ``not needed``, ``probe failed: ...``."""
    return dict(_STATE)


def ensure_libmtl() -> types.ModuleType:
    """Import LibMTL with the pre-import patches applied, then apply the post-import patches.

    Returns the ``LibMTL`` module. Raises :class:`MissingDependencyError` (an ImportError) when LibMTL needs a
    package that is missing (scipy).
    """
    apply_pre_import_patches()
    try:
        libmtl = importlib.import_module("LibMTL")
    except ImportError as exc:
        clear = explain_import_error(exc)
        if clear is not None:
            raise clear from exc
        raise
    apply_post_import_patches(libmtl)
    return libmtl


__all__ = [
    "DEVICE_ENV", "MARKER", "UNDECLARED_DEPENDENCIES", "CompatWarning", "MissingDependencyError", "PatchInfo",
    "apply_post_import_patches", "apply_pre_import_patches", "ensure_libmtl", "explain_import_error", "patch_state",
    "patches", "resolve_device",
]
