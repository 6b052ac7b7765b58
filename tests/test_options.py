"""Run options (libmtl_repmtl.training.options): a key no benchmark reads is refused, values take their option's
type, and epochs / step_size / gamma / Office's image_size are checked before anything is built; through
run_experiment, the example scripts and the harness."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from libmtl_repmtl.benchmarks import get
from libmtl_repmtl.data.office import MIN_IMAGE_SIZE, OfficeDataset
from libmtl_repmtl.data.synthetic import generate
from libmtl_repmtl.harness.cli import build_parser, resolve_grid
from libmtl_repmtl.harness.cli import main as bench
from libmtl_repmtl.training import example_cli, run_experiment
from libmtl_repmtl.training.model import build_optimizer
from libmtl_repmtl.training.options import coerce, run_options

pytestmark = pytest.mark.usefixtures("tiny_digits")  # tests/conftest.py


def _digits(tmp_path: Path, dataset_path: str | None = None, **options):
    return run_experiment("digits", "EW", "HPS", dataset_path, tmp_path / "run", device="cpu", verbose=False,
                          progress=False, max_per_domain=8, train_bs=4, **options)


def _nothing_written(tmp_path: Path) -> None:
    assert not (tmp_path / "run" / "results.json").exists()


# ------------------------------------------------------------------------------------------ keys: run_experiment
def test_an_unknown_key_is_refused_naming_it_the_benchmark_and_the_valid_keys(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"digits: unknown option\(s\) 'bogus'.*max_per_domain") as err:
        _digits(tmp_path, epochs=1, bogus=1)
    assert "train_bs" in str(err.value)
    with pytest.raises(ValueError, match=r"'lrr' \(did you mean 'lr'\?\)"):
        _digits(tmp_path, epochs=1, lrr=0.1)
    _nothing_written(tmp_path)


@pytest.mark.parametrize("key, value, readers", [("n_train", 64, "densemnist, multimnist"),
                                                  ("encoder", "resnet50", "cityscapes, nyuv2, office-31"),
                                                  ("aug", True, "cityscapes, nyuv2")])
def test_a_key_of_another_benchmark_is_refused(tmp_path: Path, key: str, value, readers: str) -> None:
    with pytest.raises(ValueError, match=rf"digits: unknown option\(s\) '{key}' \(read by {readers}"):
        _digits(tmp_path, epochs=1, **{key: value})
    _nothing_written(tmp_path)


def test_a_dataset_path_is_refused_by_a_benchmark_that_reads_no_data_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="digits reads no data folder.*'/nonexistent'.*drop --dataset_path"):
        _digits(tmp_path, "/nonexistent", epochs=1)
    _nothing_written(tmp_path)


def test_office_refuses_aug_it_does_not_read() -> None:
    with pytest.raises(ValueError, match=r"office-31: unknown option\(s\) 'aug'"):
        run_options(get("office-31"), {"aug": True}, epochs=1, seed=0, dataset_path="/d")
    argv = ["--multi_input", "--dataset_path", "/d", "--save_path", "/s"]
    for extra, passed in (([], False), (["--aug"], True)):  # the example passes --aug on only when given
        params = example_cli.build_parser("office", argv + extra).parse_args(argv + extra)
        assert ("aug" in example_cli.options_from_args("office", params)[1]) is passed


# -------------------------------------------------------------------------------------------------- values
@pytest.mark.parametrize("text, value", [("False", False), ("false", False), ("NO", False), ("0", False),
                                         ("True", True), ("yes", True), ("1", True), (0, False), (True, True)])
def test_bool_options_read_the_usual_spellings(text, value) -> None:
    assert coerce("aug", text, bool) is value


def test_aug_false_from_the_command_line_means_false(tmp_path: Path, capsys) -> None:
    opts = run_options(get("nyuv2"), {"aug": "False"}, epochs=1, seed=0, dataset_path="/d")
    assert opts["aug"] is False  # bool("False") would be True
    assert bench(["--benchmarks", "nyuv2", "--methods", "EW", "--epochs", "1", "--out", str(tmp_path),
                  "--option", "aug=False", "--dry-run"]) == 0
    assert "'aug': False" in capsys.readouterr().out
    with pytest.raises(ValueError, match="option aug='maybe': not a boolean"):
        run_options(get("nyuv2"), {"aug": "maybe"}, epochs=1, seed=0, dataset_path="/d")


@pytest.mark.parametrize("kind, value, message", [(int, 1.7, "not an integer"), (int, "x", "expected an integer"),
                                                  (int, True, "not a boolean"), (float, math.nan, "non-finite"),
                                                  (float, "inf", "non-finite"), (str, 3, "expected a string")])
def test_values_of_the_wrong_type_are_refused_naming_the_option(kind, value, message) -> None:
    with pytest.raises(ValueError, match=rf"option opt={value!r}.*{message}".replace("(", r"\(")):
        coerce("opt", value, kind)
    assert coerce("opt", 3.0, int) == 3 and isinstance(coerce("opt", 3.0, int), int)


# ------------------------------------------------------------------------------------------------- epochs
@pytest.mark.parametrize("epochs, message", [(0, "epochs=0: the number of training epochs must be a positive"),
                                             (-1, "epochs=-1: the number of training epochs must be a positive"),
                                             (1.7, "option epochs=1.7: not an integer")])
def test_epochs_must_be_a_positive_integer(tmp_path: Path, capsys, epochs, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _digits(tmp_path, epochs=epochs)
    _nothing_written(tmp_path)
    if isinstance(epochs, int):
        with pytest.raises(SystemExit, match=message):
            bench(["--benchmarks", "digits", "--methods", "EW", "--epochs", str(epochs), "--out", str(tmp_path),
                   "--dry-run"])


def test_the_example_refuses_zero_epochs_before_anything_is_built(tmp_path: Path, capsys) -> None:
    save = tmp_path / "save"
    code = example_cli.main("nyuv2", ["--weighting", "EW", "--arch", "HPS", "--dataset_path", str(tmp_path / "none"),
                                      "--save_path", str(save), "--epochs", "0", "--device", "cpu"])
    assert code == 2 and "epochs=0: the number of training epochs must be a positive" in capsys.readouterr().err
    assert not save.exists()  # the data folder does not even exist: the check came first


# ---------------------------------------------------------------------------------------------- scheduler
@pytest.mark.parametrize("options, message", [
    ({"scheduler": "step", "step_size": 0}, "step_size=0: step_size must be a positive integer"),
    ({"scheduler": "exp", "gamma": -1}, r"gamma=-1.0: the --scheduler exp learning-rate factor must be a finite "
                                        "positive"),
    ({"scheduler": "step", "gamma": math.nan}, "option gamma=nan: expected a number, got a non-finite value"),
    ({"scheduler": "exp", "gamma": 0}, "gamma=0.0"),
])
def test_scheduler_settings_are_checked_before_training(tmp_path: Path, options, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _digits(tmp_path, epochs=1, **options)
    _nothing_written(tmp_path)


def test_settings_a_scheduler_does_not_use_are_not_checked_and_the_trainer_checks_its_own() -> None:
    assert run_options(get("digits"), {"scheduler": None, "step_size": 0}, epochs=1, seed=0,
                       dataset_path=None)["step_size"] == 0
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="step_size=0"):
        build_optimizer(model, {"optim": "adam", "lr": 0.1}, {"scheduler": "step", "step_size": 0, "gamma": 0.5})
    with pytest.raises(ValueError, match="gamma=-1"):
        build_optimizer(model, {"optim": "adam", "lr": 0.1}, {"scheduler": "exp", "gamma": -1})


# ------------------------------------------------------------------------------------------ office image size
@pytest.mark.parametrize("size", [0, -5, MIN_IMAGE_SIZE - 1])
def test_office_image_size_below_the_minimum_is_refused_naming_the_flag(size: int) -> None:
    with pytest.raises(ValueError, match=rf"--image_size {size}: .* at least {MIN_IMAGE_SIZE}"):
        run_options(get("office-31"), {"image_size": size}, epochs=1, seed=0, dataset_path="/d")


def test_office_image_size_is_the_one_used_and_recorded(tmp_path: Path) -> None:
    root = generate("office-31", tmp_path / "o31", size=2, test_size=1, classes=2, seed=0)
    spec = get("office-31")
    assert run_options(spec, {}, epochs=1, seed=0, dataset_path=root)["image_size"] == 224  # recorded default
    opts = run_options(spec, {"image_size": 40, "list_dir": str(root)}, epochs=1, seed=0, dataset_path=root)
    loaders = spec.dataloaders(["amazon"], opts)
    assert loaders["train"]["amazon"].dataset.image_size == 40
    assert tuple(loaders["train"]["amazon"].dataset[0][0].shape) == (3, 40, 40)
    with pytest.raises(ValueError, match="--image_size 0"):
        OfficeDataset(root, "office-31", "amazon", list_dir=root, image_size=0)


# ------------------------------------------------------------------------------------------------ bench grids
def test_a_grid_gives_each_benchmark_the_keys_it_reads(tmp_path: Path, capsys) -> None:
    argv = ["--benchmarks", "multimnist", "digits", "densemnist", "--methods", "EW", "--epochs", "1",
            "--out", str(tmp_path), "--option", "n_train=300", "n_val=100", "n_test=100", "max_per_domain=100",
            "--dry-run"]
    assert bench(argv) == 0
    lines = {ln.split()[1].split("/")[0]: ln for ln in capsys.readouterr().out.splitlines() if "[todo]" in ln}
    assert "'n_train': 300" in lines["multimnist"] and "max_per_domain" not in lines["multimnist"]
    assert "'max_per_domain': 100" in lines["digits"] and "n_train" not in lines["digits"]
    assert "'n_train': 300" in lines["densemnist"]
    _, desc = resolve_grid(build_parser().parse_args([a for a in argv if a != "--dry-run"]))
    assert desc["options"]["digits"] == {"max_per_domain": 100, "epochs": 1}  # what the summary's header shows


def test_a_grid_refuses_a_key_no_benchmark_reads_before_anything_runs(tmp_path: Path) -> None:
    for key in ("bogus=1", "max_per_domain=40"):  # the second is digits', not in this grid
        with pytest.raises(SystemExit, match=rf"--option '{key.split('=')[0]}'.*no benchmark of the grid reads it"):
            bench(["--benchmarks", "multimnist", "densemnist", "--methods", "EW", "--out", str(tmp_path / "o"),
                   "--option", key, "--dry-run"])
    with pytest.raises(SystemExit, match="--option 'bogus'"):
        bench(["--benchmarks", "multimnist", "--methods", "EW", "--out", str(tmp_path / "o"), "--option", "bogus=1"])
    assert not (tmp_path / "o").exists()


def test_a_recorded_run_holds_only_options_it_read(tmp_path: Path) -> None:
    _digits(tmp_path, epochs=1)
    config = json.loads((tmp_path / "run" / "results.json").read_text())["config"]
    assert config["max_per_domain"] == 8 and config["epochs"] == 1
    assert not {"encoder", "aug", "n_train"} & set(config)
