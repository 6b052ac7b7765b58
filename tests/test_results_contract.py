"""The ``results.json`` contract: round trip, version refusal, malformed files (no training; milliseconds)."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from libmtl_repmtl.training.io import atomic_write_json
from libmtl_repmtl.training.results import (
    RESULTS_FORMAT,
    SCHEMA_VERSION,
    Baseline,
    DeltaP,
    EpochRecord,
    ResultsFileError,
    RunResults,
    read_results,
)

TASKS = ["a", "b"]


def _epoch(i: int, val: bool = True, acc: float = 0.5, seconds: float = 1.0) -> EpochRecord:
    scores = {"a": {"Acc": acc}, "b": {"Acc": 1 - acc}}
    loss = {"a": 0.7, "b": 0.6}
    dp = {"test": DeltaP(10.0 * i, 5.0 * i)}
    if val:
        dp["val"] = DeltaP(1.0 + i, None)
    return EpochRecord(
        epoch=i, train_loss=loss, train=scores, train_seconds=seconds, test=scores, test_loss=loss,
        test_seconds=0.25, lr=[1e-3], delta_p=dp, peak_memory_mb=12.5,
        val=scores if val else None, val_loss=loss if val else None, val_seconds=0.5 if val else None,
        task_weights={"a": 1.0, "b": 1.0}, repmtl={"L_tsr": 0.1 * i, "saliency": {"a": 1.0, "b": 2.0}})


def _run(epochs: list[EpochRecord], best: int | None = 0, status: str = "complete") -> RunResults:
    return RunResults(
        status=status, error=None, config={"lr": 1e-3, "weighting": "EW"}, benchmark="toy", weighting="EW",
        arch="HPS", tasks=TASKS, device="cpu", metric_names={"a": ["Acc"], "b": ["Acc"]},
        higher_better={"a": {"Acc": True}, "b": {"Acc": True}},
        baseline=Baseline("spec", {"a": {"Acc": 0.5}, "b": {"Acc": 0.5}}), epochs=epochs,
        epochs_total=max(len(epochs), 1), best_epoch=best, best_epoch_selection="val: best validation",
        peak_memory_mb=12.5, peak_memory_kind="CPU process peak RSS via resource.getrusage (MiB)")


def _write(tmp_path, obj) -> object:
    path = tmp_path / "results.json"
    atomic_write_json(path, obj)
    return path


def test_schema_version_is_in_the_format_tag():
    assert RESULTS_FORMAT == f"libmtl_repmtl.results/{SCHEMA_VERSION}"


def test_round_trip_keeps_every_key_and_value(tmp_path):
    res = _run([_epoch(0), _epoch(1, acc=0.75)], best=1)
    back = read_results(_write(tmp_path, res.to_dict()))
    assert back == res and back.to_dict() == res.to_dict()
    d = res.to_dict()
    assert d["format"] == RESULTS_FORMAT and d["complete"] and d["epochs_done"] == 2 and d["last_epoch"] == 1
    assert d["test_at_best"] == {"a": {"Acc": 0.75}, "b": {"Acc": 0.25}}
    assert d["delta_p_task"] == 10.0 and d["delta_p_metric"] == 5.0 and d["delta_p"]["best"] == {"task": 10.0,
                                                                                                   "metric": 5.0}
    assert d["seconds_per_epoch"] == 1.0 and d["seconds_per_epoch_total"] == 1.75
    assert d["repmtl"] == {"L_tsr": 0.1, "saliency": {"a": 1.0, "b": 2.0}}


def test_no_epoch_yet_and_no_val_split_round_trip(tmp_path):
    empty = _run([], best=None, status="running")
    d = empty.to_dict()
    assert d["test_at_best"] is None and d["delta_p"] == {"best": None, "last": None} and "repmtl" not in d
    assert d["seconds_per_epoch"] is None and d["last_epoch"] is None
    assert read_results(_write(tmp_path, d)) == empty
    noval = _run([_epoch(0, val=False)])
    ep = noval.to_dict()["epochs"][0]
    assert "val" not in ep and "val_loss" not in ep and "val_seconds" not in ep
    assert read_results(_write(tmp_path, noval.to_dict())) == noval


def test_non_finite_metrics_are_written_as_null_and_read_back(tmp_path):
    res = _run([_epoch(0, acc=float("nan"))])
    back = read_results(_write(tmp_path, res.to_dict()))
    assert back.epochs[0].test["a"]["Acc"] is None and math.isnan(res.epochs[0].test["a"]["Acc"])


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0.01, 100)), min_size=1, max_size=5), st.data())
def test_round_trip_property(tmp_path_factory, rows, data):
    epochs = [_epoch(i, acc=a, seconds=s) for i, (a, s) in enumerate(rows)]
    best = data.draw(st.sampled_from([None, *range(len(epochs))]))
    res = _run(epochs, best=best)
    path = _write(tmp_path_factory.mktemp("r"), res.to_dict())
    back = read_results(path)
    assert back == res
    want_best = epochs[best] if best is not None else epochs[-1]
    assert back.to_dict()["test_at_best"] == want_best.test


@pytest.mark.parametrize("fmt", [None, "libmtl_repmtl.results/0", "libmtl_repmtl.results/2", "results"])
def test_other_or_missing_version_is_refused(tmp_path, fmt):
    d = _run([_epoch(0)]).to_dict()
    if fmt is None:
        del d["format"]
    else:
        d["format"] = fmt
    path = _write(tmp_path, d)
    with pytest.raises(ResultsFileError, match=rf"{path}.*format {fmt!r}.*reads only.*rerun"):
        read_results(path)


def test_missing_file_and_non_json_are_refused(tmp_path):
    with pytest.raises(ResultsFileError, match=r"no results file; run the experiment"):
        read_results(tmp_path / "results.json")
    (tmp_path / "results.json").write_text('{"format": "libmtl_repmtl.results/1", ')
    with pytest.raises(ResultsFileError, match=r"results.json: not a readable JSON file"):
        read_results(tmp_path / "results.json")
    (tmp_path / "results.json").write_text("[1, 2]")
    with pytest.raises(ResultsFileError, match=r"holds a list, not a results object"):
        read_results(tmp_path / "results.json")


def _broken(d: dict, how: str) -> dict:
    if how == "missing top key":
        del d["best_epoch"]
    elif how == "missing epoch key":
        del d["epochs"][0]["test_seconds"]
    elif how == "unknown key":
        d["best_metrics"] = {}
    elif how == "wrong type":
        d["epochs"][0]["test"]["a"]["Acc"] = "0.5"
    elif how == "bool as number":
        d["epochs"][0]["train_seconds"] = True
    elif how == "summary disagrees":
        d["delta_p_task"] = 99.0
    elif how == "bad status":
        d["status"] = "done"
    return d


@pytest.mark.parametrize("how,message", [
    ("missing top key", r"missing key 'best_epoch'"),
    ("missing epoch key", r"missing key 'epochs\[0\]\.test_seconds'"),
    ("unknown key", r"keys \['best_metrics'\] are unknown or disagree"),
    ("wrong type", r"epochs\[0\]\.test\.a\.Acc is str .*expected a number"),
    ("bool as number", r"epochs\[0\]\.train_seconds is bool .*expected a number"),
    ("summary disagrees", r"keys \['delta_p_task'\] are unknown or disagree"),
    ("bad status", r"status 'done' is not one of"),
])
def test_malformed_file_is_refused_naming_the_problem(tmp_path, how, message):
    d = json.loads(json.dumps(_run([_epoch(0)]).to_dict()))
    path = _write(tmp_path, _broken(d, how))
    with pytest.raises(ResultsFileError, match=message) as err:
        read_results(path)
    assert str(path) in str(err.value) and "rerun the experiment" in str(err.value)
