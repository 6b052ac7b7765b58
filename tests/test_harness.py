"""The comparison harness end to end on tiny MultiMNIST / digit data, resumability, Δp and the grid."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

import libmtl_repmtl.data.multimnist as mm
from libmtl_repmtl.harness import report
from libmtl_repmtl.harness.cli import main
from libmtl_repmtl.harness.methods import method_spec
from libmtl_repmtl.harness.plan import SUITES, plan_grid
from libmtl_repmtl.harness.report import delta_p
from libmtl_repmtl.harness.runs import is_complete
from libmtl_repmtl.training.experiment import run_experiment
from libmtl_repmtl.training.results import Baseline, DeltaP, EpochRecord, RunResults

#: Tiny data for the multimnist grids; digits reads max_per_domain instead (a key a grid's benchmarks do not read
#: is an error).
TINY = ["n_train=128", "n_val=64", "n_test=64", "batch_size=32"]
TINY_DIGITS = ["max_per_domain=40", "batch_size=32"]


pytestmark = pytest.mark.usefixtures("tiny_digits")  # tests/conftest.py


def contract_results(test: dict, higher_better: dict, *, status: str = "complete", delta_p_task: float | None = None,
                     train_seconds: float = 1.0, peak_memory_mb: float | None = None) -> dict:
    """A one-epoch ``results.json`` content in the results contract (training.results)."""
    tasks = list(test)
    epochs = [] if status == "running" else [EpochRecord(
        epoch=0, train_loss={t: 1.0 for t in tasks}, train=test, train_seconds=train_seconds, test=test,
        test_loss={t: 1.0 for t in tasks}, test_seconds=0.1, lr=[1e-3],
        delta_p={"test": DeltaP(delta_p_task, None if delta_p_task is None else delta_p_task / 2)},
        peak_memory_mb=peak_memory_mb)]
    return RunResults(
        status=status, error=None, config={}, benchmark=None, weighting="EW", arch="HPS", tasks=tasks, device="cpu",
        metric_names={t: list(ms) for t, ms in test.items()}, higher_better=higher_better,
        baseline=Baseline(None, None), epochs=epochs, epochs_total=1, best_epoch=0 if epochs else None,
        best_epoch_selection="val", peak_memory_mb=peak_memory_mb, peak_memory_kind="test").to_dict()


def test_grid_end_to_end_then_resume(tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench"
    argv = ["--benchmarks", "multimnist", "--methods", "EW", "RepMTL", "--seeds", "0", "--epochs", "1",
            "--out", str(out), "--option", *TINY]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert "ran 2, skipped 0" in first
    for m in ("EW", "RepMTL"):
        res = json.loads((out / "multimnist" / m / "seed0" / "results.json").read_text())
        assert res["complete"] and len(res["epochs"]) == 1 and res["best_epoch"] == 0
        assert (out / "multimnist" / m / "seed0" / "best.pt").is_file()
    md = (out / "summary.md").read_text()
    assert "| EW | ours | 1 |" in md and "| RepMTL | ours | 1 |" in md
    assert "no STL runs" in md  # CPU benchmarks have no spec baseline and no STL runs were asked for
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert {r["method"] for r in rows} == {"EW", "RepMTL"}
    assert float(rows[0]["left/Acc_mean"]) >= 0.0 and rows[0]["n_seeds"] == "1"
    for png in ("delta_p.png", "delta_p_vs_time.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    mtime = (out / "multimnist" / "EW" / "seed0" / "results.json").stat().st_mtime_ns
    assert main(argv) == 0
    second = capsys.readouterr().out
    assert "ran 0, skipped 2" in second and "already complete" in second
    assert (out / "multimnist" / "EW" / "seed0" / "results.json").stat().st_mtime_ns == mtime


def test_multi_input_with_stl_baseline(tmp_path: Path, capsys) -> None:
    out = tmp_path / "b"
    assert main(["--benchmarks", "digits", "--methods", "EW", "STL", "--epochs", "1",
                 "--out", str(out), "--option", *TINY_DIGITS]) == 0
    for t in mm.DIGIT_DOMAINS:
        assert is_complete(out / "digits" / "STL" / "seed0" / t, 1)
    rows = {r["method"]: r for r in csv.DictReader((out / "summary.csv").open())}
    assert float(rows["STL"]["delta_p_task_mean"]) == pytest.approx(0.0, abs=1e-9)
    assert rows["EW"]["delta_p_task_mean"] != ""
    assert "our STL" in (out / "summary.md").read_text()


def test_dry_run_lists_the_grid(tmp_path: Path, capsys) -> None:
    assert main(["--suite", "cpu", "--out", str(tmp_path), "--dry-run"]) == 0
    text = capsys.readouterr().out
    # 13 multi-task methods + STL (2 tasks / 3 domains / 3 tasks) over 5 fresh seeds on three benchmarks
    assert "grid: 235 runs (0 already complete)" in text
    assert "multimnist/STL/seed104/right" in text and "digits/RepMTL/seed101" in text
    assert "densemnist/RepMTL-paper/seed100" in text and "densemnist/logEW/seed102" in text


def test_suites_hold_what_the_readme_and_the_sweep_plan_say() -> None:
    quick = SUITES["cpu-quick"]
    assert "densemnist" in quick.benchmarks and len(quick.benchmarks) >= 2
    assert {"EW", "logEW", "MGDA", "RepMTL", "STL"} <= set(quick.methods)
    full = SUITES["cpu"]
    assert set(full.benchmarks) == {"multimnist", "digits", "densemnist"} and len(full.seeds) == 5
    assert {"EW", "logEW", "UW", "DWA", "MGDA", "PCGrad", "CAGrad", "IMTL", "GradVac", "RepMTL", "RepMTL-paper",
            "RepMTL-CSA", "RepMTL-TSR", "STL"} == set(full.methods)
    # The sweep's settings: every grid point of docs/method.md once, as distinct configs.
    sweep = SUITES["cpu-sweep"]
    configs = [method_spec(m) for m in sweep.methods if m not in {"EW", "STL"}]
    keys = {(c.weight_args.get("RepMTL_lambda_tsr", 0.9), c.weight_args.get("RepMTL_lambda_csa", 0.9),
             c.weight_args.get("RepMTL_tau"), c.weight_args.get("RepMTL_csa_form")) for c in configs}
    assert len(configs) == len(keys) == 76
    assert not set(sweep.seeds) & set(full.seeds)  # the verdict runs on fresh seeds
    with_csa = {k for k in keys if k[1] > 0}
    assert {k[0] for k in with_csa} == {0.0, 0.1, 0.3, 0.9} and {k[1] for k in with_csa} == {0.1, 0.3, 0.9}
    assert {k[2] for k in with_csa} == {0.1, 0.5, 1.0} and {k[3] for k in with_csa} == {"printed", "infonce"}


def test_ablations_and_single_task_plan(tmp_path: Path) -> None:
    grid = plan_grid(["multimnist"], ["RepMTL-CSA", "RepMTL-TSR", "RepMTL-small", "STL"], [3], tmp_path,
                     {"multimnist": {"epochs": 2}})
    csa, tsr, small, left, right = grid
    assert csa.weighting == "RepMTL" and csa.options["weight_args"] == {"RepMTL_lambda_tsr": 0.0}
    assert tsr.options["weight_args"] == {"RepMTL_lambda_csa": 0.0}
    assert small.arch == "RepHPS" and small.options["weight_args"] == {
        "RepMTL_lambda_tsr": 0.1, "RepMTL_lambda_csa": 0.1, "RepMTL_tau": 1.0}
    assert left.options["tasks"] == ["left"] and right.save_path == tmp_path / "multimnist" / "STL" / "seed3" / "right"
    assert csa.options["epochs"] == 2 and csa.options["seed"] == 3
    assert method_spec("PCGrad").arch == "HPS"
    with pytest.raises(ValueError):
        method_spec("rm -rf")


def test_failed_run_is_recorded_not_fatal(tmp_path: Path, capsys) -> None:
    def runner(benchmark, weighting, arch, dataset_path, save_path, **options):
        if weighting == "MGDA":
            raise RuntimeError("boom")
        return run_experiment(benchmark, weighting, arch, dataset_path, save_path, **options)

    code = main(["--benchmarks", "multimnist", "--methods", "EW", "MGDA", "--epochs", "1", "--out", str(tmp_path),
                 "--option", *TINY], runner=runner)
    assert code == 1
    assert "failed: multimnist/MGDA/seed0: RuntimeError: boom" in capsys.readouterr().out
    assert "boom" in (tmp_path / "multimnist" / "MGDA" / "seed0" / "error.txt").read_text()
    assert "Missing or failed runs" in (tmp_path / "summary.md").read_text()


def test_trainer_style_results_and_published_rows(tmp_path: Path, monkeypatch) -> None:
    """A results.json in the per-epoch layout, spec baseline from the file, published rows marked."""
    for s, dp in ((0, 1.0), (1, 2.0)):
        d = tmp_path / "nyuv2" / "RepMTL" / f"seed{s}"
        d.mkdir(parents=True)
        (d / "results.json").write_text(json.dumps(contract_results(
            {"depth": {"abs_err": 0.5}}, {"depth": {"abs_err": False}}, delta_p_task=dp, train_seconds=2.0,
            peak_memory_mb=2**30 / 2**20)))
    monkeypatch.setattr(report, "published_rows", lambda: {"NYUv2": {"EW": -1.78, "RepMTL": 1.70}})
    grid = plan_grid(["nyuv2"], ["RepMTL"], [0, 1], tmp_path, {"nyuv2": {"epochs": 1}})
    rows, _ = report.write_summary(grid, tmp_path)
    ours = next(r for r in rows if r.source == "ours")
    assert ours.delta_p_task[0] == pytest.approx(1.5) and ours.peak_memory_mb[0] == pytest.approx(1024.0)
    assert ours.seconds_per_epoch[0] == pytest.approx(2.0)
    md = (tmp_path / "summary.md").read_text()
    assert "| RepMTL (published) | published |" in md and "+1.70" in md and "1.50 ± 0.71" in md


def test_delta_p_signs() -> None:
    base = {"seg": {"miou": 50.0}, "depth": {"abs": 0.4, "rel": 0.2}}
    hb = {"seg": {"miou": True}, "depth": {"abs": False, "rel": False}}
    task, metric = delta_p({"seg": {"miou": 55.0}, "depth": {"abs": 0.44, "rel": 0.2}}, base, hb)
    assert task == pytest.approx((10.0 + (-10.0 + 0.0) / 2) / 2)
    assert metric == pytest.approx((10.0 - 10.0 + 0.0) / 3)


def test_through_the_trainers_run_experiment(tmp_path: Path, capsys) -> None:
    """The CPU benchmarks registered in the trainer's registry; the grid runs through run_experiment."""
    out = tmp_path / "t"
    argv = ["--benchmarks", "multimnist", "--methods", "EW", "RepMTL-TSR", "--epochs", "1",
            "--out", str(out), "--option", *TINY]
    assert main(argv) == 0
    assert "runner: libmtl_repmtl.training.run_experiment" in capsys.readouterr().out
    res = json.loads((out / "multimnist" / "RepMTL-TSR" / "seed0" / "results.json").read_text())
    assert res["complete"] and res["weighting"] == "RepMTL"
    assert res["config"]["weight_args"]["RepMTL_lambda_csa"] == 0.0
    rows = {r["method"]: r for r in csv.DictReader((out / "summary.csv").open())}
    assert set(rows) == {"EW", "RepMTL-TSR"} and rows["EW"]["seconds_per_epoch_mean"] != ""
    assert main(argv) == 0
    assert "ran 0, skipped 2" in capsys.readouterr().out


