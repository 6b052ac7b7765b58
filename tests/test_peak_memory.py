"""Peak memory per run is the run's own (training/memory.py), also when runs share a process as in a grid."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from libmtl_repmtl.benchmarks import Benchmark, register
from libmtl_repmtl.harness.execute import execute
from libmtl_repmtl.harness.plan import plan_grid
from libmtl_repmtl.harness.report import write_summary
from libmtl_repmtl.training.experiment import run_experiment
from libmtl_repmtl.training.memory import KINDS, PeakMemory
from libmtl_repmtl.training.results import read_results
from tests._models import PooledLinearHead, SignDataset, TinyConvEncoder, acc_ce_task_dict

TASKS = ("a", "b")
BALLAST_MIB = 384


class _BallastEncoder(TinyConvEncoder):
    """A tiny encoder that, while :attr:`ballast_mib` is set, fills that many MiB on every forward."""

    ballast_mib = 0

    def __init__(self) -> None:
        super().__init__(width=4, depth=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if type(self).ballast_mib:
            ballast = torch.ones(type(self).ballast_mib * 2**18, device=x.device)  # float32: 4 bytes each
            x = x + ballast[:1].sum() * 0
            del ballast
        return super().forward(x)


def _loaders(tasks, opts):
    return {"train": DataLoader(SignDataset(8, 0), batch_size=4, shuffle=True, drop_last=True),
            "val": DataLoader(SignDataset(4, 1), batch_size=4), "test": DataLoader(SignDataset(4, 2), batch_size=4)}


register(Benchmark(
    name="toy-memory", tasks=TASKS, multi_input=False, has_val=True, task_dict=acc_ce_task_dict,
    dataloaders=_loaders, encoder_class=lambda o: _BallastEncoder,
    decoders=lambda tasks, o: nn.ModuleDict({t: PooledLinearHead(width=4) for t in tasks}),
    defaults={"epochs": 1, "train_bs": 4, "lr": 1e-3}))


def _runner(ballast: dict[str, int]):
    def run(benchmark, weighting, arch, dataset_path, save_path, **kw):
        _BallastEncoder.ballast_mib = ballast.get(weighting, 0)
        try:
            return run_experiment(benchmark, weighting, arch, dataset_path, save_path, verbose=False, **kw)
        finally:
            _BallastEncoder.ballast_mib = 0
    return run


def test_the_second_run_of_a_grid_does_not_inherit_the_first_runs_peak(tmp_path) -> None:
    """Two grid runs in one process: the first allocates 384 MiB in every forward, the second nothing. Each
    run's results.json reports its own peak (a process-lifetime peak would give the second run the first's)."""
    grid = plan_grid(["toy-memory"], ["EW", "UW"], [0], tmp_path, {"toy-memory": {"epochs": 1}})
    outcomes = execute(grid, device="cpu", log=lambda s: None, runner=_runner({"EW": BALLAST_MIB}))
    assert [o.status for o in outcomes] == ["ran", "ran"], [o.error for o in outcomes]
    first, second = (read_results(r.save_path / "results.json") for r in grid)
    assert first.peak_memory_kind == second.peak_memory_kind == PeakMemory(torch.device("cpu")).kind
    assert first.peak_memory_mb is not None and second.peak_memory_mb is not None
    assert first.peak_memory_mb >= 0.9 * BALLAST_MIB, first.peak_memory_mb
    assert second.peak_memory_mb < 0.25 * BALLAST_MIB, second.peak_memory_mb
    assert all(e.peak_memory_mb is not None and e.peak_memory_mb <= first.peak_memory_mb + 1e-6
               for e in first.epochs)
    write_summary(grid, tmp_path)  # summary.md says what the column means, with the runs' kind
    md = (tmp_path / "summary.md").read_text()
    assert "Peak MiB: each run's own peak memory during its training" in md and first.peak_memory_kind in md


def _meter_sees(device: torch.device, mib: int) -> float:
    meter = PeakMemory(device)
    assert meter.peak_mb() is None  # nothing measured before start()
    meter.start()
    t = torch.ones(mib * 2**18, device=device)
    del t
    peak = meter.peak_mb()
    assert peak is not None
    return peak


def test_the_meter_measures_from_its_start_only() -> None:
    """An allocation before ``start()`` is not counted; one after it is, and a restart forgets it."""
    cpu = torch.device("cpu")
    assert _meter_sees(cpu, 256) >= 0.9 * 256
    assert _meter_sees(cpu, 0) < 64
    assert PeakMemory(cpu).kind in KINDS.values() and "MiB" in PeakMemory(cpu).kind


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_cuda_meter_is_reset_per_run() -> None:
    """CUDA: the peak statistics are reset at each start (a second meter does not see the first's peak)."""
    cuda = torch.device("cuda")
    assert _meter_sees(cuda, 256) >= 255
    assert _meter_sees(cuda, 0) < 1
    assert PeakMemory(cuda).kind == KINDS["cuda"]


def test_the_meter_keeps_the_peak_it_had_when_stopped() -> None:
    """After ``stop()`` an allocation no longer counts (the final results.json and the returned results agree);
    a new ``start()`` measures again."""
    meter = PeakMemory(torch.device("cpu"))
    meter.stop()  # before start: nothing to keep
    assert meter.peak_mb() is None
    meter.start()
    meter.stop()
    kept = meter.peak_mb()
    assert kept is not None and kept < 64
    t = torch.ones(256 * 2**18)
    t += 1  # touch every page
    assert meter.peak_mb() == kept
    meter.stop()  # stopped already: still the first stop's value
    assert meter.peak_mb() == kept
    meter.start()
    u = torch.ones(256 * 2**18)
    u += 1
    del t, u
    assert meter.peak_mb() >= 0.9 * 256
