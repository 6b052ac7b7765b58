"""The benchmark registry and every registered benchmark's facts (one module each)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from libmtl_repmtl.benchmarks import (
    Baseline,
    Benchmark,
    Task,
    UnknownBenchmarkError,
    canonical_name,
    find,
    get,
    names,
    register,
    task_dict_of,
)
from libmtl_repmtl.benchmarks.office import office_benchmark

ALL = ("cityscapes", "densemnist", "digits", "multimnist", "nyuv2", "office-31", "office-home")
PAPER = ("nyuv2", "cityscapes", "office-31", "office-home")


def test_every_benchmark_is_registered_once_and_found_by_any_spelling():
    assert set(ALL) <= set(names())
    assert get("Office_31").name == "office-31" and get("NYUv2") is get("nyuv2")
    assert canonical_name("Office-Home") == canonical_name("office_home") == "officehome"
    assert find("imagenet") is None
    with pytest.raises(UnknownBenchmarkError, match=r"unknown benchmark 'imagenet'; registered: \[.*'nyuv2'"):
        get("imagenet")
    with pytest.raises(ValueError, match="already registered"):
        register(office_benchmark("office-31"), overwrite=False)


@pytest.mark.parametrize("name", ALL)
def test_task_table_matches_task_dict_and_heads(name):
    bench = get(name)
    td = bench.full_task_dict()
    assert tuple(td) == bench.tasks
    for entry in td.values():
        assert len(entry["metrics"]) == len(entry["weight"]) and set(entry["weight"]) <= {0, 1}
    assert td[bench.tasks[0]]["metrics_fn"] is not bench.full_task_dict()[bench.tasks[0]]["metrics_fn"]
    with pytest.raises(ValueError, match="unknown task"):
        bench.task_dict(["nope"], bench.defaults)
    heads = bench.decoders(list(bench.tasks), {**bench.defaults, "encoder": "tiny"})
    assert isinstance(heads, nn.ModuleDict) and list(heads) == list(bench.tasks)


def test_head_outputs_are_the_declared_ones():
    opts = {"encoder": "tiny"}
    for name in ("multimnist", "digits"):
        bench = get(name)
        enc = bench.encoder_class({**bench.defaults, "pretrained": "none"})()
        side = 36 if name == "multimnist" else 28
        z = enc(torch.zeros(2, 1, side, side))
        for head in bench.decoders(list(bench.tasks), bench.defaults).values():
            assert head(z).shape == (2, 10)
    office = get("office-home")
    heads = office.decoders(["Art"], opts)
    assert heads["Art"].out_features == 65


@pytest.mark.parametrize("name", PAPER)
def test_paper_baselines_cover_every_metric_in_fraction_units(name):
    bench = get(name)
    assert bench.baseline is not None and bench.published is not None
    names_ = bench.metric_names()
    assert {t: len(v) for t, v in bench.baseline.printed.items()} == {t: len(v) for t, v in names_.items()}
    assert {t: len(v) for t, v in bench.baseline.percent.items()} == {t: len(v) for t, v in names_.items()}
    for t, values in bench.baseline.values.items():
        for v, pct, printed in zip(values, bench.baseline.percent[t], bench.baseline.printed[t]):
            assert v == pytest.approx(printed / 100 if pct else printed)
            assert not pct or 0 < v <= 1
    assert bench.published.delta_p_task["RepMTL"] > 0
    for row in bench.published.metrics.values():
        assert set(row) == set(bench.tasks)


@pytest.mark.parametrize("name", ("multimnist", "digits", "densemnist"))
def test_cpu_benchmarks_have_no_paper_baseline(name):
    bench = get(name)
    assert bench.baseline is None and bench.published is None and bench.has_val


def test_task_and_baseline_checks():
    with pytest.raises(ValueError, match="2 directions"):
        Task(("a",), (True, False), nn.CrossEntropyLoss, object, 2)
    b = Baseline.in_metric_units({"a": [0.5, 2]})
    assert b.values == {"a": [0.5, 2.0]} and b.percent == {"a": [False, False]}
    assert Baseline({"a": [50.0]}, {"a": [True]}).to_metric_units({"a": [25.0]}) == {"a": [0.25]}


def test_a_benchmark_registered_outside_the_package_is_found():
    tasks = {"x": Task(("Acc",), (True,), nn.CrossEntropyLoss, object, 3)}
    bench = register(Benchmark("test-extra", ("x",), False, task_dict_of("test-extra", tasks), lambda t, o: {},
                               lambda o: nn.Identity, lambda t, o: nn.ModuleDict()))
    assert get("Test_Extra") is bench and "test-extra" in names()
    assert bench.metric_names() == {"x": ["Acc"]} and bench.higher_better() == {"x": [1]}
