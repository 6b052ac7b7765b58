"""The 12 weightings LibMTL 1.1.5 has (the git version has them too) train through LibMTL's own ``Trainer`` on the
CPU (after this package's compatibility layer): single-input and multi-input, with ``rep_grad`` where the method
needs or allows it. The Trainer gets names or classes as the installed LibMTL takes them, and each weighting's
``weight_args`` as that LibMTL's ``prepare_args`` gives them (``host.protocol``; e.g. GradVac's keys differ).

Tiny MLP, 2 epochs (DWA: 3) of 2 batches; each case checks finite losses and changed shared parameters.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import libmtl_repmtl
from libmtl_repmtl.libmtl import host

libmtl_repmtl.register()

import LibMTL  # noqa: E402
from LibMTL.loss import CELoss  # noqa: E402
from LibMTL.metrics import AccMetric  # noqa: E402

WEIGHTINGS = ["EW", "UW", "GradNorm", "MGDA", "DWA", "GLS", "GradDrop", "PCGrad", "GradVac", "IMTL", "CAGrad",
              "RLW"]
NEEDS_REP_GRAD = {"GradDrop"}
REFUSES_REP_GRAD = {"PCGrad", "GradVac", "CAGrad"}

IN, HID, CLASSES, N = 6, 8, 3, 16


class _Single(Dataset):
    def __init__(self, tasks: list[str], seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(N, IN, generator=g)
        self.y = {t: torch.randint(0, CLASSES, (N,), generator=g) for t in tasks}

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int):
        return self.x[i], {t: y[i] for t, y in self.y.items()}


class _Multi(Dataset):
    def __init__(self, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(N, IN, generator=g)
        self.y = torch.randint(0, CLASSES, (N,), generator=g)

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int):
        return self.x[i], self.y[i]


def _encoder() -> nn.Module:
    return nn.Sequential(nn.Linear(IN, HID), nn.ReLU(), nn.Linear(HID, HID))


def _task_dict(tasks: list[str]) -> dict:
    return {t: {"metrics": ["Acc"], "metrics_fn": AccMetric(), "loss_fn": CELoss(), "weight": [1]} for t in tasks}


def _loaders(tasks: list[str], multi_input: bool, seed: int):
    if multi_input:
        return {t: DataLoader(_Multi(seed + i), batch_size=8, shuffle=True) for i, t in enumerate(tasks)}
    return DataLoader(_Single(tasks, seed), batch_size=8, shuffle=True)


def train_libmtl(weighting: str, multi_input: bool, rep_grad: bool, tasks: list[str], epochs: int = 3,
                 architecture: str = "HPS", weight_args: dict | None = None):
    """Train with LibMTL's own Trainer; return (trainer, shared parameters before training)."""
    torch.manual_seed(0)
    np.random.seed(0)
    names = host.trainer_takes_names()  # the git version's Trainer takes names, 1.1.5's classes
    trainer = LibMTL.Trainer(
        task_dict=_task_dict(tasks),
        weighting=weighting if names else host.lookup("weighting", weighting),
        architecture=architecture if names else host.lookup("architecture", architecture), encoder_class=_encoder,
        decoders=nn.ModuleDict({t: nn.Linear(HID, CLASSES) for t in tasks}), rep_grad=rep_grad,
        multi_input=multi_input, optim_param={"optim": "adam", "lr": 1e-2}, scheduler_param=None,
        device="cpu", weight_args=dict(host.protocol(weighting).weight_args if weight_args is None else weight_args),
        arch_args={})
    before = [p.detach().clone() for p in trainer.model.encoder.parameters()]
    trainer.train(_loaders(tasks, multi_input, 1), _loaders(tasks, multi_input, 2), epochs)
    return trainer, before


def _cases() -> list[tuple[str, bool, bool]]:
    out = []
    for w in WEIGHTINGS:
        for multi in (False, True):
            out.append((w, multi, w in NEEDS_REP_GRAD))
    # rep_grad where the method allows both (exercises the representation-gradient paths)
    out += [("MGDA", False, True), ("IMTL", True, True), ("GradNorm", False, True)]
    return out


@pytest.mark.parametrize(("weighting", "multi_input", "rep_grad"), _cases(),
                         ids=lambda v: v if isinstance(v, str) else None)
def test_weighting_trains_on_cpu(weighting: str, multi_input: bool, rep_grad: bool, capsys) -> None:
    tasks = ["a", "b", "c"]
    epochs = 3 if weighting == "DWA" else 2  # DWA's own rule starts at epoch 2; GradNorm's at epoch 1
    trainer, before = train_libmtl(weighting, multi_input, rep_grad, tasks, epochs=epochs)
    assert trainer.device == torch.device("cpu")
    losses = trainer.model.train_loss_buffer
    assert losses.shape == (3, epochs)
    assert np.isfinite(losses).all(), losses
    after = list(trainer.model.encoder.parameters())
    assert any(not torch.equal(b, a.detach()) for b, a in zip(before, after)), "shared parameters did not change"
    assert all(math.isfinite(float(a.detach().abs().sum())) for a in after)
    for p in trainer.model.encoder.parameters():
        assert p.grad is None or p.grad.device.type == "cpu"


@pytest.mark.parametrize("rep_grad", [True])
def test_refusing_methods_still_refuse_rep_grad(rep_grad: bool, capsys) -> None:
    for weighting in sorted(REFUSES_REP_GRAD):
        with pytest.raises(ValueError, match="rep_grad"):
            train_libmtl(weighting, False, rep_grad, ["a", "b"], epochs=1)


@pytest.mark.parametrize("ntasks", [2, 4])
def test_cagrad_any_number_of_tasks(ntasks: int, capsys) -> None:
    tasks = [f"t{i}" for i in range(ntasks)]
    trainer, before = train_libmtl("CAGrad", False, False, tasks, epochs=1)
    assert np.isfinite(trainer.model.train_loss_buffer).all()
    w = trainer.batch_weight if hasattr(trainer, "batch_weight") else None
    assert w is not None and np.allclose(w.sum(0), 1.0, atol=1e-3)


def test_graddrop_requires_rep_grad(capsys) -> None:
    with pytest.raises(ValueError, match="rep_grad"):
        train_libmtl("GradDrop", False, False, ["a", "b"], epochs=1)


def test_repmtl_plugin_trains_through_libmtl_trainer(capsys) -> None:
    if "RepMTL" not in LibMTL.weighting.__dict__:
        pytest.skip("the RepMTL plugin is not importable yet")
    from libmtl_repmtl.libmtl.host import lookup

    cls = lookup("weighting", "RepMTL")
    args = cls.libmtl_args(LibMTL.config.LibMTL_args.parse_args([])) if hasattr(cls, "libmtl_args") else {}
    for arch in ("HPS", "RepHPS"):
        if arch not in LibMTL.architecture.__dict__:
            continue
        trainer, before = train_libmtl("RepMTL", False, False, ["a", "b"], epochs=2, architecture=arch,
                                       weight_args=args)
        assert np.isfinite(trainer.model.train_loss_buffer).all()
        after = list(trainer.model.encoder.parameters())
        assert any(not torch.equal(b, a.detach()) for b, a in zip(before, after))
