"""Δp: the paper's rows reproduced from their published mean metrics; baselines and baseline files."""

from __future__ import annotations

import json
import math

import pytest

from libmtl_repmtl.benchmarks import get
from libmtl_repmtl.training.deltap import DeltaP, delta_p, validate_baseline
from libmtl_repmtl.training.experiment import resolve_baseline

PAPER = ("nyuv2", "cityscapes", "office-31", "office-home")
#: The benchmarks' own tables (each module of libmtl_repmtl.benchmarks holds its baseline and published rows).
BASELINES = {b: get(b).baseline.values for b in PAPER}
SPEC_BASELINES_PRINTED = {b: get(b).baseline.printed for b in PAPER}
PUBLISHED_DELTA_P_TASK = {b: get(b).published.delta_p_task for b in PAPER}
PUBLISHED_DELTA_P_METRIC = {b: get(b).published.delta_p_metric for b in PAPER}
PUBLISHED_METRICS = {b: get(b).published.metrics for b in PAPER}


def higher_better(benchmark):
    return get(benchmark).higher_better()


def metric_names(benchmark):
    return get(benchmark).metric_names()


def printed_to_metric_units(benchmark, row):
    return get(benchmark).baseline.to_metric_units(row)


def builtin_baseline(benchmark):
    baseline = get(benchmark).baseline
    if baseline is None:
        raise ValueError(f"{benchmark} has no built-in baseline")
    return baseline.values


NYU_EW = {"segmentation": [53.93, 75.53], "depth": [0.3825, 0.1577], "normal": [23.57, 17.01, 35.04, 60.99, 72.05]}


def test_nyuv2_ew_row():
    # Rep-MTL paper Table 1 (= LibMTL / DB-MTL papers' EW row): -1.78 / -3.85
    r = delta_p(NYU_EW, SPEC_BASELINES_PRINTED["nyuv2"], higher_better("nyuv2"))
    assert isinstance(r, DeltaP)
    assert r.task == pytest.approx(-1.78, abs=0.005)
    assert r.metric == pytest.approx(-3.85, abs=0.005)


def test_nyuv2_repmtl_row():
    # Rep-MTL paper Table 1, Rep-MTL (EW): 54.59 76.04 | 0.3750 0.1542 | 21.91 15.28 38.37 64.72 75.05 -> +1.70 / +0.95
    r = delta_p(PUBLISHED_METRICS["nyuv2"]["RepMTL"], SPEC_BASELINES_PRINTED["nyuv2"], higher_better("nyuv2"))
    assert r.task == pytest.approx(1.70, abs=0.005)
    assert r.metric == pytest.approx(0.95, abs=0.005)


def test_office31_repmtl_row():
    # Table 5: 85.93 98.54 98.67 vs 86.61 95.63 96.85:
    # (-0.785 + 3.043 + 1.879) / 3 = +1.379 (the paper's +1.31 is the mean of three runs' Δp, not Δp of the means)
    r = delta_p(PUBLISHED_METRICS["office-31"]["RepMTL"], SPEC_BASELINES_PRINTED["office-31"],
                higher_better("office-31"))
    assert r.task == pytest.approx(1.379, abs=0.002)
    assert r.task == r.metric  # one metric per task


@pytest.mark.parametrize("bench", list(PUBLISHED_METRICS))
def test_published_rows_close_to_published_delta_p(bench):
    for method, row in PUBLISHED_METRICS[bench].items():
        r = delta_p(row, SPEC_BASELINES_PRINTED[bench], higher_better(bench))
        assert r.task == pytest.approx(PUBLISHED_DELTA_P_TASK[bench][method], abs=0.1), method
        if method in PUBLISHED_DELTA_P_METRIC.get(bench, {}):
            assert r.metric == pytest.approx(PUBLISHED_DELTA_P_METRIC[bench][method], abs=0.01), method


@pytest.mark.parametrize("bench", list(BASELINES))
def test_units_do_not_change_delta_p(bench):
    row = PUBLISHED_METRICS[bench]["EW"]
    a = delta_p(row, SPEC_BASELINES_PRINTED[bench], higher_better(bench))
    b = delta_p(printed_to_metric_units(bench, row), builtin_baseline(bench), higher_better(bench))
    assert a.task == pytest.approx(b.task) and a.metric == pytest.approx(b.metric)


def test_builtin_baselines_in_metric_units():
    nyu = builtin_baseline("NYUv2")
    assert nyu["segmentation"] == pytest.approx([0.5350, 0.7539])
    assert nyu["depth"] == pytest.approx([0.3926, 0.1605])
    assert nyu["normal"] == pytest.approx([21.99, 15.16, 0.3904, 0.6500, 0.7516])
    assert builtin_baseline("cityscapes")["depth"] == pytest.approx([0.01282, 43.53])
    oh = builtin_baseline("office-home")
    got = [oh[d][0] for d in ("Art", "Clipart", "Product", "Real_World")]
    assert got == pytest.approx([0.6559, 0.7960, 0.9047, 0.8])
    for b, row in BASELINES.items():
        assert {t: len(v) for t, v in row.items()} == {t: len(v) for t, v in metric_names(b).items()}
    with pytest.raises(ValueError):
        builtin_baseline("multimnist")


