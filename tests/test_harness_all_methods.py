"""The harness asks the plugin host for every weighting (``--methods all``; the ``paper`` suite's optional
baselines), by behaviour, so the same code plans LibMTL 1.1.5's and the git version's grids."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from torch import nn
from torch.utils.data import DataLoader

from libmtl_repmtl.benchmarks import Benchmark, register
from libmtl_repmtl.harness import cli, methods, plan
from libmtl_repmtl.harness.methods import all_weightings, expand_methods, installed, left_out_of_all, method_specs
from libmtl_repmtl.harness.plan import SUITES, suite_methods
from libmtl_repmtl.harness.report import method_settings
from libmtl_repmtl.harness.runs import is_complete
from libmtl_repmtl.libmtl import host
from libmtl_repmtl.training.protocols import protocol_for, single_sample
from tests._models import PooledLinearHead, SignDataset, TinyConvEncoder, acc_ce_task_dict

PAPER_EXTRAS = ("DB_MTL", "Nash_MTL", "FairGrad", "Aligned_MTL", "STCH")
TASKS = ("a", "b")


register(Benchmark(
    name="toy-all", tasks=TASKS, multi_input=False, has_val=True, task_dict=acc_ce_task_dict,
    dataloaders=lambda tasks, o: {"train": DataLoader(SignDataset(12, 0), batch_size=4, shuffle=True, drop_last=True),
                                  "val": DataLoader(SignDataset(4, 1), batch_size=4),
                                  "test": DataLoader(SignDataset(4, 2), batch_size=4)},
    encoder_class=lambda o: (lambda: TinyConvEncoder(width=4, depth=1)),
    decoders=lambda tasks, o: nn.ModuleDict({t: PooledLinearHead(width=4) for t in tasks}),
    defaults={"epochs": 1, "train_bs": 4, "lr": 1e-3}))


def _libmtl_classes() -> set[str]:
    """LibMTL's own weighting classes, read from its package (the truth the host must agree with)."""
    mod = importlib.import_module("LibMTL.weighting")
    base = importlib.import_module("LibMTL.weighting.abstract_weighting").AbsWeighting
    return {n for n, v in vars(mod).items() if isinstance(v, type) and issubclass(v, base) and v is not base}


def test_all_is_every_weighting_class_of_the_installed_libmtl_and_the_plugins(libmtl_flavour) -> None:
    names = all_weightings()
    assert set(names) == _libmtl_classes() | {"RepMTL"}
    assert set(names) | set(left_out_of_all()) == set(host.available("weighting")["weighting"])
    assert set(libmtl_flavour.bilevel) <= set(left_out_of_all())  # git: MOML, FORUM, AutoLambda; 1.1.5: none
    assert all("bilevel" in why for n, why in left_out_of_all().items() if n in libmtl_flavour.bilevel)
    for name in names:  # each is a method the trainer can resolve
        assert host.lookup("weighting", name).__name__ == name


def test_all_expands_in_place_without_repeating_a_method_given_beside_it() -> None:
    labels = [s.name for s in method_specs(["all", "STL", "RepMTL"])]
    assert labels.count("RepMTL") == 1 and labels[-2:] == ["STL", "RepMTL"]
    assert labels[:-2] == [n for n in all_weightings() if n != "RepMTL"]
    assert expand_methods(["EW", "STL"]) == ["EW", "STL"]


def test_paper_suite_adds_the_strong_baselines_exactly_where_installed() -> None:
    paper = SUITES["paper"]
    got = suite_methods(paper)
    assert got[:len(paper.methods)] == paper.methods
    assert got[len(paper.methods):] == tuple(m for m in PAPER_EXTRAS if m in _libmtl_classes())
    assert all(installed(m) == (m in _libmtl_classes()) for m in PAPER_EXTRAS)


def test_paper_suite_is_decided_when_planned_by_what_the_host_finds(monkeypatch) -> None:
    """Not by version, not at import: pretend the host finds only FairGrad and STCH."""
    monkeypatch.setattr(plan, "installed", lambda m: m in {"FairGrad", "STCH"})
    assert suite_methods(SUITES["paper"])[-2:] == ("FairGrad", "STCH")
    monkeypatch.setattr(plan, "installed", lambda m: False)
    assert suite_methods(SUITES["paper"]) == SUITES["paper"].methods


def test_bench_methods_all_plans_every_weighting_and_says_what_it_left_out(tmp_path: Path, capsys) -> None:
    assert cli.main(["--benchmarks", "multimnist", "--methods", "all", "STL", "--dry-run", "--out",
                     str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("--methods all: " + ", ".join(all_weightings()))
    for name, why in left_out_of_all().items():
        assert f"{name} ({why})" in out
    for name in all_weightings():
        assert f"multimnist/{name}/seed0 " in out
    assert "multimnist/STL/seed0/left" in out


def test_an_unavailable_paper_baseline_is_never_planned(monkeypatch, tmp_path: Path) -> None:
    """With no optional baseline installed, the paper suite's grid holds none of them (and fails on none)."""
    monkeypatch.setattr(plan, "installed", lambda m: False)
    grid, desc = cli.resolve_grid(cli.build_parser().parse_args(["--suite", "paper", "--out", str(tmp_path)]))
    assert not set(desc["methods"]) & set(PAPER_EXTRAS)
    assert {r.method for r in grid} == set(SUITES["paper"].methods)


def _plain(name: str) -> bool:
    """One loss vector per step and nothing after it: the default step protocol suffices."""
    p = host.protocol(name)
    return p.loss_samples == 1 and p.update_after_step is None


def test_bench_methods_all_trains_every_weighting(tmp_path: Path, capsys) -> None:
    """Every weighting ``all`` stands for trains one epoch through the harness; those with a step protocol of
    their own (the git version's MoDo, SDMGrad, FAMO) are held to it once the trainer has one for them."""
    code = cli.main(["--benchmarks", "toy-all", "--methods", "all", "--epochs", "1", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    done = {n for n in all_weightings() if is_complete(tmp_path / "toy-all" / n / "seed0", 1)}
    must = {n for n in all_weightings()
            if _plain(n) or protocol_for(host.lookup("weighting", n)) is not single_sample}
    assert must <= done, out[-3000:]
    assert code == (0 if done == set(all_weightings()) else 1)
    assert all(f"| {n} |" in (tmp_path / "summary.md").read_text() for n in done)


@pytest.mark.parametrize("name", ["EW", "NoSuchWeighting"])
def test_installed_asks_the_host(name: str) -> None:
    assert methods.installed(name) is (name == "EW")


def test_a_weighting_that_reads_the_representation_runs_with_rep_grad(tmp_path: Path) -> None:
    """GradDrop refuses parameter gradients: the plan runs it with rep_grad (and says so in the settings)."""
    grad_drop, ew = plan.plan_grid(["toy-all"], ["GradDrop", "EW"], [0], tmp_path)
    assert grad_drop.options["rep_grad"] is True and "rep_grad" not in ew.options
    assert "with rep_grad" in method_settings("GradDrop") and "rep_grad" not in method_settings("EW")