def test_interrupted_trainer_run_is_resumed(tmp_path: Path) -> None:
    """An incomplete run with a last.pt is re-run with resume=True when the runner accepts it."""
    seen: list[dict] = []

    def runner(benchmark, weighting, arch, dataset_path, save_path, *, resume=False, **options):
        seen.append({"resume": resume, **options})
        Path(save_path, "results.json").write_text(json.dumps(contract_results({"a": {"Acc": 1.0}},
                                                                               {"a": {"Acc": True}})))

    run_dir = tmp_path / "multimnist" / "EW" / "seed0"
    run_dir.mkdir(parents=True)
    (run_dir / "last.pt").write_bytes(b"x")
    (run_dir / "results.json").write_text(json.dumps(contract_results({"a": {"Acc": 1.0}}, {"a": {"Acc": True}},
                                                                      status="running")))
    assert main(["--benchmarks", "multimnist", "--methods", "EW", "--epochs", "1", "--out", str(tmp_path)],
                runner=runner) == 0
    assert seen == [{"resume": True, "epochs": 1, "seed": 0, "device": "cpu"}]


@pytest.mark.parametrize("dry", [True, False])
def test_unknown_method_or_benchmark_is_refused_before_anything_runs(tmp_path: Path, dry: bool) -> None:
    flags = ["--dry-run"] if dry else []
    with pytest.raises(SystemExit, match=r"--methods RepMLT: unknown weighting 'RepMLT'.*EW"):
        main(["--benchmarks", "multimnist", "--methods", "EW", "RepMLT", "--out", str(tmp_path), *flags])
    with pytest.raises(SystemExit, match=r"--benchmarks: unknown benchmark 'multimnst'; registered: .*multimnist"):
        main(["--benchmarks", "multimnst", "--methods", "EW", "--out", str(tmp_path), *flags])
    assert not any(tmp_path.iterdir())  # nothing ran, nothing written


