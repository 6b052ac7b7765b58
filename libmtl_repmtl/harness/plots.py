"""The grid's plots: ``delta_p.png`` (Δp_task per method) and ``delta_p_vs_time.png`` (Δp_task against the
training time per epoch), written atomically."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from libmtl_repmtl.benchmarks import canonical_name
from libmtl_repmtl.training.io import atomic_write

if TYPE_CHECKING:
    from libmtl_repmtl.harness.report import SummaryRow


def plot_summary(rows: Sequence[SummaryRow], out: Path) -> list[Path]:
    """``delta_p.png`` (Δp_task per method, error bars = std over seeds; published as hollow markers) and
    ``delta_p_vs_time.png`` (Δp_task against seconds per epoch), written atomically."""
    import matplotlib  # optional dependency (extra `bench`): imported only when plotting

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    benchmarks = list(dict.fromkeys(r.benchmark for r in rows if r.source == "ours"))
    if not benchmarks:
        return []
    written = []

    def save(fig: Any, name: str) -> None:
        path = atomic_write(out / name, lambda f: fig.savefig(f, format="png", dpi=110))
        plt.close(fig)
        written.append(path)

    fig, axes = plt.subplots(1, len(benchmarks), figsize=(5.5 * len(benchmarks), 4), squeeze=False)
    for ax, b in zip(axes[0], benchmarks):
        ours = [r for r in rows if r.benchmark == b and r.source == "ours" and r.delta_p_task is not None]
        pub = {canonical_name(r.method): r.delta_p_task[0] for r in rows
               if r.benchmark == b and r.source == "published" and r.delta_p_task}
        names = [r.method for r in ours]
        x = np.arange(len(names))
        means = [r.delta_p_task[0] for r in ours]
        stds = [r.delta_p_task[1] for r in ours]
        colors = ["tab:red" if n.startswith("RepMTL") else "tab:blue" for n in names]
        ax.bar(x, means, yerr=stds, color=colors, capsize=3, label="ours (mean ± std)")
        px = [i for i, n in enumerate(names) if canonical_name(n) in pub]
        if px:
            ax.scatter(px, [pub[canonical_name(names[i])] for i in px], facecolors="none", edgecolors="k", zorder=3,
                       label="published (paper)")
        ax.axhline(0.0, color="gray", lw=0.8)
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=45, ha="right")
        ax.set_ylabel("Δp_task (%)")
        ax.set_title(b)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save(fig, "delta_p.png")

    fig, axes = plt.subplots(1, len(benchmarks), figsize=(5.5 * len(benchmarks), 4), squeeze=False)
    for ax, b in zip(axes[0], benchmarks):
        ours = [r for r in rows if r.benchmark == b and r.source == "ours" and r.delta_p_task is not None
                and r.seconds_per_epoch is not None]
        for r in ours:
            color = "tab:red" if r.method.startswith("RepMTL") else "tab:blue"
            ax.errorbar(r.seconds_per_epoch[0], r.delta_p_task[0], xerr=r.seconds_per_epoch[1],
                        yerr=r.delta_p_task[1], fmt="o", color=color, capsize=2)
            ax.annotate(r.method, (r.seconds_per_epoch[0], r.delta_p_task[0]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
        ax.axhline(0.0, color="gray", lw=0.8)
        ax.set_xlabel("seconds per training epoch")
        ax.set_ylabel("Δp_task (%)")
        ax.set_title(b)
    fig.tight_layout()
    save(fig, "delta_p_vs_time.png")
    return written


__all__ = ["plot_summary"]
