"""Step protocols (``libmtl_repmtl.training.protocols``): the building blocks, the protocol each weighting of the
installed LibMTL gets (as LibMTL's own Trainer drives it, observed by ``host.protocol``), the refusal of the
bilevel methods, and one short epoch of every LibMTL weighting in our trainer (skipped where the installed
LibMTL lacks it: LibMTL 1.1.5 has 12 of the git version's 23)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from libmtl_repmtl.libmtl import flavour, host
from libmtl_repmtl.libmtl.bases import LibMTL
from libmtl_repmtl.libmtl.capabilities import needs_rep
from libmtl_repmtl.training import protocols
from libmtl_repmtl.training.protocols import (
    BilevelMethodError,
    StepContext,
    from_host,
    protocol_for,
    several_samples,
    single_sample,
    then_update,
    trainable_weighting,
)
from libmtl_repmtl.training.trainer import MTLTrainer
from tests._models import VectorEncoder, acc_ce_task_dict

#: The weighting classes of LibMTL's git version at 4336804 (LibMTL 1.1.5 has the first 12 of them).
HEAD_WEIGHTINGS = ("EW", "UW", "GradNorm", "MGDA", "DWA", "GLS", "GradDrop", "PCGrad", "GradVac", "IMTL", "CAGrad",
                   "RLW", "Aligned_MTL", "DB_MTL", "ExcessMTL", "FairGrad", "FAMO", "MoCo", "MoDo", "Nash_MTL",
                   "SDMGrad", "STCH", "UPGrad")
TASKS = ("a", "b")


# ---------------------------------------------------------------------------------------------- building blocks
def _context(draws: list[torch.Tensor], log: list[str], *, recompute=None, model=None) -> StepContext:
    it = iter(draws)

    def forward() -> torch.Tensor:
        log.append("forward")
        return next(it)

    def step(losses: torch.Tensor, weight_args) -> str:
        log.append(f"backward {tuple(losses.shape)} {sorted(weight_args)}")
        return "weights"

    return StepContext(model or nn.Linear(1, 1), None, {"x": 1}, 0, 0, forward, lambda losses: log.append("check"),
                       step, recompute)


def test_several_samples_stacks_k_checked_batches_row_by_row():
    draws = [torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0]), torch.tensor([5.0, 9.0])]
    log: list[str] = []
    seen = []
    ctx = _context(draws, log)
    ctx._backward_and_step = lambda losses, args: seen.append(losses.clone()) or "w"
    losses, w = several_samples(3)(ctx)
    assert log == ["forward", "check"] * 3 and w == "w"
    assert torch.equal(seen[0], torch.stack(draws))  # (k, T): row i from the i-th batch
    assert torch.allclose(losses, torch.tensor([3.0, 5.0]))  # what the step records: the rows' mean
    assert several_samples(3).loss_samples == 3
    with pytest.raises(ValueError, match="k >= 2"):
        several_samples(1)


def test_then_update_calls_the_model_method_with_the_recomputed_losses_after_the_step():
    log: list[str] = []

    class Model(nn.Module):
        def update_w(self, losses: torch.Tensor) -> None:
            log.append(f"update {losses.tolist()} grad={torch.is_grad_enabled()}")

    ctx = _context([torch.tensor([1.0, 2.0])], log, model=Model(),
                   recompute=lambda: log.append("recompute") or torch.tensor([0.5, 0.25]))
    losses, w = then_update(single_sample, "update_w")(ctx)
    assert log == ["forward", "check", "backward (2,) ['x']", "recompute", "update [0.5, 0.25] grad=False"]
    assert losses.tolist() == [1.0, 2.0] and w == "weights"
    with pytest.raises(AttributeError, match="update_w"):
        then_update(single_sample, "update_w")(_context([torch.zeros(2)], [], recompute=lambda: torch.zeros(2)))
    with pytest.raises(RuntimeError, match="cannot recompute"):
        _context([], []).recompute_losses()


# ---------------------------------------------------------------------------------------------- choice
def test_protocol_for_follows_the_installed_libmtl(monkeypatch):
    assert protocol_for(LibMTL.weighting.EW) is single_sample
    for name in host.builtin_names("weighting"):
        info, proto = host.protocol(name), protocol_for(getattr(LibMTL.weighting, name))
        assert getattr(proto, "loss_samples", 1) == info.loss_samples, name
        assert getattr(proto, "update_after_step", None) == info.update_after_step, name
    monkeypatch.setitem(protocols.LIBMTL_PROTOCOLS, "EW", several_samples(2))
    sub = type("MyEW", (LibMTL.weighting.EW,), {})  # a subclass of a LibMTL class gets that class's protocol
    assert protocol_for(sub).loss_samples == 2
    own = type("Own", (LibMTL.weighting.EW,), {"libmtl_step_protocol": staticmethod(single_sample)})
    assert protocol_for(own) is single_sample
    assert protocol_for(type("Plain", (LibMTL.weighting.abstract_weighting.AbsWeighting,), {})) is single_sample


def test_git_version_special_weightings_get_their_protocols(libmtl_flavour):
    present = [n for n in ("MoDo", "SDMGrad", "FAMO") if n in libmtl_flavour.weightings]
    if not present:
        pytest.skip("the installed LibMTL has none of MoDo, SDMGrad, FAMO (LibMTL 1.1.5)")
    for name in present:
        proto = from_host(name)
        if name == "FAMO":
            assert proto.update_after_step == "update_w" and getattr(proto, "loss_samples", 1) == 1
        else:
            assert proto.loss_samples == 3 and getattr(proto, "update_after_step", None) is None


def test_bilevel_methods_are_refused_before_anything_is_built(libmtl_flavour, monkeypatch):
    for name in libmtl_flavour.bilevel:  # the git version's MOML, FORUM, AutoLambda
        with pytest.raises(BilevelMethodError, match=rf"'{name}'.*bilevel.*LibMTL's own Trainer") as err:
            MTLTrainer(acc_ce_task_dict(TASKS), name, "HPS", VectorEncoder, {t: nn.Linear(5, 2) for t in TASKS},
                       False, False, {"optim": "adam", "lr": 1e-3}, None, device="cpu", verbose=False)
        assert "outer_lr" in str(err.value) and isinstance(err.value, host.NoClassError)
    # on any LibMTL: a name the host reports as bilevel is refused with the reason, a class never is
    monkeypatch.setattr(host, "bilevel_methods", lambda: ("Inner",))
    monkeypatch.setattr(protocols, "bilevel_message", lambda name: f"{name} is bilevel")
    with pytest.raises(BilevelMethodError, match="Inner is bilevel"):
        trainable_weighting("Inner")
    assert trainable_weighting("EW") is LibMTL.weighting.EW is trainable_weighting(LibMTL.weighting.EW)


# ---------------------------------------------------------------------------------------------- every weighting
class _Data(Dataset):
    """``x (6,)``; task ``t``'s label: the sign of feature ``i``."""

    def __init__(self, n: int, seed: int, task: str | None = None) -> None:
        self.x = torch.randn(n, 6, generator=torch.Generator().manual_seed(seed))
        self.y = {t: (self.x[:, i] > 0).long() for i, t in enumerate(TASKS)}
        self.task = task

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return (self.x[i], self.y[self.task][i]) if self.task else (self.x[i], {t: v[i] for t, v in self.y.items()})


