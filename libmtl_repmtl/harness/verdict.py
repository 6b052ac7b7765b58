"""The verdict of a grid (docs/method.md, "Choosing the defaults"): on each benchmark a method ``beats`` a
reference when its mean test Δp_task exceeds the reference's by more than the seed spread (the larger of the two
standard deviations over seeds), ``is below`` it symmetrically, else is ``on par``; plus the ablation table
(each Rep-MTL term alone and both) beside the paper's ablation. Written as ``verdict.md``, atomically."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from libmtl_repmtl.harness.report import SummaryRow
from libmtl_repmtl.training.io import atomic_write_text

#: The paper's ablation (Δp_task, %, NYUv2 / Cityscapes): both terms, CSA only, TSR only.
PAPER_ABLATION = {"both (Rep-MTL)": (1.70, 0.62), "CSA only": (1.06, 0.21), "TSR only": (0.23, -0.34)}

#: Our rows of the ablation: what each preset switches on.
ABLATION_METHODS = (("both (Rep-MTL)", "RepMTL"), ("CSA only", "RepMTL-CSA"), ("TSR only", "RepMTL-TSR"),
                    ("neither (logEW)", "logEW"))


@dataclass(frozen=True)
class Comparison:
    """One benchmark's comparison of ``method`` with ``reference`` (test Δp_task, percent)."""

    benchmark: str
    method: str
    reference: str
    diff: float
    spread: float
    outcome: str  # "beats", "on par", "is below"
    n_seeds: int


def _ours(rows: Sequence[SummaryRow]) -> dict[tuple[str, str], SummaryRow]:
    """The grid's own rows (not the published ones) by (benchmark, method)."""
    return {(r.benchmark, r.method): r for r in rows if r.source == "ours"}


def compare(rows: Sequence[SummaryRow], method: str, reference: str) -> list[Comparison]:
    """``method`` against ``reference`` on every benchmark where both have a Δp_task row of ours."""
    ours = _ours(rows)
    out = []
    for b in dict.fromkeys(r.benchmark for r in rows):
        m, ref = ours.get((b, method)), ours.get((b, reference))
        if m is None or ref is None or m.delta_p_task is None or ref.delta_p_task is None:
            continue
        diff = m.delta_p_task[0] - ref.delta_p_task[0]
        spread = max(m.delta_p_task[1], ref.delta_p_task[1])
        outcome = "beats" if diff > spread else "is below" if diff < -spread else "on par"
        out.append(Comparison(b, method, reference, diff, spread, outcome, min(m.n_seeds, ref.n_seeds)))
    return out


def render_verdict(rows: Sequence[SummaryRow], method: str = "RepMTL", reference: str = "logEW",
                   header: str = "") -> str:
    """``verdict.md``: the comparison per benchmark, then the ablation table."""
    out = io.StringIO()
    out.write(f"# Verdict: {method} against {reference}\n\n")
    if header:
        out.write(header.rstrip() + "\n\n")
    out.write(f"Test Δp_task (percent, against this grid's STL runs, best epoch chosen on validation). `{method}` "
              f"beats `{reference}` on a benchmark when the difference of the means exceeds the seed spread (the "
              "larger of the two standard deviations over seeds), is below it when it is less than minus the "
              "spread, else the two are on par.\n\n")
    out.write("| benchmark | difference | spread | outcome | seeds |\n|---|---|---|---|---|\n")
    for c in compare(rows, method, reference):
        phrase = {"on par": "is on par with"}.get(c.outcome, c.outcome)
        out.write(f"| {c.benchmark} | {c.diff:+.2f} | {c.spread:.2f} | {c.method} {phrase} {c.reference} | "
                  f"{c.n_seeds} |\n")
    ours = _ours(rows)
    benchmarks = list(dict.fromkeys(b for b, _ in ours))
    out.write("\n## Ablation\n\nTest Δp_task, mean ± std over seeds; the paper's columns are its NYUv2 and "
              "Cityscapes ablation (Δp_task, mean of 3 runs).\n\n")
    out.write("| terms | method | " + " | ".join(benchmarks) + " | paper NYUv2 | paper Cityscapes |\n")
    out.write("|" + "|".join("---" for _ in range(len(benchmarks) + 4)) + "|\n")
    for label, m in ABLATION_METHODS:
        cells = []
        for b in benchmarks:
            r = ours.get((b, m))
            dp = r.delta_p_task if r else None
            cells.append("–" if dp is None else f"{dp[0]:+.2f} ± {dp[1]:.2f}")
        paper = PAPER_ABLATION.get(label)
        cells += [f"{paper[0]:+.2f}", f"{paper[1]:+.2f}"] if paper else ["–", "–"]
        out.write(f"| {label} | `{m}` | " + " | ".join(cells) + " |\n")
    return out.getvalue()


def write_verdict(rows: Sequence[SummaryRow], out: Path, method: str = "RepMTL", reference: str = "logEW",
                  header: str = "") -> Path:
    """Write ``out/verdict.md``; returns its path."""
    return atomic_write_text(out / "verdict.md", render_verdict(rows, method, reference, header))


__all__ = ["ABLATION_METHODS", "PAPER_ABLATION", "Comparison", "compare", "render_verdict", "write_verdict"]
