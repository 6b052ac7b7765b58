"""The grid's plots: ``delta_p.png`` (Δp_task per method) and ``delta_p_vs_time.png`` (Δp_task against the
training time per epoch), written atomically.

Colours: Rep-MTL variants red, other multi-task methods blue; STL (the single-task reference, Δp 0 against its
own runs) a black diamond; the paper's published values hollow circles. Every colour and marker has a legend
entry and the Δp axis says that higher is better.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from libmtl_repmtl.benchmarks import canonical_name
from libmtl_repmtl.training.io import atomic_write

if TYPE_CHECKING:
    from libmtl_repmtl.harness.report import SummaryRow

DELTA_P_LABEL = "Δp_task (%), higher is better"
REPMTL_COLOUR, OTHER_COLOUR, STL_COLOUR = "tab:red", "tab:blue", "black"


def _pyplot() -> Any:
    import matplotlib  # optional dependency (extra `bench`): imported only when plotting

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colour(method: str) -> str:
    return REPMTL_COLOUR if method.startswith("RepMTL") else OTHER_COLOUR


def _finish(ax: Any, benchmark: str) -> None:
    ax.set_ylabel(DELTA_P_LABEL)
    ax.set_title(benchmark)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no Δp: no baseline (run STL, or a benchmark with a published one)", ha="center",
                va="center", fontsize=8, transform=ax.transAxes, wrap=True)


def _bars(ax: Any, rows: Sequence[SummaryRow], benchmark: str) -> None:
    ours = [r for r in rows if r.benchmark == benchmark and r.source == "ours" and r.delta_p_task is not None]
    pub = {canonical_name(r.method): r.delta_p_task[0] for r in rows
           if r.benchmark == benchmark and r.source == "published" and r.delta_p_task}
    names = [r.method for r in ours]
    x = np.arange(len(names))
    ours_label = "ours, mean ± std" if all(r.n_seeds >= 2 for r in ours) else "ours"
    for colour, label in ((REPMTL_COLOUR, f"Rep-MTL variants ({ours_label})"),
                          (OTHER_COLOUR, f"other methods ({ours_label})")):
        idx = [i for i, r in enumerate(ours) if r.method != "STL" and _colour(r.method) == colour]
        if idx:
            ax.bar([x[i] for i in idx], [ours[i].delta_p_task[0] for i in idx],
                   yerr=[ours[i].delta_p_task[1] for i in idx], color=colour, capsize=3, label=label)
    stl = [i for i, r in enumerate(ours) if r.method == "STL"]
    if stl:
        ax.scatter(stl, [ours[i].delta_p_task[0] for i in stl], marker="D", color=STL_COLOUR, zorder=3,
                   label="STL (single-task reference)")
    px = [i for i, n in enumerate(names) if canonical_name(n) in pub]
    if px:
        ax.scatter(px, [pub[canonical_name(names[i])] for i in px], facecolors="none", edgecolors="k", zorder=3,
                   label="published (paper)")
    ax.axhline(0.0, color="gray", lw=0.8)
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=45, ha="right")
    _finish(ax, benchmark)


def _cost(ax: Any, rows: Sequence[SummaryRow], benchmark: str) -> None:
    ours = [r for r in rows if r.benchmark == benchmark and r.source == "ours" and r.delta_p_task is not None
            and r.seconds_per_epoch is not None]
    labelled: set[str] = set()
    for r in ours:
        colour = STL_COLOUR if r.method == "STL" else _colour(r.method)
        label = {REPMTL_COLOUR: "Rep-MTL variants", OTHER_COLOUR: "other methods",
                 STL_COLOUR: "STL (all tasks' runs)"}[colour]
        ax.errorbar(r.seconds_per_epoch[0], r.delta_p_task[0], xerr=r.seconds_per_epoch[1], yerr=r.delta_p_task[1],
                    fmt="D" if r.method == "STL" else "o", color=colour, capsize=2,
                    label=None if label in labelled else label)
        labelled.add(label)
        ax.annotate(r.method, (r.seconds_per_epoch[0], r.delta_p_task[0]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    ax.axhline(0.0, color="gray", lw=0.8)
    ax.set_xlabel("seconds per training epoch")
    _finish(ax, benchmark)


def summary_figures(rows: Sequence[SummaryRow]) -> dict[str, Any]:
    """file name -> matplotlib figure of the plots of ``rows``, one panel per benchmark with rows of ours
    (empty when there is none)."""
    benchmarks = list(dict.fromkeys(r.benchmark for r in rows if r.source == "ours"))
    if not benchmarks:
        return {}
    plt = _pyplot()
    figures = {}
    for name, draw in (("delta_p.png", _bars), ("delta_p_vs_time.png", _cost)):
        fig, axes = plt.subplots(1, len(benchmarks), figsize=(5.5 * len(benchmarks), 4), squeeze=False)
        for ax, b in zip(axes[0], benchmarks):
            draw(ax, rows, b)
        fig.tight_layout()
        figures[name] = fig
    return figures


def plot_summary(rows: Sequence[SummaryRow], out: Path) -> list[Path]:
    """Write the plots of ``rows`` into ``out`` (PNG, atomically); returns the paths written."""
    plt = _pyplot()
    written = []
    for name, fig in summary_figures(rows).items():
        written.append(atomic_write(out / name, lambda f, fig=fig: fig.savefig(f, format="png", dpi=110)))
        plt.close(fig)
    return written


__all__ = ["DELTA_P_LABEL", "plot_summary", "summary_figures"]