def _train(name: str, multi: bool) -> tuple[MTLTrainer, list[int]]:
    """One epoch of 3 steps (12 items, batches of 4) of ``name``; returns the trainer and, per step, how many
    training batches it drew (per task, multi-input)."""
    torch.manual_seed(0)
    cls = trainable_weighting(name)
    tr = MTLTrainer(acc_ce_task_dict(TASKS), name, "HPS", VectorEncoder, {t: nn.Linear(5, 2) for t in TASKS},
                    needs_rep(cls), multi, {"optim": "adam", "lr": 1e-2}, None, device="cpu", verbose=False,
                    weight_args=dict(host.protocol(name).weight_args))
    draws: list[int] = []
    fetch = tr._fetch

    def counting(loader):
        if tr.model.training and (not multi or getattr(loader, "name", None) == TASKS[0]):
            draws.append(tr.batch_index_now)
        return fetch(loader)

    tr._fetch = counting
    step = tr.train_step

    def stepping(loader, epoch, batch_index):
        tr.batch_index_now = batch_index
        return step(loader, epoch, batch_index)

    tr.train_step = stepping
    if multi:
        train = {t: DataLoader(_Data(12, 0, t), batch_size=4, shuffle=True, drop_last=True) for t in TASKS}
        test = {t: DataLoader(_Data(8, 1, t), batch_size=8) for t in TASKS}
    else:
        train, test = DataLoader(_Data(12, 0), batch_size=4, shuffle=True, drop_last=True), DataLoader(_Data(8, 1))
    tr.train(train, test, 1)
    return tr, [draws.count(i) for i in range(3)]


@pytest.mark.parametrize("name", HEAD_WEIGHTINGS)
def test_every_libmtl_weighting_trains_one_epoch_in_our_trainer(name):
    if name not in host.builtin_names("weighting"):
        pytest.skip(f"the installed LibMTL has no weighting {name}")
    tr, draws = _train(name, multi=False)
    losses = tr.history[0]["train_loss"]
    assert tr.status == "complete" and all(math.isfinite(v) for v in losses.values()), losses
    assert all(math.isfinite(v) for v in tr.history[0]["test_loss"].values())
    assert draws == [host.protocol(name).loss_samples] * 3  # k batches per step (MoDo, SDMGrad: 3)
    if name == "FAMO":  # update_w ran after the steps (w starts at 0 and changes only there)
        assert not torch.allclose(tr.model.w.detach(), torch.zeros(len(TASKS)))


@pytest.mark.parametrize("name", ["MoDo", "SDMGrad", "FAMO"])
def test_git_version_special_weightings_train_multi_input(name):
    if name not in host.builtin_names("weighting"):
        pytest.skip(f"the installed LibMTL has no weighting {name}")
    tr, draws = _train(name, multi=True)
    assert tr.status == "complete" and all(math.isfinite(v) for v in tr.history[0]["train_loss"].values())
    assert draws == [host.protocol(name).loss_samples] * 3  # per task: k batches per step
    if name == "FAMO":
        assert not torch.allclose(tr.model.w.detach(), torch.zeros(len(TASKS)))


def test_probing_a_weighting_leaves_the_random_state_alone() -> None:
    """The first use of a weighting in a process probes it (cached); the run that asked has already seeded
    its generators, so the probe must not shift them (else a method's first seed trains differently)."""
    flavour._cached("protocols", flavour._protocols).pop("MGDA", None)
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    flavour.protocol("MGDA")
    after = torch.rand(3), np.random.rand(3), random.random()
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    assert torch.equal(after[0], torch.rand(3)) and np.array_equal(after[1], np.random.rand(3))
    assert after[2] == random.random()
