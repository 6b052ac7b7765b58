"""Per-task saliency maps and the TSR entropy map, as arrays and PNG grids with a colour bar per map (the paper's
qualitative figure).

For a batch, with the shared representation ``Z = E(X)`` of shape ``(B, C, H', W')``:

* task saliency ``S_t = d l_t / d Z`` (``l_t = log(L_t + 1e-8)`` by default, as Rep-MTL trains with),
  computed by the method core (:func:`libmtl_repmtl.core.task_saliencies`) in one backward pass through
  the heads, each head reading its own detached copy of ``Z``;
* task saliency map ``|mean_c S_t|``: ``(B, H', W')``;
* TSR entropy map: per-position entropy of the task distribution ``P[., t] = |mean_c S_t| / sum_k |mean_c S_k|``
  (:func:`libmtl_repmtl.core.tsr_entropy_map`), ``(B, H', W')`` in ``[0, log T]``.

Command (CPU benchmarks): ``libmtl-repmtl saliency CHECKPOINT --benchmark multimnist --out DIR``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from libmtl_repmtl.analysis.powerlaw import load_state_dict
from libmtl_repmtl.core import task_objectives, task_saliencies, tsr_entropy_map
from libmtl_repmtl.data.multimnist import MULTIMNIST_TASKS, MultiMNISTConfig, build_multimnist
from libmtl_repmtl.models.small import MultiMNISTEncoder, multimnist_heads

LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass
class SaliencyMaps:
    """Saliency pictures of one batch.

    Attributes:
        inputs: ``(B, C_in, H, W)`` the inputs (CPU, detached).
        task_maps: task -> ``(B, H', W')`` ``|channel mean of S_t|``.
        entropy: ``(B, H', W')`` TSR per-position entropy.
        losses: task -> batch-mean loss (float).
    """

    inputs: Tensor
    task_maps: dict[str, Tensor]
    entropy: Tensor
    losses: dict[str, float]


def compute_saliency_maps(encoder: nn.Module, decoders: Mapping[str, nn.Module], inputs: Tensor,
                          targets: Mapping[str, Tensor], loss_fns: Mapping[str, LossFn],
                          log_loss: bool = True) -> SaliencyMaps:
    """Per-task saliency maps and the TSR entropy map of one batch (single-input model).

    Args:
        encoder: shared encoder, ``(B, C_in, H, W) -> (B, C, H', W')``.
        decoders: task -> head reading ``(B, C, H', W')``.
        inputs: ``(B, C_in, H, W)``.
        targets: task -> targets for ``loss_fns[task]``.
        loss_fns: task -> ``loss(pred, target) -> scalar`` (batch mean).
        log_loss: differentiate ``log(L_t + 1e-8)`` (Rep-MTL's objective) rather than ``L_t``.

    Returns:
        :class:`SaliencyMaps` (all tensors detached, on the CPU).

    Raises:
        ValueError: the representation is not spatial ``(B, C, H', W')``, or a task has no loss / target.
    """
    tasks = list(decoders)
    missing = [t for t in tasks if t not in targets or t not in loss_fns]
    if missing:
        raise ValueError(f"no target or loss function for task(s) {missing}")
    was_training = encoder.training, {t: decoders[t].training for t in tasks}
    encoder.eval()
    for t in tasks:
        decoders[t].eval()
    try:
        with torch.no_grad():
            z = encoder(inputs)
        if z.ndim != 4:
            raise ValueError(f"saliency maps need a spatial representation (B, C, H', W'), got {tuple(z.shape)}")
        with torch.enable_grad():
            copies = [z.detach().clone().requires_grad_() for _ in tasks]
            losses = torch.stack([loss_fns[t](decoders[t](copies[i]), targets[t]) for i, t in enumerate(tasks)])
            sal = task_saliencies(task_objectives(losses, log_loss=log_loss), copies, create_graph=False)
    finally:
        encoder.train(was_training[0])
        for t in tasks:
            decoders[t].train(was_training[1][t])
    maps = {t: s.detach().mean(dim=1).abs().cpu() for t, s in zip(tasks, sal)}
    entropy = tsr_entropy_map([s.detach() for s in sal]).cpu()
    return SaliencyMaps(inputs.detach().cpu(), maps, entropy,
                        {t: float(v) for t, v in zip(tasks, losses.detach())})


def saliency_figure(maps: SaliencyMaps, title: str | None = None, max_rows: int = 8) -> Any:
    """A matplotlib figure: one row per input; columns = input, each task's saliency map, TSR entropy map.

    Every map has its own colour bar (saliency ``|mean_c S_t|`` on the map's own scale; entropy on
    ``[0, log T]``, the same for every row). Maps are shown at their own resolution (``H' x W'``) stretched over
    the input's extent. The caller closes the figure (``matplotlib.pyplot.close(fig)``).
    """
    import matplotlib  # optional dependency (extra `analysis`): imported only when drawing

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(maps.task_maps)
    rows = min(max_rows, maps.inputs.shape[0])
    cols = 2 + len(tasks)
    fig, axes = plt.subplots(rows, cols, figsize=(2.7 * cols, 2.2 * rows), squeeze=False)
    log_t = float(np.log(max(len(tasks), 2)))
    for r in range(rows):
        img = maps.inputs[r]
        img = img[0] if img.shape[0] == 1 else img.permute(1, 2, 0)
        axes[r, 0].imshow(img.numpy(), cmap="gray")
        for c, t in enumerate(tasks):
            im = axes[r, 1 + c].imshow(maps.task_maps[t][r].numpy(), cmap="viridis")
            fig.colorbar(im, ax=axes[r, 1 + c], fraction=0.046, pad=0.04)
        im = axes[r, -1].imshow(maps.entropy[r].numpy(), cmap="magma", vmin=0.0, vmax=log_t)
        fig.colorbar(im, ax=axes[r, -1], fraction=0.046, pad=0.04)
        if r == 0:
            axes[r, 0].set_title("input")
            for c, t in enumerate(tasks):
                axes[r, 1 + c].set_title(f"|S| {t}")
            axes[r, -1].set_title("TSR entropy")
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def save_saliency_grid(maps: SaliencyMaps, path: str | Path, title: str | None = None,
                       max_rows: int = 8) -> Path:
    """Save :func:`saliency_figure` as a PNG, atomically (temporary file in the same folder, then renamed)."""
    import matplotlib.pyplot as plt  # optional dependency (extra `analysis`); saliency_figure selected Agg

    fig = saliency_figure(maps, title, max_rows)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fig.savefig(tmp, format="png", dpi=100)
    finally:
        plt.close(fig)
    tmp.replace(path)
    return path


def _split_state(state: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    out = {}
    for k, v in state.items():
        key = k[len("model."):] if k.startswith("model.") else k
        key = key[len("module."):] if key.startswith("module.") else key
        if key.startswith(prefix):
            out[key[len(prefix):]] = v
    return out


def load_cpu_model(benchmark: str, checkpoint: str | Path) -> tuple[nn.Module, nn.ModuleDict]:
    """Rebuild a CPU-benchmark model (``multimnist``) and load a checkpoint's encoder and decoders."""

    if benchmark != "multimnist":
        raise ValueError(f"the saliency command rebuilds the 'multimnist' model only (spatial representation); "
                         f"got {benchmark!r}. For other models call compute_saliency_maps() directly")
    state = load_state_dict(checkpoint)
    encoder, decoders = MultiMNISTEncoder(), multimnist_heads(MULTIMNIST_TASKS)
    encoder.load_state_dict(_split_state(state, "encoder."))
    decoders.load_state_dict(_split_state(state, "decoders."))
    return encoder, decoders


def main(argv: Sequence[str] | None = None) -> int:
    """``libmtl-repmtl saliency CHECKPOINT [--benchmark multimnist] [--out DIR] [--n 6] [--split test]``."""
    parser = argparse.ArgumentParser(prog="libmtl-repmtl saliency",
                                     description="Per-task saliency maps and the TSR entropy map of a few test "
                                                 "inputs, saved as a PNG grid (CPU MultiMNIST benchmark).")
    parser.add_argument("checkpoint")
    parser.add_argument("--benchmark", default="multimnist")
    parser.add_argument("--out", default="saliency", help="output folder (default ./saliency)")
    parser.add_argument("--n", type=int, default=6, help="number of inputs (default 6)")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--no-log-loss", action="store_true", help="differentiate L_t instead of log(L_t + 1e-8)")
    args = parser.parse_args(argv)
    try:
        encoder, decoders = load_cpu_model(args.benchmark, args.checkpoint)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    sizes = MultiMNISTConfig(n_train=max(args.n, 2), n_val=max(args.n, 2), n_test=max(args.n, 2), seed=args.data_seed)
    data = build_multimnist(sizes)[args.split]
    x = data.images[: args.n]
    y = {t: v[: args.n] for t, v in data.labels.items()}
    maps = compute_saliency_maps(encoder, decoders, x, y, {t: F.cross_entropy for t in decoders},
                                 log_loss=not args.no_log_loss)
    out = Path(args.out)
    png = save_saliency_grid(maps, out / "saliency_maps.png", title="/".join(Path(args.checkpoint).parts[-4:]))
    tmp = out / ".saliency_maps.tmp.npz"
    np.savez(tmp, entropy=maps.entropy.numpy(), **{f"task_{t}": m.numpy() for t, m in maps.task_maps.items()})
    tmp.replace(out / "saliency_maps.npz")
    print(f"wrote {png} and {out / 'saliency_maps.npz'}")
    print("mean TSR entropy per input:", ", ".join(f"{v:.3f}" for v in maps.entropy.flatten(1).mean(1).tolist()))
    return 0


__all__ = ["SaliencyMaps", "compute_saliency_maps", "load_cpu_model", "main", "saliency_figure", "save_saliency_grid"]
