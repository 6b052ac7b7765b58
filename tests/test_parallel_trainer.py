"""The trainer under DDP (2 gloo processes, ``run_experiment`` as torchrun's processes call it) and with bf16
autocast on the CPU.

One ``mp.spawn`` of 2 processes (module fixture) trains several small runs; the tests compare what each rank
returned and wrote with single-process evaluations of rank 0's checkpoint.
"""

from __future__ import annotations

import math
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader, Dataset

from libmtl_repmtl.benchmarks import Baseline, Benchmark, get, names, register
from tests._models import PooledLinearHead, TinyConvEncoder, acc_ce_task_dict

TASKS = ("a", "b")
WORLD = 2
BENCH = "ddp-toy"
#: Keys of an epoch record that are each rank's own measurements.
OWN = {"train_seconds", "val_seconds", "test_seconds", "peak_memory_mb"}


class _Data(Dataset):
    """``x (3, 6, 6)``; task ``t``'s label is the sign of channel ``i``'s mean. ``nan_index``: one NaN image;
    ``bad_label_index``: one label of task ``a`` out of range."""

    def __init__(self, n: int, seed: int, nan_index: int | None = None, bad_label_index: int | None = None) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 3, 6, 6, generator=g)
        self.y = {t: (self.x[:, i].mean((1, 2)) > 0).long() for i, t in enumerate(TASKS)}
        if nan_index is not None:
            self.x[nan_index] = float("nan")
        if bad_label_index is not None:
            self.y["a"][bad_label_index] = 7

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], {t: v[i] for t, v in self.y.items()}


class _Enc(TinyConvEncoder):
    def __init__(self) -> None:
        super().__init__(width=6, depth=2, batch_norm=True)


class _Head(PooledLinearHead):
    def __init__(self) -> None:
        super().__init__(width=6)


_task_dict = acc_ce_task_dict


def _loaders(tasks, opts):
    gen = torch.Generator().manual_seed(opts["seed"])
    train = _Data(16, 0, opts.get("nan_index"), opts.get("bad_label_index"))
    return {"train": DataLoader(train, batch_size=opts["train_bs"], shuffle=True,
                                drop_last=True, generator=gen),
            "val": DataLoader(_Data(5, 1), batch_size=2),  # shards of 3 and 2 samples, partial batches
            "test": DataLoader(_Data(7, 2), batch_size=3)}


if BENCH not in names():
    register(Benchmark(
        name=BENCH, tasks=TASKS, multi_input=False, has_val=True, task_dict=_task_dict, dataloaders=_loaders,
        encoder_class=lambda o: _Enc, decoders=lambda tasks, o: nn.ModuleDict({t: _Head() for t in tasks}),
        defaults={"epochs": 2, "train_bs": 4, "lr": 1e-2}, options={"nan_index": int, "bad_label_index": int},
        baseline=Baseline.in_metric_units({"a": [0.5], "b": [0.5]})))

#: (name, weighting, arch, run_experiment keyword arguments)
CASES = [
    ("ew", "EW", "HPS", {}),
    ("repmtl", "RepMTL", "RepHPS", {"weight_args": {"RepMTL_global_negatives": True}}),
    ("dwa", "DWA", "HPS", {"epochs": 3}),
    ("nan", "EW", "HPS", {"nan_index": 5}),  # refused by the batch check before the forward
    ("nanloss", "EW", "HPS", {"nan_index": 5}),  # batch check off: the loss is NaN on one rank
    ("badlabel", "EW", "HPS", {"bad_label_index": 5}),  # refused by the label check after the forward
    ("mgda", "MGDA", "HPS", {}),
    ("unwritable", "EW", "HPS", {"epochs": 1}),  # save_path is a file: rank 0's first write fails
]


