"""Heavy-tail (power-law) analysis of weight matrices, WeightWatcher style.

For each weight matrix ``W`` (a ``Linear`` weight, or a conv weight ``(C_out, C_in, k_h, k_w)`` reshaped to
``(C_out, C_in * k_h * k_w)``), the empirical spectral density (ESD) is the set of eigenvalues of
``X = W^T W / N`` (``N`` = the larger side; the exponent is scale invariant, so ``N`` does not matter).
A power law ``p(x) ~ x^(-alpha)`` for ``x >= x_min`` is fitted to the ESD tail with the Clauset-Shalizi-Newman
method: for each candidate ``x_min`` the continuous maximum-likelihood exponent is

    alpha = 1 + n / sum_i log(x_i / x_min)        (over the n eigenvalues x_i >= x_min)

and ``x_min`` is the candidate minimising the Kolmogorov-Smirnov distance between the empirical tail CDF
and the fitted one, ``P(x) = 1 - (x / x_min)^(1 - alpha)``. Small alpha (about 2-4) means a heavy-tailed,
well-trained layer; a random (Marchenko-Pastur) matrix gives a large alpha.

Command: ``libmtl-repmtl alpha CHECKPOINT [--json]``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class PowerLawFit:
    """A power-law fit of a sample's tail.

    Attributes:
        alpha: the exponent (``nan`` when the sample is too small to fit).
        xmin: the lower end of the fitted tail.
        ks: the Kolmogorov-Smirnov distance of the fit.
        n_tail: number of points in the tail (``x >= xmin``).
        n: number of (positive) points in the sample.
    """

    alpha: float
    xmin: float
    ks: float
    n_tail: int
    n: int


def fit_power_law(samples: np.ndarray | Sequence[float], min_tail: int = 5,
                  xmax: float | None = None) -> PowerLawFit:
    """Clauset-Shalizi-Newman power-law fit of the tail of a positive sample.

    Every distinct value is tried as ``x_min`` (as long as at least ``min_tail`` points are ``>= x_min``);
    for each, alpha is the continuous MLE and the KS distance is computed on the tail; the fit with the
    smallest KS distance is returned. Vectorised: ``O(n^2)`` time and memory in chunks.

    Args:
        samples: ``(n,)`` values; non-positive and non-finite values are dropped.
        min_tail: smallest tail size considered.
        xmax: optional upper cut (values above are dropped), as WeightWatcher's ``xmax``.

    Returns:
        The :class:`PowerLawFit` (alpha ``nan`` when fewer than ``max(min_tail, 2)`` usable points).
    """
    x = np.asarray(samples, dtype=np.float64).ravel()
    x = x[np.isfinite(x) & (x > 0)]
    if xmax is not None:
        x = x[x <= xmax]
    x = np.sort(x)
    n = x.size
    min_tail = max(int(min_tail), 2)
    if n < min_tail:
        return PowerLawFit(math.nan, math.nan, math.nan, 0, n)
    logx = np.log(x)
    # Candidate starts: the first occurrence of each distinct value leaving >= min_tail points.
    starts = np.flatnonzero(np.r_[True, x[1:] > x[:-1]])
    starts = starts[n - starts >= min_tail]
    # Tail log-sums via reverse cumulative sums.
    rev_cum = np.cumsum(logx[::-1])[::-1]  # rev_cum[i] = sum_{j >= i} log x_j
    best = PowerLawFit(math.nan, math.nan, math.inf, 0, n)
    chunk = max(1, 4_000_000 // max(n, 1))
    for c0 in range(0, starts.size, chunk):
        idx = starts[c0:c0 + chunk]
        n_tail = n - idx
        denom = rev_cum[idx] - n_tail * logx[idx]
        with np.errstate(divide="ignore", invalid="ignore"):
            alpha = 1.0 + n_tail / denom
        # KS distance, rows = candidates, columns = positions j in the sorted sample (masked to j >= start).
        j = np.arange(n)[None, :]
        rel = j - idx[:, None]  # rank inside the tail
        valid = rel >= 0
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            fitted = 1.0 - np.exp((1.0 - alpha)[:, None] * (logx[None, :] - logx[idx][:, None]))
            upper = (rel + 1) / n_tail[:, None]
            lower = rel / n_tail[:, None]
            dist = np.maximum(np.abs(upper - fitted), np.abs(fitted - lower))
        dist = np.where(valid, dist, 0.0)
        ks = dist.max(axis=1)
        ks = np.where(np.isfinite(alpha) & (alpha > 1.0), ks, np.inf)
        k = int(np.argmin(ks))
        if ks[k] < best.ks:
            best = PowerLawFit(float(alpha[k]), float(x[idx[k]]), float(ks[k]), int(n_tail[k]), n)
    if not math.isfinite(best.ks):
        return PowerLawFit(math.nan, math.nan, math.nan, 0, n)
    return best


def weight_matrix(weight: Tensor | np.ndarray) -> np.ndarray:
    """A weight as a 2-D float64 matrix.

    ``(out, in)`` is kept as is; a conv weight ``(C_out, C_in, *k)`` becomes ``(C_out, C_in * prod(k))``.
    """
    w = weight.detach().cpu().double().numpy() if isinstance(weight, Tensor) else np.asarray(weight, np.float64)
    if w.ndim < 2:
        raise ValueError(f"a weight matrix needs at least 2 dims, got shape {w.shape}")
    return w.reshape(w.shape[0], -1)


def esd(weight: Tensor | np.ndarray, rel_tol: float = 1e-10) -> np.ndarray:
    """Empirical spectral density: eigenvalues of ``W^T W / N`` (``N`` = larger side), ascending.

    Numerically zero eigenvalues (below ``rel_tol`` times the largest) are dropped, so a rectangular
    ``W`` contributes its ``min(rows, cols)`` non-trivial eigenvalues.

    Args:
        weight: ``(out, in)`` or conv ``(C_out, C_in, k_h, k_w)`` weight.

    Returns:
        ``(k,)`` positive eigenvalues, ``k <= min(rows, cols)``.
    """
    w = weight_matrix(weight)
    sv = np.linalg.svd(w, compute_uv=False)
    ev = np.sort(sv**2 / max(w.shape))
    if ev.size == 0 or ev[-1] <= 0:
        return ev[:0]
    return ev[ev > rel_tol * ev[-1]]


def layer_alpha(weight: Tensor | np.ndarray, min_tail: int = 5) -> PowerLawFit:
    """Power-law fit of one weight matrix's ESD (see :func:`esd` and :func:`fit_power_law`)."""
    return fit_power_law(esd(weight), min_tail=min_tail)


