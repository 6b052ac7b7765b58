"""The DenseMNIST benchmark module, and the CPU benchmarks' pretext-pretrained encoders (the default)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from libmtl_repmtl.benchmarks import densemnist, digits, get, multimnist
from libmtl_repmtl.models.pretext import pretext_weights
from libmtl_repmtl.training.experiment import run_experiment

CPU = (multimnist, digits, densemnist)
TINY = {"n_train": 48, "n_val": 16, "n_test": 16, "batch_size": 16}


pytestmark = pytest.mark.usefixtures("tiny_digits")  # tests/conftest.py


def test_densemnist_has_nyuv2s_tasks_metrics_and_directions() -> None:
    bench, nyu = get("DenseMNIST"), get("nyuv2")
    assert bench is densemnist.BENCHMARK and bench.tasks == nyu.tasks == ("segmentation", "depth", "normal")
    assert bench.metric_names() == nyu.metric_names() and bench.higher_better() == nyu.higher_better()
    assert {t: task.outputs for t, task in densemnist.TASKS.items()} == {"segmentation": 11, "depth": 1, "normal": 3}
    assert bench.has_val and bench.baseline is None and not bench.multi_input
    enc = bench.encoder_class({**bench.defaults, "pretrained": "none"})()
    z = enc(torch.zeros(2, 1, 32, 32))
    heads = bench.decoders(["depth", "normal"], bench.defaults)
    assert list(heads) == ["depth", "normal"] and heads["normal"](z).shape == (2, 3, 16, 16)

    class Trainer:
        input_size = (32, 32)

    preds = bench.process_preds(Trainer(), {"normal": heads["normal"](z), "depth": heads["depth"](z)}, None)
    assert preds["depth"].shape == (2, 1, 32, 32)  # upsampled to the label size, as NYUv2's
    torch.testing.assert_close(preds["normal"].norm(dim=1), torch.ones(2, 32, 32))


def test_densemnist_loaders_give_nyuv2_shaped_batches() -> None:
    loaders = densemnist.BENCHMARK.dataloaders(["segmentation", "normal"],
                                               {**densemnist.BENCHMARK.defaults, **TINY, "train_bs": 8, "test_bs": 8})
    x, y = next(iter(loaders["val"]))
    assert x.shape == (8, 1, 32, 32) and set(y) == {"segmentation", "normal"}
    assert y["segmentation"].shape == (8, 32, 32) and y["normal"].shape == (8, 3, 32, 32)
    assert len(loaders["train"].dataset) == 48


@pytest.mark.parametrize("module", CPU, ids=lambda m: m.NAME)
def test_cpu_benchmarks_start_from_the_pretext_by_default(module) -> None:
    bench = module.BENCHMARK
    assert bench.defaults["pretrained"] == "pretext"
    enc = bench.encoder_class(bench.defaults)()
    cached = pretext_weights(module.PRETEXT, 0)
    assert not cached.built and enc.pretrained_source == f"pretext:{cached.path}"  # built once, then read
    assert all(torch.equal(v, cached.state_dict[k]) for k, v in enc.state_dict().items())
    assert bench.encoder_class({**bench.defaults, "pretrained": "none"})().pretrained_source == "none"


@pytest.mark.parametrize("weighting, arch", [("EW", "HPS"), ("RepMTL", "RepHPS")])
def test_trainer_runs_an_epoch_of_densemnist(tmp_path, weighting, arch) -> None:
    res = run_experiment("densemnist", weighting, arch, None, tmp_path, epochs=1, device="cpu", verbose=False,
                         progress=False, **TINY)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["status"] == "complete" and saved["weighting"] == weighting and saved["tasks"] == list(
        densemnist.TASKS)
    assert saved["config"]["pretrained"] == "pretext"
    test = saved["epochs"][0]["test"]
    assert set(test) == set(densemnist.TASKS)
    assert all(np.isfinite(v) for task in test.values() for v in task.values())
    assert res is not None