def test_definition_and_errors():
    # one higher-better metric +10 %, one lower-better metric 20 % worse: task 1: (10 - 20) / 2 = -5;
    # task 2: +50 -> Δp_task = 22.5, Δp_metric = (10 - 20 + 50) / 3
    r = delta_p({"a": [1.1, 1.2], "b": [3.0]}, {"a": [1.0, 1.0], "b": [2.0]}, {"a": [1, 0], "b": [True]})
    assert r == pytest.approx((22.5, 40 / 3))
    with pytest.raises(ValueError, match="no baseline"):
        delta_p({"c": [1.0]}, {"a": [1.0]}, {"c": [1]})
    with pytest.raises(ValueError, match="must match"):
        delta_p({"a": [1.0]}, {"a": [1.0, 2.0]}, {"a": [1]})
    with pytest.raises(ValueError, match="non-zero"):
        delta_p({"a": [1.0]}, {"a": [0.0]}, {"a": [1]})


def _resolve(benchmark: str, baseline, tasks=None):
    spec = get(benchmark)
    return resolve_baseline(spec, baseline, spec.task_dict(list(tasks or spec.tasks), {}))


def test_baseline_file(tmp_path):
    p = tmp_path / "b.json"
    p.write_text(json.dumps({"segmentation": [0.6, 0.9], "depth": {"rel_err": 40.0, "abs_err": 0.013}}))
    assert _resolve("cityscapes", p) == ({"segmentation": [0.6, 0.9], "depth": [0.013, 40.0]}, str(p))
    assert _resolve("cityscapes", p, ["depth"])[0] == {"depth": [0.013, 40.0]}  # a task the run does not train
    p.write_text(json.dumps({"cityscapes": {"segmentation": [0.6, 0.9], "depth": [0.013, 40.0]}, "nyuv2": {}}))
    assert _resolve("cityscapes", p)[0] == {"segmentation": [0.6, 0.9], "depth": [0.013, 40.0]}
    p.write_text(json.dumps({"segmentaton": [0.6, 0.9], "depth": [0.013, 40.0]}))  # misspelt: never dropped
    with pytest.raises(ValueError, match=r"b\.json: unknown task\(s\) \['segmentaton'\] for cityscapes"):
        _resolve("cityscapes", p)
    p.write_text(json.dumps({"segmentation": [0.6]}))
    with pytest.raises(ValueError, match="has 1 values but cityscapes has 2 metrics"):
        _resolve("cityscapes", p)
    p.write_text(json.dumps({"segmentation": [69.06, 91.54]}))
    with pytest.raises(ValueError, match="looks like percent"):
        _resolve("cityscapes", p)
    p.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        _resolve("cityscapes", p)
    with pytest.raises(ValueError, match="cannot read the file"):
        _resolve("cityscapes", tmp_path / "missing.json")


def test_baseline_file_of_a_benchmark_without_a_published_row(tmp_path):
    """A CPU benchmark's baseline file is checked against the run's metrics too: no key, metric or value is
    silently dropped."""
    p = tmp_path / "b.json"
    p.write_text(json.dumps({"left": [0.9], "right": {"Acc": 0.8}}))
    assert _resolve("multimnist", p)[0] == {"left": [0.9], "right": [0.8]}
    for table, match in (({"lft": [0.9], "right": [0.8]}, r"unknown task\(s\) \['lft'\] for multimnist"),
                         ({"left": {"acc": 0.9}}, r"metrics must be exactly \['Acc'\]"),
                         ({"left": [None]}, "must be a finite non-zero number"),
                         ({"left": [0.9, 0.1]}, "has 2 values but the task has 1 metrics")):
        p.write_text(json.dumps(table))
        with pytest.raises(ValueError, match=match):
            _resolve("multimnist", p)


def test_spec_baseline_is_the_benchmarks_row() -> None:
    table, source = _resolve("cityscapes", "spec")
    assert source == "spec (cityscapes)" and set(table) == {"segmentation", "depth"}
    assert _resolve("multimnist", "spec") == (None, None)  # no published row
    assert _resolve("cityscapes", "none") == (None, None)


def test_validate_baseline_other_benchmarks() -> None:
    # other benchmarks: any task names, lists of numbers
    assert validate_baseline({"left": [0.9], "right": [0.8]}, "multimnist") == {"left": [0.9], "right": [0.8]}
    with pytest.raises(ValueError, match="non-zero"):
        validate_baseline({"left": ["x"]}, "multimnist")


def test_published_table_matches_spec():
    assert PUBLISHED_DELTA_P_TASK["nyuv2"]["EW"] == -1.78 and PUBLISHED_DELTA_P_TASK["nyuv2"]["RepMTL"] == 1.70
    assert PUBLISHED_DELTA_P_TASK["cityscapes"]["RepMTL"] == 0.62
    assert PUBLISHED_DELTA_P_TASK["office-31"]["RepMTL"] == 1.31
    assert PUBLISHED_DELTA_P_TASK["office-home"]["RepMTL"] == 0.41


def test_partial_delta_p_equals_delta_p_on_complete_tables_and_skips_unusable_baselines():
    from libmtl_repmtl.training.deltap import partial_delta_p

    res, base, hb = {"a": [1.1, 1.2], "b": [3.0]}, {"a": [1.0, 1.0], "b": [2.0]}, {"a": [1, 0], "b": [True]}
    assert partial_delta_p(res, base, hb) == delta_p(res, base, hb)
    # task c has no baseline, a's second metric a zero one, b's a missing one: Δp over a[0] alone
    r = partial_delta_p({**res, "c": [5.0]}, {"a": [1.0, 0.0], "b": [None]}, {**hb, "c": [1]})
    assert r is not None and r.task == pytest.approx(10.0) and r.metric == pytest.approx(10.0)
    assert partial_delta_p({"c": [1.0]}, {"a": [1.0]}, {"c": [1]}) is None
    nan = partial_delta_p({"a": [float("nan"), 1.0]}, {"a": [1.0, 1.0]}, {"a": [1, 1]})
    assert nan is not None and math.isnan(nan.task)  # a non-finite result is not silently dropped