def module_group(name: str) -> str:
    """The group a parameter belongs to: ``encoder``, ``decoder:<task>`` or its first name component.

    Understands LibMTL's naming (``encoder.*``, ``decoders.<task>.*``), with an optional ``model.`` /
    ``module.`` prefix.
    """
    parts = name.split(".")
    while parts and parts[0] in {"model", "module"}:
        parts = parts[1:]
    if not parts:
        return name
    if parts[0] == "decoders" and len(parts) > 1:
        return f"decoder:{parts[1]}"
    return parts[0]


def weight_tensors(source: nn.Module | Mapping[str, Any]) -> dict[str, Tensor]:
    """Named weight matrices (``*weight`` tensors with >= 2 dims) of a module or a state dict."""
    items = source.state_dict().items() if isinstance(source, nn.Module) else source.items()
    return {k: v for k, v in items
            if isinstance(v, Tensor) and v.ndim >= 2 and k.endswith("weight") and v.is_floating_point()}


def alpha_report(source: nn.Module | Mapping[str, Any], min_tail: int = 5) -> dict[str, Any]:
    """Per-layer alpha and per-group summary (mean / median alpha) of a model or state dict.

    Returns:
        ``{"layers": [{"name", "group", "shape", "alpha", "xmin", "ks", "n_tail", "n"}...],
        "groups": {group: {"mean_alpha", "median_alpha", "n_layers"}}}``; layers whose alpha could not be
        fitted (too few eigenvalues) have alpha ``None`` and are left out of the group statistics.
    """
    layers = []
    per_group: dict[str, list[float]] = {}
    for name, w in weight_tensors(source).items():
        fit = layer_alpha(w, min_tail=min_tail)
        group = module_group(name)
        row = {"name": name, "group": group, "shape": list(w.shape), **asdict(fit)}
        for key in ("alpha", "xmin", "ks"):
            if not math.isfinite(row[key]):
                row[key] = None
        layers.append(row)
        per_group.setdefault(group, [])
        if row["alpha"] is not None:
            per_group[group].append(row["alpha"])
    groups = {
        g: {"mean_alpha": float(np.mean(v)) if v else None,
            "median_alpha": float(np.median(v)) if v else None,
            "n_layers": len(v)}
        for g, v in per_group.items()
    }
    return {"layers": layers, "groups": groups}


