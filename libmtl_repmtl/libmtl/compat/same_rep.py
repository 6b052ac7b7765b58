"""Post-import patch ``same-rep``."""

from __future__ import annotations

from typing import Any

from libmtl_repmtl.libmtl.compat._common import _mark, _marked


def _same_rep_symptom(libmtl: Any) -> bool:
    import torch
    from torch import nn

    arch = libmtl.architecture.abstract_arch.AbsArchitecture
    probe = arch(["a", "b"], None, nn.ModuleDict({"a": nn.Identity(), "b": nn.Identity()}), True, False,
                 torch.device("cpu"))
    probe.encoder = nn.Linear(2, 2)
    with torch.enable_grad():
        probe(torch.zeros(1, 2))
    return isinstance(probe.rep, dict)


def _patch_same_rep(libmtl: Any) -> bool:
    """Symptom: single-input models with ``rep_grad=True`` (e.g. HPS with GradDrop, or ``--rep_grad`` with
    MGDA/IMTL/GradNorm) backpropagate through the shared encoder once per task, and ``self.rep`` is a
    task -> tensor dict holding the same tensor T times.

    Cause: ``AbsArchitecture.forward`` computes ``same_rep = isinstance(s_rep, list) and not multi_input``:
    the test is inverted (one shared tensor should mean ``same_rep=True``).
    Cure: ``same_rep`` is True when the encoder returns one tensor for all tasks of a single-input problem,
    so ``self.rep`` is that one tensor and the encoder is traversed once.
    Detected by a forward pass of a stub architecture with ``rep_grad=True``.
    """
    arch = libmtl.architecture.abstract_arch.AbsArchitecture
    if _marked(arch.__dict__.get("forward"), "same-rep"):
        return False
    if not _same_rep_symptom(libmtl):
        return False

    def forward(self: Any, inputs: Any, task_name: str | None = None) -> dict[str, Any]:
        out = {}
        s_rep = self.encoder(inputs)
        per_task = isinstance(s_rep, list)
        same_rep = not per_task and not self.multi_input
        for tn, task in enumerate(self.task_name):
            if task_name is not None and task != task_name:
                continue
            rep = s_rep[tn] if per_task else s_rep
            out[task] = self.decoders[task](self._prepare_rep(rep, task, same_rep))
        return out

    forward.__doc__ = (arch.forward.__doc__ or "") + "\n\nPatched by libmtl_repmtl: same_rep test corrected."
    arch.forward = _mark(forward, "same-rep")
    return True
