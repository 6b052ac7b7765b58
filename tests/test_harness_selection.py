"""The sweep's validation scoring and the pre-registered selection rule (harness.selection, selection_report)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from libmtl_repmtl.core.presets import PRESETS, parse_method
from libmtl_repmtl.harness.cli import main
from libmtl_repmtl.harness.plan import SUITES, plan_grid
from libmtl_repmtl.harness.selection import Score, choose, paper_distance, repmtl_config, score_grid
from libmtl_repmtl.training.results import read_results

pytestmark = pytest.mark.usefixtures("tiny_digits")  # tests/conftest.py

A = "RepMTL[lambda_tsr=0.9,lambda_csa=0.9,tau=0.1,csa_form=printed]"  # the paper's numbers: distance 0
B = "RepMTL[lambda_tsr=0.1,lambda_csa=0.1,tau=1,csa_form=infonce]"
C = "RepMTL[lambda_tsr=0.3,lambda_csa=0.3,tau=0.5,csa_form=printed]"
OFF = "RepMTL[lambda_tsr=0.9,lambda_csa=0]"


def table(rows: dict[str, dict[str, tuple[float, float]]]) -> dict[str, dict[str, Score]]:
    return {m: {b: Score(mean, std, 2) for b, (mean, std) in per.items()} for m, per in rows.items()}


def test_paper_distance_golden_values() -> None:
    assert paper_distance(parse_method("RepMTL-paper").config) == 0.0
    assert paper_distance(parse_method(B).config) == pytest.approx(
        2 * math.log10(9) + 1 + 1)  # lambdas 0.1 (x 1/9 each), tau 1 (x 10), infonce
    assert paper_distance(parse_method(OFF).config) == math.inf
    assert repmtl_config("EW") is None and repmtl_config("STL") is None
    assert repmtl_config("logEW").lambda_csa == 0.0


def test_rule_best_rank_then_tie_band_then_closest_to_the_paper() -> None:
    # B is best on both benchmarks; A is within B's spread on both, so tied, and A is the paper's setting.
    scores = table({B: {"x": (5.0, 1.0), "y": (3.0, 0.5)}, A: {"x": (4.5, 2.0), "y": (2.6, 0.1)},
                    C: {"x": (1.0, 0.1), "y": (2.9, 0.1)}, OFF: {"x": (9.0, 0.1), "y": (9.0, 0.1)},
                    "logEW": {"x": (8.0, 0.1), "y": (8.0, 0.1)}, "EW": {"x": (99.0, 0), "y": (99.0, 0)}})
    choice = choose(scores)
    assert choice.best == B  # OFF and logEW rank higher but switch a term off: not eligible; EW is not Rep-MTL
    assert set(choice.tied) == {B, A} and choice.chosen == A
    assert choice.order == (B, A, C)
    assert choice.mean_rank[OFF] == 1.0 and choice.mean_rank[B] == 3.0 and "EW" not in choice.mean_rank
    # A falls out of the band on one benchmark: B stays.
    scores[A]["y"] = Score(2.4, 0.1, 2)
    assert choose(scores).chosen == B


def test_rule_refuses_a_grid_without_eligible_settings() -> None:
    with pytest.raises(ValueError, match="both lambdas > 0"):
        choose(table({OFF: {"x": (1.0, 0.1)}, "logEW": {"x": (0.0, 0.1)}}))
    with pytest.raises(ValueError, match="run the grid first"):
        choose(table({"EW": {"x": (1.0, 0.1)}}))


def _recomputed_val_score(res_path: Path, stl: dict[str, list[float]]) -> float:
    """Independent reading: max over epochs of the mean over tasks of the mean signed relative change (%)."""
    res = json.loads(res_path.read_text())
    best = -math.inf
    for ep in res["epochs"]:
        per_task = []
        for t in res["tasks"]:
            ch = [(1 if res["higher_better"][t][m] else -1) * (ep["val"][t][m] - b) / b * 100
                  for m, b in zip(res["metric_names"][t], stl[t])]
            per_task.append(sum(ch) / len(ch))
        best = max(best, sum(per_task) / len(per_task))
    return best


def test_sweep_end_to_end_scores_on_validation_and_chooses(tmp_path: Path, capsys) -> None:
    out = tmp_path / "sweep"
    methods = ["logEW", A, B, "STL"]
    argv = ["--benchmarks", "multimnist", "--methods", *methods, "--seeds", "0", "1", "--epochs", "2", "--out",
            str(out), "--select", "--option", "n_train=96", "n_val=48", "n_test=48", "batch_size=32",
            "pretrained=none"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    grid = plan_grid(["multimnist"], methods, [0, 1], out, {"multimnist": {"epochs": 2}})
    scores, problems = score_grid(grid)
    assert not problems and set(scores) == {"logEW", A, B}
    # The STL validation baseline, read independently: each task's run at its best epoch, mean over seeds.
    stl: dict[str, list[float]] = {}
    for task in ("left", "right"):
        vals = []
        for seed in (0, 1):
            res = read_results(out / "multimnist" / "STL" / f"seed{seed}" / task / "results.json")
            vals.append(res.best_record().val[task]["Acc"])
        stl[task] = [sum(vals) / 2]
    per_seed = [_recomputed_val_score(out / "multimnist" / A / f"seed{s}" / "results.json", stl) for s in (0, 1)]
    assert scores[A]["multimnist"].mean == pytest.approx(sum(per_seed) / 2)
    assert scores[A]["multimnist"].n == 2
    # The rule's choice is one of the eligible settings, and the files say so.
    chosen = choose(scores).chosen
    assert chosen in {A, B} and f"selection (validation, pre-registered rule): {chosen}" in printed
    md = (out / "selection.md").read_text()
    assert f"**Chosen: `{chosen}`.**" in md and "`logEW`" in md
    rows = list(csv.DictReader((out / "selection.csv").open()))
    assert {r["method"] for r in rows} == {"logEW", A, B} and sum(int(r["chosen"]) for r in rows) == 1
    top = (out / "selection_top.txt").read_text().split()
    assert set(top) == {A, B} and top[0] == choose(scores).best
    assert (out / "selection_heatmap.png").read_bytes()[:4] == b"\x89PNG"
    # The test splits are not what the score reads: changing a run's test scores changes nothing.
    path = out / "multimnist" / A / "seed0" / "results.json"
    res = json.loads(path.read_text())
    assert res["epochs"][0]["val"] != res["epochs"][0]["test"]


def test_methods_from_a_selection_file(tmp_path: Path, capsys) -> None:
    listing = tmp_path / "top.txt"
    listing.write_text(f"# best first\n{B}\n\n{A}\n{C}\n")
    argv = ["--benchmarks", "multimnist", "--methods", "logEW", "--methods-from", str(listing), "--top", "2",
            "--seeds", "2", "--out", str(tmp_path / "o"), "--dry-run"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"multimnist/{B}/seed2" in printed and f"multimnist/{A}/seed2" in printed and C not in printed
    assert "multimnist/logEW/seed2" in printed
    with pytest.raises(SystemExit, match="lists no method"):
        (tmp_path / "empty.txt").write_text("# nothing\n")
        main(["--benchmarks", "multimnist", "--methods-from", str(tmp_path / "empty.txt"), "--dry-run"])
    with pytest.raises(SystemExit, match="cannot read"):
        main(["--benchmarks", "multimnist", "--methods-from", str(tmp_path / "missing.txt"), "--dry-run"])
    with pytest.raises(SystemExit, match="--top needs --methods-from"):
        main(["--benchmarks", "multimnist", "--methods", "EW", "--top", "1", "--dry-run"])


def test_sweep_suites_select_by_default_and_presets_are_settings() -> None:
    assert SUITES["cpu-sweep"].select and not SUITES["cpu"].select
    assert all(repmtl_config(p) is not None for p in PRESETS)


def _row(benchmark: str, method: str, mean: float, std: float, seeds: int = 5):
    from libmtl_repmtl.harness.report import SummaryRow

    return SummaryRow(benchmark, method, "ours", seeds, {}, (mean, std), None, None, None)


def test_verdict_outcomes_follow_the_seed_spread_rule(tmp_path: Path) -> None:
    from libmtl_repmtl.harness.verdict import compare, write_verdict

    rows = [_row("a", "RepMTL", 2.0, 0.5), _row("a", "logEW", 1.0, 0.8),  # +1.0 > 0.8: beats
            _row("b", "RepMTL", 1.0, 0.5), _row("b", "logEW", 1.4, 0.2),  # -0.4 within 0.5: on par
            _row("c", "RepMTL", -3.0, 0.1), _row("c", "logEW", 0.0, 1.0),  # -3.0 < -1.0: is below
            _row("c", "RepMTL-CSA", 0.5, 0.1), _row("d", "RepMTL", 1.0, 0.1)]  # d: no logEW row
    got = {c.benchmark: (c.outcome, round(c.diff, 6), c.spread) for c in compare(rows, "RepMTL", "logEW")}
    assert got == {"a": ("beats", 1.0, 0.8), "b": ("on par", -0.4, 0.5), "c": ("is below", -3.0, 1.0)}
    md = write_verdict(rows, tmp_path).read_text()
    assert "| a | +1.00 | 0.80 | RepMTL beats logEW | 5 |" in md
    assert "| CSA only | `RepMTL-CSA` | – | – | +0.50 ± 0.10 | – | +1.06 | +0.21 |" in md
    assert SUITES["cpu"].verdict and not SUITES["cpu-sweep"].verdict