def test_only_files_written_are_reported(tmp_path: Path, capsys) -> None:
    def runner(*args, **kwargs):
        raise RuntimeError("boom")

    assert main(["--benchmarks", "multimnist", "--methods", "EW", "--epochs", "1", "--out", str(tmp_path)],
                runner=runner) == 1
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'summary.md'}, {tmp_path / 'summary.csv'}\n" in out
    assert "delta_p.png" not in out and not (tmp_path / "delta_p.png").exists()


def _row(method: str, seeds: int, dp: float | None, source: str = "ours") -> report.SummaryRow:
    std = float("nan") if source == "published" else 0.5
    return report.SummaryRow("multimnist", method, source, seeds, {"left/Acc": (0.9, 0.01)},
                             None if dp is None else (dp, std), None, (1.0, 0.1), (100.0, 1.0), baseline="our STL")


def test_summary_states_settings_and_shows_spread_only_with_two_seeds() -> None:
    one = report.render_markdown([_row("EW", 1, -2.0), _row("RepMTL-small", 1, -1.0), _row("STL", 1, 0.0)])
    assert "±" not in one and "one seed per method" in one
    assert "published" not in one.lower()  # no published rows: no sentence about them
    assert "- `RepMTL-small`: weighting RepMTL, architecture RepHPS, lambda_tsr=0.1, lambda_csa=0.1, tau=1, " \
           "log_loss=true," in one and "(preset RepMTL-small: both lambdas 0.1, tau 1" in one
    assert "- `EW`: weighting EW, architecture HPS, LibMTL's default settings" in one
    assert "- `STL`: one EW / HPS run per task" in one
    assert "| EW | ours | 1 | 0.9000 | -2.00 |" in one and "higher is better" in one
    two = report.render_markdown([_row("EW", 2, -2.0), _row("RepMTL", 2, 1.0, "published")])
    assert "0.9000 ± 0.0100" in two and "-2.00 ± 0.50" in two
    assert "Rows marked *published*" in two and "| RepMTL (published) | published |" in two


