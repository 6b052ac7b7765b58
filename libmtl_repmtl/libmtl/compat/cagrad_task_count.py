"""Post-import patch ``cagrad-task-count``."""

from __future__ import annotations

from typing import Any

from libmtl_repmtl.libmtl.compat._common import _mark, _marked, probe_step


def _cagrad_symptom(libmtl: Any) -> bool:
    try:
        probe_step(libmtl, libmtl.weighting.CAGrad, calpha=0.5, rescale=1)
    except ValueError as exc:
        return "reshape" in str(exc) or "shape" in str(exc)
    except AttributeError:
        return False  # another symptom (reset-grad-none), cured separately
    return False


def _patch_cagrad_task_count(libmtl: Any) -> bool:
    """Symptom: CAGrad fails with ``ValueError: cannot reshape array of size 2 into shape (1,3)`` unless the
    problem has exactly 3 tasks.

    Cause: LibMTL 1.1.5's ``CAGrad.backward`` hard-codes ``x.reshape(1,3)`` / ``b.reshape(3,1)`` in the
    objective it minimises over the task-weight simplex. Cure: the same objective,
    ``w^T G b + c * sqrt(w^T G w + 1e-8)`` (``G`` the task-gradient Gram matrix, ``b`` uniform weights,
    ``c = calpha * ||g0||``), for any number of tasks, then the same update and rescaling.
    Detected by one CAGrad step of a stub 2-task model.
    """
    cagrad = libmtl.weighting.CAGrad
    if _marked(cagrad.__dict__.get("backward"), "cagrad-task-count"):
        return False
    if not _cagrad_symptom(libmtl):
        return False

    def backward(self: Any, losses: Any, **kwargs: Any) -> Any:
        import numpy as np
        import torch
        from scipy.optimize import minimize

        calpha, rescale = kwargs["calpha"], kwargs["rescale"]
        if self.rep_grad:
            raise ValueError("No support method CAGrad with representation gradients (rep_grad=True)")
        divisor = {0: 1.0, 1: 1.0 + calpha ** 2, 2: 1.0 + calpha}.get(rescale)
        if divisor is None:
            raise ValueError(f"No support rescale type {rescale}")
        self._compute_grad_dim()
        grads = self._compute_grad(losses, mode="backward")  # (T, D)
        gram = torch.matmul(grads, grads.t()).detach().cpu().double().numpy()
        n = self.task_num
        uniform = np.full(n, 1.0 / n)
        c = float(calpha * np.sqrt(gram.mean() + 1e-8) + 1e-8)
        gram_b = gram @ uniform

        def objective(w: Any) -> float:
            return float(w @ gram_b + c * np.sqrt(w @ gram @ w + 1e-8))

        res = minimize(objective, uniform, bounds=[(0.0, 1.0)] * n,
                       constraints=({"type": "eq", "fun": lambda w: 1.0 - np.sum(w)},))
        weights = np.asarray(res.x, dtype=float)
        ww = torch.as_tensor(weights, dtype=grads.dtype, device=grads.device)
        gw = (grads * ww.view(-1, 1)).sum(0)
        lmbda = c / (gw.norm() + 1e-8)
        self._reset_grad((grads.mean(0) + lmbda * gw) / divisor)
        return weights

    backward.__doc__ = (cagrad.backward.__doc__ or "") + "\n\nPatched by libmtl_repmtl: any number of tasks."
    cagrad.backward = _mark(backward, "cagrad-task-count")
    return True
