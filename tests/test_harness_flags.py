"""``bench``'s list flags (``libmtl_repmtl.harness.flags``): ``--option``, ``--dataset_path`` and ``--seeds`` are
checked before anything runs, ``--dry-run`` too, each bad item an error naming the fix."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from libmtl_repmtl.harness.cli import build_parser, main, resolve_grid
from libmtl_repmtl.harness.flags import MAX_SEED, OWNED_KEYS, PASSED_KEYS
from libmtl_repmtl.training.experiment import run_experiment


def _bench(tmp_path: Path, *flags: str, methods: tuple[str, ...] = ("EW", "logEW"),
           benchmarks: tuple[str, ...] = ("multimnist",)) -> list[str]:
    return ["--benchmarks", *benchmarks, "--methods", *methods, "--out", str(tmp_path / "out"), *flags]


def _refused(argv: list[str], pattern: str) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    message = str(exc.value)
    assert re.search(pattern, message), message
    return message


def _never_called(*args, **kwargs):
    raise AssertionError("a run started although the flags were bad")


def test_every_run_experiment_keyword_is_owned_or_passed() -> None:
    """A keyword added to run_experiment must be classified: set by bench (refused in --option) or passed."""
    params = [n for n, p in inspect.signature(run_experiment).parameters.items() if p.kind is not p.VAR_KEYWORD]
    assert sorted(params) == sorted([*OWNED_KEYS, *PASSED_KEYS])
    assert not set(OWNED_KEYS) & set(PASSED_KEYS)


@pytest.mark.parametrize("key", sorted(OWNED_KEYS))
def test_option_key_bench_sets_itself_is_refused_with_the_flag_to_use(tmp_path: Path, key: str) -> None:
    message = _refused(_bench(tmp_path, "--dry-run", "--option", f"{key}=1"), rf"--option {key}: bench sets {key}")
    assert OWNED_KEYS[key] in message


@pytest.mark.parametrize(("key", "flag"), [("seed", "--seeds"), ("device", "--device"), ("epochs", "--epochs")])
def test_option_seed_device_epochs_name_their_flag(tmp_path: Path, key: str, flag: str) -> None:
    _refused(_bench(tmp_path, "--dry-run", "--option", f"{key}=5"), rf"use {flag}\b")


def test_option_device_is_refused_before_any_run_without_dry_run(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="--device"):
        main(_bench(tmp_path, "--option", "device=cuda"), runner=_never_called)
    assert not (tmp_path / "out").exists()  # no run folder, no error.txt


@pytest.mark.parametrize("method", ["logEW", "RepMTL[tau=0.5]"])
def test_option_weight_args_refused_where_a_method_has_its_own(tmp_path: Path, method: str) -> None:
    message = _refused(_bench(tmp_path, "--dry-run", "--option", 'weight_args={"RepMTL_tau":2}',
                              methods=("EW", method)), r"--option weight_args: ")
    assert f": {method} has weight_args of its own" in message and '"RepMTL[tau=0.5]"' in message


def test_option_weight_args_passes_to_methods_without_settings(tmp_path: Path) -> None:
    args = build_parser().parse_args(_bench(tmp_path, "--option", 'weight_args={"calpha":0.4}', "lr=0.01",
                                            methods=("EW", "CAGrad", "STL")))
    grid, _ = resolve_grid(args)
    assert grid and all(r.options["weight_args"] == {"calpha": 0.4} and r.options["lr"] == 0.01 for r in grid)
    _refused(_bench(tmp_path, "--dry-run", "--option", "weight_args=3", methods=("EW",)), "JSON object")


@pytest.mark.parametrize("item", ["n_train", "=64"])
def test_option_without_key_value_says_key_value(tmp_path: Path, item: str) -> None:
    message = _refused(_bench(tmp_path, "--dry-run", "--option", item), r"--option takes KEY=VALUE")
    assert "BENCHMARK" not in message


def test_option_key_given_twice_is_an_error_naming_it(tmp_path: Path) -> None:
    _refused(_bench(tmp_path, "--dry-run", "--option", "n_train=64", "lr=0.1", "n_train=32"),
             r"--option n_train is given twice")


@pytest.mark.parametrize(("key", "what"), [("nyu", "is no registered benchmark"),
                                           ("digitz", "is no registered benchmark"),
                                           ("digits", "is not a benchmark of this grid")])
def test_dataset_path_key_that_is_no_benchmark_of_the_grid_is_refused(tmp_path: Path, key: str, what: str) -> None:
    message = _refused(_bench(tmp_path, "--dry-run", "--dataset_path", f"{key}={tmp_path}",
                              benchmarks=("nyuv2", "multimnist")), rf"'{key}' {what}")
    assert "the grid's benchmarks: nyuv2, multimnist" in message


def test_dataset_path_other_mistakes_are_refused(tmp_path: Path) -> None:
    _refused(_bench(tmp_path, "--dry-run", "--dataset_path", str(tmp_path)), r"takes BENCHMARK=PATH")
    _refused(_bench(tmp_path, "--dry-run", "--dataset_path", f"multimnist={tmp_path}", f"MultiMNIST={tmp_path}"),
             r"multimnist is given twice")
    _refused(_bench(tmp_path, "--dry-run", "--dataset_path", "multimnist="), r"no path after")
    _refused(_bench(tmp_path, "--dry-run", "--dataset_path", f"multimnist={tmp_path / 'absent'}"), r"not a folder")


def test_dataset_path_matches_the_grids_benchmark_by_canonical_name(tmp_path: Path) -> None:
    """``NYUv2=PATH`` reaches the runs of ``--benchmarks nyuv2`` (the registry's canonical name)."""
    seen = []

    def runner(benchmark, weighting, arch, dataset_path, save_path, **options):
        seen.append((benchmark, dataset_path))
        raise RuntimeError("stop here")

    main(_bench(tmp_path, "--dataset_path", f"NYUv2={tmp_path}", benchmarks=("nyuv2",), methods=("EW",)),
         runner=runner)
    assert seen == [("nyuv2", str(tmp_path))]


@pytest.mark.parametrize(("seeds", "pattern"), [(["0", "1", "0"], r"--seeds 0 given more than once"),
                                                (["-1"], r"--seeds -1: a seed must be from 0 to 4294967295"),
                                                ([str(MAX_SEED + 1)], r"--seeds 4294967296: a seed must be")])
def test_bad_seeds_are_refused(tmp_path: Path, seeds: list[str], pattern: str) -> None:
    _refused(_bench(tmp_path, "--dry-run", "--seeds", *seeds), pattern)


def test_largest_seed_plans(tmp_path: Path, capsys) -> None:
    assert main(_bench(tmp_path, "--dry-run", "--seeds", "0", str(MAX_SEED), methods=("EW",))) == 0
    assert f"multimnist/EW/seed{MAX_SEED}" in capsys.readouterr().out