def _worker(rank: int, port: int, out_dir: str) -> None:
    import libmtl_repmtl.training.io as tio
    import libmtl_repmtl.training.strategy as strategy_mod
    import libmtl_repmtl.training.trainer as trainer_mod
    from libmtl_repmtl.training import run_experiment
    from libmtl_repmtl.training.distributed import cleanup, init_from_env

    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    env = init_from_env(device="cpu")  # the group stays up across the runs (run_experiment leaves it alone)
    writes: list[str] = []
    gathers = [0]
    atomic_write, gather = tio.atomic_write, strategy_mod.gather_with_grad

    def record_write(path: Any, *a: Any, **k: Any) -> Any:  # every run file goes through io.atomic_write
        writes.append(Path(path).name)
        return atomic_write(path, *a, **k)

    def counting_gather(local: torch.Tensor) -> Any:
        gathers[0] += 1
        return gather(local)

    tio.atomic_write = record_write
    strategy_mod.gather_with_grad = counting_gather
    read: list[int] = []  # training items read by this rank, in order
    get_item = _Data.__getitem__

    def recording_get_item(self: _Data, i: int) -> Any:
        if len(self) == 16:
            read.append(int(i))
        return get_item(self, i)

    _Data.__getitem__ = recording_get_item  # type: ignore[method-assign]
    trained: list[Any] = []
    train = trainer_mod.MTLTrainer.train

    def keeping_train(self: Any, *a: Any, **k: Any) -> Any:
        trained.append(self)
        return train(self, *a, **k)

    trainer_mod.MTLTrainer.train = keeping_train  # type: ignore[method-assign]
    out: dict[str, Any] = {}
    try:
        for name, weighting, arch, kwargs in CASES:
            writes.clear()
            read.clear()
            trained.clear()
            gathers[0] = 0
            trainer_mod.MTLTrainer.check_data = name != "nanloss"
            try:
                res = run_experiment(BENCH, weighting, arch, None, os.path.join(out_dir, name), device="cpu",
                                     verbose=False, progress=False, **kwargs)
                out[name] = {"results": res}
            except Exception as exc:  # noqa: BLE001 - compared by the tests
                out[name] = {"error": f"{type(exc).__name__}: {exc}"}
            out[name].update(writes=list(writes), gathers=gathers[0], read=list(read),
                             params=[torch.cat([p.detach().flatten() for p in t.model.parameters()]) for t in trained])
        torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        cleanup(env)


@pytest.fixture(scope="module")
def spawned():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "unwritable").write_text("a file, not a folder")
        mp.spawn(_worker, args=(port, tmp), nprocs=WORLD, join=True)
        outs = [torch.load(os.path.join(tmp, f"rank{r}.pt"), weights_only=False) for r in range(WORLD)]
        checks = {name: _single_process_scores(Path(tmp) / name, w, a) for name, w, a, _ in CASES[:3]}
        yield outs, checks, Path(tmp)


def _single_process_scores(save: Path, weighting: str, arch: str) -> dict[str, Any]:
    """Rank 0's ``last.pt`` evaluated in this process on the whole val and test splits."""
    from libmtl_repmtl.libmtl.capabilities import resolve_architecture
    from libmtl_repmtl.training.experiment import arch_args_for
    from libmtl_repmtl.training.trainer import MTLTrainer

    spec = get(BENCH)
    opts = {**spec.defaults, "seed": 0}
    trainer = MTLTrainer(spec.task_dict(TASKS, opts), weighting, arch, _Enc,
                         spec.decoders(TASKS, opts), False, False, {"optim": "adam"}, None, None,
                         load_path=save / "last.pt", device="cpu", verbose=False,
                         arch_args=arch_args_for(resolve_architecture(arch)))
    loaders = spec.dataloaders(TASKS, opts)
    return {split: trainer.evaluate(loaders[split]) for split in ("val", "test")}


def _finite(value: Any) -> bool:
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_finite(v) for v in value)
    if isinstance(value, float):
        return math.isfinite(value)
    return True


@pytest.mark.dist
@pytest.mark.parametrize("name", ["ew", "repmtl", "dwa"])
def test_every_rank_computes_the_same_epoch_records_and_rank0_alone_writes(spawned, name):
    outs, checks, root = spawned
    r0, r1 = outs[0][name], outs[1][name]
    assert "error" not in r0 and "error" not in r1, (r0.get("error"), r1.get("error"))
    e0, e1 = r0["results"]["epochs"], r1["results"]["epochs"]
    assert len(e0) == len(e1) == r0["results"]["epochs_total"] and r0["results"]["status"] == "complete"
    for a, b in zip(e0, e1):
        assert {k: v for k, v in a.items() if k not in OWN} == {k: v for k, v in b.items() if k not in OWN}
        assert _finite(a) and a["train_loss"] and a["test"] and a["val"]
    assert r0["results"]["config"]["world_size"] == WORLD
    # rank 0 wrote results.json and the checkpoints every epoch; rank 1 wrote nothing
    assert set(r0["writes"]) == {"results.json", "last.pt", "best.pt"} and r1["writes"] == []
    assert {p.name for p in (root / name).iterdir()} == {"results.json", "last.pt", "best.pt"}


@pytest.mark.dist
@pytest.mark.parametrize("name", ["ew", "repmtl", "dwa"])
def test_reduced_scores_equal_a_single_process_evaluation_of_the_checkpoint(spawned, name):
    """val/test are sharded (3+2, 4+3 samples) and reduced; BatchNorm buffers are rank 0's on every rank."""
    outs, checks, _ = spawned
    last = outs[0][name]["results"]["epochs"][-1]
    for split in ("val", "test"):
        single = checks[name][split]
        assert set(last[split]) == set(single["metrics"]) == set(TASKS)
        for task in TASKS:
            assert last[split][task] == pytest.approx(single["metrics"][task], rel=1e-12), (split, task)
        assert last[f"{split}_loss"] == pytest.approx(single["loss"], rel=1e-6)


