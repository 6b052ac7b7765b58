"""The selection's files: ``selection.md`` (every method's validation score per benchmark, its ranks, the rule's
outcome), ``selection.csv``, ``selection_top.txt`` (the eligible settings in rule order, one per line, for a
follow-up grid's ``--methods-from``) and ``selection_heatmap.png`` (validation Δp_task over the
``lambda_tsr`` x ``lambda_csa`` grid, one panel per ``tau`` and CSA form, one row per benchmark), all written
atomically."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from libmtl_repmtl.harness.plan import RunSpec
from libmtl_repmtl.harness.plots import _pyplot
from libmtl_repmtl.harness.selection import Choice, Score, choose, paper_distance, repmtl_config, score_grid
from libmtl_repmtl.training.io import atomic_write, atomic_write_text

Scores = Mapping[str, Mapping[str, Score]]


def _fmt(s: Score | None) -> str:
    if s is None:
        return "–"
    return f"{s.mean:+.2f} ± {s.std:.2f}" if s.n > 1 else f"{s.mean:+.2f}"


def render_selection(scores: Scores, choice: Choice | None, header: str = "", problems: Sequence[str] = (),
                     error: str = "") -> str:
    """``selection.md``: the rule's outcome, then one line per method (rule order for the eligible settings)."""
    benchmarks = sorted({b for per in scores.values() for b in per})
    out = io.StringIO()
    out.write("# Selection on the validation splits\n\n")
    if header:
        out.write(header.rstrip() + "\n\n")
    out.write("Score: best validation Δp_task (percent, higher is better) over a run's epochs against the "
              "benchmark's single-task validation scores; mean ± std over seeds. Rule: docs/method.md, "
              "\"Choosing the defaults\" (eligible: both lambdas > 0; lowest mean rank; tie band = within the "
              "best's spread on every benchmark; then closest to the paper's numbers).\n\n")
    if choice is not None:
        out.write(f"**Chosen: `{choice.chosen}`.** Best by mean rank: `{choice.best}`. Tied with it: "
                  + ", ".join(f"`{m}`" for m in choice.tied) + ".\n\n")
    else:
        out.write(f"**No choice:** {error}\n\n")
    order = list(choice.order) if choice else []
    rest = sorted((m for m in scores if m not in order), key=lambda m: -np.mean([s.mean for s in scores[m].values()]))
    head = ["method", *benchmarks, "mean rank", "eligible", "tied", "paper distance"]
    out.write("| " + " | ".join(head) + " |\n|" + "|".join("---" for _ in head) + "|\n")
    for m in [*order, *rest]:
        config = repmtl_config(m)
        dist = paper_distance(config) if config is not None else math.inf
        rank = choice.mean_rank.get(m) if choice else None
        cells = [f"`{m}`", *(_fmt(scores[m].get(b)) for b in benchmarks),
                 f"{rank:.2f}" if rank is not None else "–", "yes" if m in order else "no",
                 "yes" if choice and m in choice.tied else "", f"{dist:.2f}" if math.isfinite(dist) else "–"]
        out.write("| " + " | ".join(cells) + " |\n")
    if problems:
        out.write("\n## Missing runs\n\n" + "".join(f"- {p}\n" for p in problems))
    return out.getvalue()


