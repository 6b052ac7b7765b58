"""The one device resolver: shared by our trainer, torchrun's set-up and LibMTL's patched Trainer (its ``device=``
keyword and ``LIBMTL_DEVICE``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from libmtl_repmtl.libmtl import compat
from libmtl_repmtl.libmtl.bases import LibMTL
from libmtl_repmtl.libmtl.compat import device as compat_device
from libmtl_repmtl.training import device as training_device
from libmtl_repmtl.training import distributed


def test_one_resolver_for_the_trainer_and_libmtl():
    assert training_device.resolve_device is compat_device.resolve_device is compat.resolve_device
    assert distributed.resolve_device is compat_device.resolve_device


def test_requests_are_read_case_insensitively_and_none_reads_the_environment(monkeypatch):
    monkeypatch.setenv(compat.DEVICE_ENV, "CPU")
    assert training_device.resolve_device(None) == torch.device("cpu")
    assert training_device.resolve_device(" Cpu ") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert training_device.resolve_device("AUTO").type == expected
    monkeypatch.delenv(compat.DEVICE_ENV)
    assert training_device.resolve_device(None).type == expected


def test_other_device_types_are_refused_with_the_choices():
    for spec in ("meta", torch.device("meta")):
        with pytest.raises(ValueError, match=r"device type 'meta' is not supported; use 'auto', 'cpu', 'cuda'"):
            training_device.resolve_device(spec)
    with pytest.raises(ValueError, match=r"unknown device 'gpu0' .*use 'auto', 'cpu', 'cuda' or 'cuda:N'"):
        training_device.resolve_device("gpu0")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the message for a machine without CUDA")
def test_cuda_without_cuda_names_both_ways_to_choose_the_cpu():
    with pytest.raises(ValueError, match=r"CUDA is not available.*--device cpu.*LIBMTL_DEVICE=cpu") as err:
        training_device.resolve_device("cuda")
    assert "'cuda'" in str(err.value)


def test_init_from_env_goes_through_the_resolver(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert distributed.init_from_env(device="CPU").device == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        distributed.init_from_env(device="gpu0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(RuntimeError, match="names one GPU"):
        distributed.init_from_env(device="cuda:0")


# ------------------------------------------------------------------ LibMTL's Trainer (patch trainer-device)
def test_resolve_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(compat.DEVICE_ENV, raising=False)
    expected = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert str(compat.resolve_device()) == expected
    assert str(compat.resolve_device("auto")) == expected
    assert compat.resolve_device("cpu") == torch.device("cpu")
    assert compat.resolve_device(torch.device("cpu")) == torch.device("cpu")
    monkeypatch.setenv(compat.DEVICE_ENV, "cpu")
    assert compat.resolve_device() == torch.device("cpu")
    with pytest.raises(ValueError, match="invalid device"):
        compat.resolve_device("gpu-please")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            compat.resolve_device("cuda:1")


def test_trainer_device_env_and_keyword(monkeypatch: pytest.MonkeyPatch, capsys, libmtl_flavour) -> None:
    from LibMTL.loss import CELoss
    from LibMTL.metrics import AccMetric

    def make(**kw):
        td = {"a": {"metrics": ["Acc"], "metrics_fn": AccMetric(), "loss_fn": CELoss(), "weight": [1]}}
        return LibMTL.Trainer(td, libmtl_flavour.arg(LibMTL.weighting.UW), libmtl_flavour.arg(LibMTL.architecture.HPS),
                              lambda: nn.Linear(2, 2),
                              nn.ModuleDict({"a": nn.Linear(2, 2)}), False, False, {"optim": "sgd", "lr": 0.1}, None,
                              weight_args={}, arch_args={}, **kw)

    monkeypatch.setenv(compat.DEVICE_ENV, "cpu")
    t = make()
    assert t.device == torch.device("cpu")
    assert t.model.loss_scale.device.type == "cpu"  # weighting parameters follow self.device
    monkeypatch.delenv(compat.DEVICE_ENV)
    assert make(device="cpu").device == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            make(device="cuda:1")