@pytest.mark.dist
@pytest.mark.parametrize("name", ["ew", "repmtl", "dwa"])
def test_parameters_stay_identical_across_ranks(spawned, name):
    """Different shards, one all-reduced gradient: the ranks' models are equal after training."""
    outs, _, _ = spawned
    p0, p1 = outs[0][name]["params"], outs[1][name]["params"]
    assert len(p0) == len(p1) == 1
    assert torch.equal(p0[0], p1[0])


@pytest.mark.dist
def test_ranks_train_on_disjoint_shards_reshuffled_every_epoch(spawned):
    outs, _, _ = spawned
    reads = [outs[r]["ew"]["read"] for r in range(WORLD)]  # 2 epochs x 2 batches x 4 items per rank
    assert [len(x) for x in reads] == [16, 16]
    epochs = [[x[8 * e: 8 * (e + 1)] for x in reads] for e in range(2)]
    for shards in epochs:
        assert sorted(shards[0] + shards[1]) == list(range(16))  # together: the whole training set, once
    assert epochs[0][0] != epochs[1][0]  # set_epoch: a new order each epoch


@pytest.mark.dist
def test_repmtl_global_negatives_gather_across_ranks(spawned):
    outs, _, _ = spawned
    for r in range(WORLD):
        assert outs[r]["repmtl"]["gathers"] > 0  # the CSA anchors went through gather_with_grad
        assert outs[r]["ew"]["gathers"] == 0
        stats = outs[r]["repmtl"]["results"]["epochs"][-1]["repmtl"]
        assert {"L_tsr", "L_csa", "total"} <= set(stats) and _finite(stats)


@pytest.mark.dist
def test_dwa_weights_agree_across_ranks(spawned):
    outs, _, _ = spawned
    w0 = [e["task_weights"] for e in outs[0]["dwa"]["results"]["epochs"]]
    w1 = [e["task_weights"] for e in outs[1]["dwa"]["results"]["epochs"]]
    assert w0 == w1 and w0[2] != {"a": 1.0, "b": 1.0}  # epoch 2 uses the (reduced) loss history


@pytest.mark.dist
@pytest.mark.parametrize(("case", "error"), [("nan", "BatchDataError"), ("nanloss", "NonFiniteLossError"),
                                             ("badlabel", "BatchDataError")])
def test_a_bad_batch_on_one_rank_stops_every_rank(spawned, case, error):
    outs, _, root = spawned
    errors = [outs[r][case]["error"] for r in range(WORLD)]
    assert all(e.startswith(error) for e in errors), errors
    assert sum("on another rank" in e for e in errors) == 1  # the bad item is in exactly one shard
    import json

    res = json.loads((root / case / "results.json").read_text())
    assert res["status"] == "failed" and error in res["error"]
    assert outs[1][case]["writes"] == []


@pytest.mark.dist
def test_gradient_methods_are_refused_on_every_rank(spawned):
    outs, _, root = spawned
    for r in range(WORLD):
        err = outs[r]["mgda"]["error"]
        assert err.startswith("ValueError") and "'MGDA' cannot be trained with DistributedDataParallel" in err
        assert "single process" in err
    assert not (root / "mgda").exists()


@pytest.mark.dist
def test_a_failed_write_on_rank0_stops_every_rank(spawned):
    outs, _, _ = spawned
    own = outs[0]["unwritable"]["error"]  # rank 0's own: the run file it could not write, with the OS's reason
    assert own.startswith("RunFileWriteError: could not write") and "results.json" in own
    assert "File exists" in own or "Not a directory" in own
    assert "results.json" in outs[0]["unwritable"]["writes"]
    err = outs[1]["unwritable"]["error"]
    assert err.startswith("RuntimeError: epoch 0 failed on another rank (rank 0:") and "every rank stops" in err


# ---------------------------------------------------------------------------------------------- bf16 (1 process)
def test_bf16_autocast_trains_repmtl_through_the_trainer_with_float32_saliency_terms(tmp_path, monkeypatch):
    import libmtl_repmtl.core.objective as objective
    from libmtl_repmtl.training import run_experiment

    seen: dict[str, set] = {"saliency": set(), "tsr": set(), "csa": set(), "head": set()}
    original = objective.regularised_objective

    def recording(*args: Any, **kwargs: Any) -> Any:
        terms = original(*args, **kwargs)
        seen["saliency"].update(s.dtype for s in terms.saliencies)
        seen["tsr"].add(terms.tsr.dtype)
        seen["csa"].add(terms.csa.dtype)
        return terms

    monkeypatch.setattr(objective, "regularised_objective", recording)
    head_forward = _Head.forward

    def recording_head(self: _Head, z: torch.Tensor) -> torch.Tensor:
        out = head_forward(self, z)
        if torch.is_grad_enabled():
            seen["head"].add(out.dtype)
        return out

    monkeypatch.setattr(_Head, "forward", recording_head)
    res = run_experiment(BENCH, "RepMTL", "RepHPS", None, tmp_path, device="cpu", verbose=False, amp="bf16")
    assert res["status"] == "complete" and res["config"]["amp"] == "bf16" and res["config"]["world_size"] == 1
    assert seen["head"] == {torch.bfloat16}  # the network ran in bfloat16 ...
    assert seen["saliency"] == seen["tsr"] == seen["csa"] == {torch.float32}  # ... the saliency terms in float32
    for epoch in res["epochs"]:
        assert _finite(epoch) and all(math.isfinite(v) for v in epoch["train_loss"].values())
        assert math.isfinite(epoch["repmtl"]["total"])