def test_plot_legend_covers_every_colour_stl_marker_and_direction() -> None:
    from libmtl_repmtl.harness.plots import summary_figures

    rows = [_row("EW", 2, -2.0), _row("RepMTL", 2, 1.0), _row("STL", 2, 0.0), _row("RepMTL", 3, 1.7, "published")]
    figs = summary_figures(rows)
    assert set(figs) == {"delta_p.png", "delta_p_vs_time.png"}
    ax = figs["delta_p.png"].axes[0]
    labels = {t.get_text() for t in ax.get_legend().get_texts()}
    assert labels == {"Rep-MTL variants (ours, mean ± std)", "other methods (ours, mean ± std)",
                      "STL (single-task reference)", "published (paper)"}
    assert len(ax.patches) == 2  # EW and RepMTL bars; STL is a marker at 0, not an (empty) bar
    assert "higher is better" in ax.get_ylabel()
    cost = figs["delta_p_vs_time.png"].axes[0]
    assert {t.get_text() for t in cost.get_legend().get_texts()} == {"Rep-MTL variants", "other methods",
                                                                      "STL (all tasks' runs)"}
    assert "higher is better" in cost.get_ylabel()


def test_inline_settings_and_presets_each_get_a_folder_and_are_checked_first(tmp_path: Path, capsys) -> None:
    methods = ["EW", "RepMTL[tau=1, lambda_tsr=0.1]", "RepMTL-paper", "logEW"]
    assert main(["--benchmarks", "multimnist", "--methods", *methods, "--out", str(tmp_path), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "multimnist/RepMTL[lambda_tsr=0.1,tau=1]/seed0" in text and "multimnist/logEW/seed0" in text
    grid = plan_grid(["multimnist"], methods, [0], tmp_path)
    inline = grid[1]
    assert inline.method == "RepMTL[lambda_tsr=0.1,tau=1]" and inline.arch == "RepHPS"
    assert inline.options["weight_args"] == {"RepMTL_lambda_tsr": 0.1, "RepMTL_tau": 1.0}
    assert inline.save_path == tmp_path / "multimnist" / "RepMTL[lambda_tsr=0.1,tau=1]" / "seed0"
    assert grid[3].options["weight_args"]["RepMTL_lambda_csa"] == 0.0 and grid[3].weighting == "RepMTL"
    for bad, why in (("RepMTL[lamda_tsr=0.1]", "unknown setting 'lamda_tsr'"),
                     ("RepMTL[tau=x]", "tau"), ("EW[tau=1]", "EW"),
                     ("RepMTL-papr", "unknown preset 'RepMTL-papr'")):
        for flags in (["--dry-run"], []):
            with pytest.raises(SystemExit, match=rf"--methods.*{why}"):
                main(["--benchmarks", "multimnist", "--methods", "EW", bad, "--out", str(tmp_path / "x"), *flags])
    with pytest.raises(SystemExit, match="same setting"):
        main(["--benchmarks", "multimnist", "--methods", "RepMTL[tau=1]", "RepMTL[tau=1.0]", "--dry-run",
              "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()


def test_inline_setting_runs_and_reports_its_row(tmp_path: Path, capsys) -> None:
    out = tmp_path / "i"
    assert main(["--benchmarks", "multimnist", "--methods", "RepMTL[lambda_csa=0]", "--epochs", "1",
                 "--out", str(out), "--option", *TINY]) == 0
    res = json.loads((out / "multimnist" / "RepMTL[lambda_csa=0]" / "seed0" / "results.json").read_text())
    assert res["complete"] and res["config"]["weight_args"]["RepMTL_lambda_csa"] == 0.0
    md = (out / "summary.md").read_text()
    assert "| RepMTL[lambda_csa=0] | ours | 1 |" in md and "- `RepMTL[lambda_csa=0]`: weighting RepMTL" in md