def render_selection_csv(scores: Scores, choice: Choice | None) -> str:
    """``selection.csv``: method, benchmark, mean, std, seeds, mean rank, eligible, tied, chosen."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["method", "benchmark", "val_delta_p_task_mean", "val_delta_p_task_std", "n_seeds", "mean_rank",
                "eligible", "tied", "chosen"])
    for m, per in scores.items():
        for b, s in sorted(per.items()):
            rank = choice.mean_rank.get(m) if choice else None
            w.writerow([m, b, f"{s.mean:.6g}", f"{s.std:.6g}", s.n, "" if rank is None else f"{rank:.4g}",
                        int(bool(choice and m in choice.order)), int(bool(choice and m in choice.tied)),
                        int(bool(choice and m == choice.chosen))])
    return buf.getvalue()


def _grid_cells(scores: Scores, benchmark: str) -> dict[tuple[float, str], dict[tuple[float, float], float]]:
    """(tau, form) -> (lambda_tsr, lambda_csa) -> mean score; settings with ``lambda_csa = 0`` appear in every
    panel (tau and the form do nothing there)."""
    panels: dict[tuple[float, str], dict[tuple[float, float], float]] = {}
    flat: dict[tuple[float, float], float] = {}
    for m, per in scores.items():
        config = repmtl_config(m)
        if config is None or benchmark not in per:
            continue
        cell = (config.lambda_tsr, config.lambda_csa)
        if config.lambda_csa == 0:
            flat[cell] = per[benchmark].mean
        else:
            panels.setdefault((config.tau, config.csa_form), {})[cell] = per[benchmark].mean
    for cells in panels.values():
        cells.update(flat)
    return panels


def selection_figure(scores: Scores) -> Any | None:
    """The heat map figure (None when the grid has no Rep-MTL setting with ``lambda_csa > 0``)."""
    benchmarks = sorted({b for per in scores.values() for b in per})
    cells = {b: _grid_cells(scores, b) for b in benchmarks}
    keys = sorted({k for c in cells.values() for k in c})
    if not keys:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(len(benchmarks), len(keys), figsize=(2.6 * len(keys) + 1, 2.4 * len(benchmarks)),
                             squeeze=False)
    for row, b in zip(axes, benchmarks):
        values = [v for c in cells[b].values() for v in c.values()]
        vmin, vmax = min(values), max(values)
        for ax, key in zip(row, keys):
            grid = cells[b].get(key, {})
            tsr = sorted({k[0] for c in cells[b].values() for k in c})
            csa = sorted({k[1] for c in cells[b].values() for k in c})
            img = np.full((len(tsr), len(csa)), np.nan)
            for (t, c), v in grid.items():
                img[tsr.index(t), csa.index(c)] = v
            im = ax.imshow(img, cmap="viridis", vmin=vmin, vmax=vmax, origin="lower")
            for i in range(len(tsr)):
                for j in range(len(csa)):
                    if not np.isnan(img[i, j]):
                        ax.text(j, i, f"{img[i, j]:.1f}", ha="center", va="center", fontsize=6, color="w")
            ax.set_xticks(range(len(csa)), [f"{c:g}" for c in csa], fontsize=7)
            ax.set_yticks(range(len(tsr)), [f"{t:g}" for t in tsr], fontsize=7)
            ax.set_xlabel("lambda_csa", fontsize=7)
            if ax is row[0]:
                ax.set_ylabel("lambda_tsr", fontsize=7)
            ax.set_title(f"{b}: tau={key[0]:g}, {key[1]}", fontsize=8)
        fig.colorbar(im, ax=list(row), shrink=0.9).set_label("val Δp_task (%)\nhigher is better", fontsize=7)
    return fig


def write_selection(grid: Sequence[RunSpec], out: Path, header: str = "") -> tuple[Choice | None, list[Path]]:
    """Score ``grid`` on validation, apply the rule and write the selection files into ``out``.

    Returns:
        The rule's outcome (None when it cannot choose: the reason is in ``selection.md``) and the paths
        written.
    """
    scores, problems = score_grid(grid)
    try:
        choice, error = choose(scores), ""
    except ValueError as exc:
        choice, error = None, str(exc)
    written = [atomic_write_text(out / "selection.md", render_selection(scores, choice, header, problems, error)),
               atomic_write_text(out / "selection.csv", render_selection_csv(scores, choice))]
    if choice is not None:
        written.append(atomic_write_text(out / "selection_top.txt", "".join(f"{m}\n" for m in choice.order)))
    fig = selection_figure(scores)
    if fig is not None:
        written.append(atomic_write(out / "selection_heatmap.png",
                                    lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight")))
        _pyplot().close(fig)
    return choice, written


__all__ = ["render_selection", "render_selection_csv", "selection_figure", "write_selection"]