def load_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Load a checkpoint's model weights on the CPU.

    Accepts a bare state dict or a dict holding one under ``model``, ``state_dict``,
    ``model_state_dict`` or ``model_state``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file holds no recognisable state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    obj = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict", "model_state_dict", "model_state"):
            inner = obj.get(key)
            if isinstance(inner, nn.Module):
                return inner.state_dict()
            if isinstance(inner, Mapping) and any(isinstance(v, Tensor) for v in inner.values()):
                return dict(inner)
        if any(isinstance(v, Tensor) for v in obj.values()):
            return {k: v for k, v in obj.items() if isinstance(v, Tensor)}
    raise ValueError(f"{path}: no model state dict found (expected a state dict or a dict with a 'model' entry)")


def weightwatcher_alphas(model: nn.Module) -> dict[str, float] | None:
    """Optional cross-check: WeightWatcher's per-layer alpha, if ``weightwatcher`` is installed (else ``None``)."""
    try:
        import weightwatcher as ww  # type: ignore[import-not-found]
    except ImportError:
        return None
    details = ww.WeightWatcher(model=model).analyze()
    return {str(r["name"]): float(r["alpha"]) for _, r in details.iterrows()}


def format_report(report: Mapping[str, Any]) -> str:
    """A plain-text table of a :func:`alpha_report` result."""
    lines = [f"{'group':<24} {'mean alpha':>10} {'median':>8} {'layers':>6}"]
    for g, s in report["groups"].items():
        mean = "n/a" if s["mean_alpha"] is None else f"{s['mean_alpha']:.2f}"
        med = "n/a" if s["median_alpha"] is None else f"{s['median_alpha']:.2f}"
        lines.append(f"{g:<24} {mean:>10} {med:>8} {s['n_layers']:>6}")
    lines.append("")
    lines.append(f"{'layer':<48} {'shape':<18} {'alpha':>7} {'n_tail':>6}")
    for r in report["layers"]:
        a = "n/a" if r["alpha"] is None else f"{r['alpha']:.2f}"
        lines.append(f"{r['name']:<48} {'x'.join(map(str, r['shape'])):<18} {a:>7} {r['n_tail']:>6}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``libmtl-repmtl alpha CHECKPOINT [--json] [--min-tail K]``."""
    parser = argparse.ArgumentParser(prog="libmtl-repmtl alpha",
                                     description="Power-law exponent alpha of each weight matrix's ESD, "
                                                 "summarised per encoder / decoder.")
    parser.add_argument("checkpoint", help="checkpoint file (torch.save of a state dict or {'model': ...})")
    parser.add_argument("--json", action="store_true", help="print the full report as JSON")
    parser.add_argument("--min-tail", type=int, default=5, help="smallest tail size in the fit (default 5)")
    args = parser.parse_args(argv)
    try:
        state = load_state_dict(args.checkpoint)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = alpha_report(state, min_tail=args.min_tail)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


__all__ = [
    "PowerLawFit",
    "alpha_report",
    "esd",
    "fit_power_law",
    "format_report",
    "layer_alpha",
    "load_state_dict",
    "main",
    "module_group",
    "weight_matrix",
    "weight_tensors",
    "weightwatcher_alphas",
]