def test_amp_and_sync_bn_flags_are_checked_before_training(tmp_path):
    from libmtl_repmtl.training import run_experiment

    with pytest.raises(ValueError, match="--amp bf16"):
        run_experiment(BENCH, "EW", "HPS", None, tmp_path / "a", device="cpu", verbose=False, amp="fp16")
    with pytest.raises(ValueError, match="unknown --amp value"):
        run_experiment(BENCH, "EW", "HPS", None, tmp_path / "b", device="cpu", verbose=False, amp="int8")
    with pytest.raises(ValueError, match="torchrun"):
        run_experiment(BENCH, "EW", "HPS", None, tmp_path / "c", device="cpu", verbose=False, sync_bn=True)
    assert not any((tmp_path / d).exists() for d in "abc")


def test_single_process_float32_runs_keep_the_plain_trainer(tmp_path, monkeypatch):
    from libmtl_repmtl.training import experiment

    built: list[type] = []
    original_train = experiment.MTLTrainer.train

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        built.append(type(self))
        return original_train(self, *args, **kwargs)

    monkeypatch.setattr(experiment.MTLTrainer, "train", spy)
    experiment.run_experiment(BENCH, "EW", "HPS", None, tmp_path / "fp32", device="cpu", verbose=False, epochs=1)
    experiment.run_experiment(BENCH, "EW", "HPS", None, tmp_path / "bf16", device="cpu", verbose=False, epochs=1,
                              amp="bf16")
    assert built[0] is experiment.MTLTrainer and built[1] is experiment.ParallelMTLTrainer


def test_float16_grad_scaler_path_trains_and_checkpoints_the_scaler(tmp_path):
    """fp16 + GradScaler is CUDA's setting; the CPU stand-in (an explicit AmpConfig) runs the same trainer path:
    scaled_backward, scaler.step/update (overflowing steps skipped), the scaler's state in the checkpoints."""
    from libmtl_repmtl.libmtl.capabilities import resolve_architecture
    from libmtl_repmtl.training.amp import AmpConfig, make_grad_scaler
    from libmtl_repmtl.training.experiment import ParallelMTLTrainer, arch_args_for

    spec = get(BENCH)
    opts = {**spec.defaults, "seed": 0}

    def build() -> ParallelMTLTrainer:
        torch.manual_seed(0)
        return ParallelMTLTrainer(spec.task_dict(TASKS, opts), "RepMTL", "RepHPS", _Enc, spec.decoders(TASKS, opts),
                                  False, False, {"optim": "adam", "lr": 1e-2}, None, tmp_path, device="cpu",
                                  verbose=False, amp=AmpConfig(True, "cpu", torch.float16, True),
                                  arch_args=arch_args_for(resolve_architecture("RepHPS")))

    trainer = build()
    assert trainer.grad_scaler is not None and trainer.train_model is trainer.model  # one process: no wrapper
    # A scale far above float16's range makes the first steps overflow, so the skip-and-lower path must run
    # (how often a model overflows at the default 2**16 depends on the method's settings).
    trainer.precision._scaler = make_grad_scaler(AmpConfig(True, "cpu", torch.float16, True), init_scale=2.0**40)
    loaders = spec.dataloaders(TASKS, opts)
    trainer.train(loaders["train"], loaders["test"], 2, val_dataloaders=loaders["val"])
    assert trainer.status == "complete"
    for epoch in trainer.history:
        assert _finite(epoch["train_loss"]) and math.isfinite(epoch["repmtl"]["total"])
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    saved = torch.load(tmp_path / "last.pt", weights_only=False)["grad_scaler"]
    assert saved["scale"] == trainer.grad_scaler.get_scale() < 2.0**40  # overflowing steps lowered the scale
    resumed = build()
    assert resumed.grad_scaler.get_scale() == 2.0**16
    resumed.resume = True
    resumed.start_training(3, len(loaders["train"]))  # resume reads last.pt
    assert resumed.start_epoch == 2 and resumed.grad_scaler.get_scale() == saved["scale"]
