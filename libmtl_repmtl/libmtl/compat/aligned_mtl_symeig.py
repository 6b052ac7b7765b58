"""Post-import patch ``aligned-mtl-symeig`` (LibMTL's git version)."""

from __future__ import annotations

import contextlib
from typing import Any

from libmtl_repmtl.libmtl.compat._common import _marked, lend_while_running, lent_attribute, probe_step


def _symeig(input: Any, eigenvectors: bool = False, upper: bool = True) -> tuple[Any, Any]:
    """``torch.symeig`` as it was (ascending eigenvalues; eigenvectors in the columns, or an empty tensor),
    computed by ``torch.linalg.eigh`` on the upper (default) or lower triangle."""
    import torch

    values, vectors = torch.linalg.eigh(input, UPLO="U" if upper else "L")
    return values, (vectors if eigenvectors else values.new_zeros(0))


def _symeig_available() -> contextlib.AbstractContextManager[None]:
    """``torch.symeig`` works inside the block (restored afterwards; one block at a time)."""
    import torch

    return lent_attribute(torch, "symeig", _symeig)


def _aligned_mtl_symptom(libmtl: Any) -> bool:
    try:
        probe_step(libmtl, libmtl.weighting.Aligned_MTL)
    except RuntimeError as exc:
        return "symeig" in str(exc)
    return False


def _patch_aligned_mtl_symeig(libmtl: Any) -> bool:
    """Symptom: the git version's Aligned_MTL fails at its first step with ``RuntimeError: This function was
    deprecated since version 1.9 and is now removed`` (about ``torch.symeig``).

    Cause: ``Aligned_MTL.backward`` eigen-decomposes the task-gradient Gram matrix with ``torch.symeig``, which
    torch removed (it now only raises). Cure: while ``Aligned_MTL.backward`` runs, ``torch.symeig`` is an
    equivalent built on ``torch.linalg.eigh`` (same triangle, same ascending order, eigenvectors as columns);
    the method itself is unchanged. Detected by one Aligned_MTL step of a stub 2-task model; not needed where
    LibMTL has no Aligned_MTL (1.1.5) or where the step works.
    """
    aligned = getattr(libmtl.weighting, "Aligned_MTL", None)
    if aligned is None or _marked(aligned.__dict__.get("backward"), "aligned-mtl-symeig"):
        return False
    if not _aligned_mtl_symptom(libmtl):
        return False
    import torch

    lend_while_running(aligned, "backward", torch, "symeig", _symeig, "aligned-mtl-symeig",
                       "torch.symeig via torch.linalg.eigh.")
    return True
