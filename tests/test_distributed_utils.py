"""DDP helpers: two gloo processes (float64) against single-process computations of the documented objective.

One ``mp.spawn`` of 2 processes (module fixture) runs every distributed case; the tests compare its outputs.
"""

from __future__ import annotations

import os
import socket
import tempfile
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from libmtl_repmtl.core import RepMTLConfig, csa_loss, stack_saliencies, task_objectives, task_saliencies, tsr_loss
from libmtl_repmtl.core.objective import backward_into_encoder
from libmtl_repmtl.training.distributed import (
    DistEnv,
    ShardSampler,
    check_weighting_supports_ddp,
    make_sampler,
    reduce_sums,
    run_on_main,
    wrap_model,
)

TASKS = ["a", "b", "c"]
BATCH = 3
WORLD = 2
CFG = RepMTLConfig(lambda_tsr=0.7, lambda_csa=1.1, tau=0.2, global_negatives=True)


def _shard(rank: int, multi_input: bool = False):
    from tests._models import make_batch

    return make_batch(TASKS, True, multi_input, BATCH, seed=100 + rank)


def _model(weighting: str, multi_input: bool = False):
    from libmtl_repmtl.libmtl.architecture import RepHPS
    from libmtl_repmtl.libmtl.bases import LibMTL
    from libmtl_repmtl.libmtl.weighting import RepMTL
    from tests._models import HPS, build_model

    torch.manual_seed(0)
    if weighting == "RepMTL":
        return build_model(RepHPS, RepMTL, TASKS, True, multi_input, False)
    return build_model(HPS, LibMTL.weighting.EW, TASKS, True, multi_input, False)


def _metric_data(n: int = 7):
    g = torch.Generator().manual_seed(5)
    return [
        (torch.randn(1, 4, 3, 5, generator=g, dtype=torch.float64), torch.randint(-1, 4, (1, 3, 5), generator=g),
         torch.randn(1, 1, 3, 5, generator=g, dtype=torch.float64), torch.rand(1, 1, 3, 5, generator=g) * (i % 3),
         torch.randn(1, 3, 3, 5, generator=g, dtype=torch.float64), torch.randn(1, 3, 3, 5, generator=g),
         torch.randn(1, 5, generator=g), torch.randint(0, 5, (1,), generator=g))
        for i in range(n)
    ]


def _metric_scores(indices: list[int], env: DistEnv | None) -> dict[str, Any]:
    """Feed the items ``indices`` one batch each to the four metrics and a LibMTL loss, reduce, score."""
    from libmtl_repmtl.libmtl.bases import LibMTL
    from libmtl_repmtl.tasks.metrics import AccMetric, DepthMetric, NormalMetric, SegMetric
    from libmtl_repmtl.training.distributed import all_reduce_metric_state

    data = _metric_data()
    metrics = {"seg": SegMetric(4), "depth": DepthMetric(), "normal": NormalMetric(), "acc": AccMetric()}
    loss = LibMTL.loss.CELoss()
    for i in indices:
        seg, sgt, dep, dgt, nor, ngt, logit, label = data[i]
        metrics["seg"].update_fun(seg, sgt)
        metrics["depth"].update_fun(dep, dgt)
        metrics["normal"].update_fun(nor, ngt)
        metrics["acc"].update_fun(logit, label)
        loss._update_loss(logit, label)
    if env is not None:
        all_reduce_metric_state({**metrics, "loss": loss}, env)
    out = {k: m.score_fun() for k, m in metrics.items()}
    out["loss"] = [float(loss._average_loss())]
    return out


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _ddp_step(weighting: str, env: DistEnv, rank: int, multi_input: bool = False,
              scale: float | None = None) -> dict[str, Any]:
    from libmtl_repmtl.core.distributed import gather_with_grad
    from tests._models import forward_losses

    model = _model(weighting, multi_input)
    fires: dict[str, int] = {}
    for n, p in model.named_parameters():
        p.register_post_accumulate_grad_hook(lambda _p, n=n: fires.__setitem__(n, fires.get(n, 0) + 1))
    ddp = wrap_model(model, env)
    ddp.train()
    ddp.repmtl_gather = gather_with_grad  # goes to the inner model
    inputs, targets = _shard(rank, multi_input)
    losses = forward_losses(ddp, TASKS, inputs, targets, multi_input)
    if scale is None:
        ddp.backward(losses, **CFG.to_weight_args())  # the weighting's backward on the inner model
    else:  # GradScaler-style root scaling (training.amp) under DDP
        from libmtl_repmtl.training.amp import scale_backward_roots

        with scale_backward_roots(scale):
            ddp.backward(losses, **CFG.to_weight_args())
    return {"grads": _grads(model), "fires": fires, "gather_set": model.repmtl_gather is gather_with_grad}


def _worker(rank: int, port: int, out_dir: str) -> None:
    from libmtl_repmtl.training.distributed import any_rank, env_from_group, init_from_env

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    env = init_from_env(device="cpu")  # torchrun's environment, as set above
    try:
        assert env == env_from_group("cpu") and env.backend == "gloo"
        out: dict[str, Any] = {"env": (env.rank, env.world_size, env.is_main, env.distributed)}
        out["repmtl"] = _ddp_step("RepMTL", env, rank)
        out["repmtl_multi"] = _ddp_step("RepMTL", env, rank, multi_input=True)
        out["repmtl_scaled"] = _ddp_step("RepMTL", env, rank, scale=1024.0)
        out["ew"] = _ddp_step("EW", env, rank)
        out["metrics"] = _metric_scores(list(ShardSampler(7, rank, WORLD)), env)
        out["sums"] = reduce_sums({"n": rank + 1, "x": [0.5 * rank, torch.tensor([rank, 1.0])],
                                   "arr": np.array([1.0, rank]), "np": np.float64(rank)}, env)
        out["any"] = (any_rank(rank == 1, env), any_rank(False, env))

        def fail() -> None:
            raise OSError(28, "No space left on device", "results.json")

        try:
            run_on_main(env, fail)
            out["run_on_main"] = "no error"
        except Exception as exc:  # noqa: BLE001
            out["run_on_main"] = f"{type(exc).__name__}: {exc}"
        out["run_on_main_ok"] = run_on_main(env, lambda: "written")
        torch.save(out, os.path.join(out_dir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def spawned() -> list[dict[str, Any]]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(port, tmp), nprocs=WORLD, join=True)
        return [torch.load(os.path.join(tmp, f"{r}.pt"), weights_only=False) for r in range(WORLD)]


# ---------------------------------------------------------------------------------------------- references
def _repmtl_reference(multi_input: bool = False) -> dict[str, torch.Tensor]:
    """Gradient of (1/W) sum_r L_r with global CSA negatives, in one process, from the core functions."""
    from tests._models import task_loss

    model = _model("RepMTL", multi_input)
    model.zero_grad(set_to_none=True)
    shards = [_shard(r, multi_input) for r in range(WORLD)]
    per_rank = []
    for inputs, targets in shards:
        reps = [model.encoder(inputs[t if multi_input else 0]) for t in range(len(TASKS))]
        if not multi_input:
            reps = [reps[0]] * len(TASKS)
        copies = [z.detach().clone().requires_grad_() for z in reps]
        losses = torch.stack([task_loss(model.decoders[t](copies[i]), targets[i]) for i, t in enumerate(TASKS)])
        objectives = task_objectives(losses, CFG.log_loss)
        stacked = stack_saliencies(task_saliencies(objectives, copies, create_graph=True))
        per_rank.append((reps, copies, objectives, stacked))
    # each rank's local anchors (and norms), as its CSA gather receives them
    recorded: list[list[torch.Tensor]] = []
    for *_, stacked in per_rank:
        calls: list[torch.Tensor] = []
        csa_loss(stacked, CFG.tau, gather=lambda local, calls=calls: (calls.append(local), (local, 0))[1])
        recorded.append(calls)
    total = 0.0
    for r, (_, _, objectives, stacked) in enumerate(per_rank):
        count = [0]

        def fake_gather(local: torch.Tensor, r: int = r, count: list[int] = count) -> tuple[torch.Tensor, int]:
            k = count[0]
            count[0] += 1
            parts = [local if q == r else recorded[q][k] for q in range(WORLD)]
            return torch.cat(parts), sum(recorded[q][k].shape[0] for q in range(r))

        csa = csa_loss(stacked, CFG.tau, gather=fake_gather)
        total = total + objectives.sum() + CFG.lambda_tsr * tsr_loss(stacked) + CFG.lambda_csa * csa
    (total / WORLD).backward()
    for reps, copies, *_ in per_rank:
        backward_into_encoder(reps, copies)
    return _grads(model)


def _ew_reference() -> dict[str, torch.Tensor]:
    """One process, the concatenated batch (2 x BATCH), EW with raw losses."""
    from tests._models import forward_losses

    model = _model("EW")
    shards = [_shard(r) for r in range(WORLD)]
    inputs = [torch.cat([s[0][0] for s in shards])]
    targets = [torch.cat([s[1][t] for s in shards]) for t in range(len(TASKS))]
    model.zero_grad(set_to_none=True)
    model.backward(forward_losses(model, TASKS, inputs, targets, False))
    return _grads(model)


# ---------------------------------------------------------------------------------------------- tests
@pytest.mark.dist
@pytest.mark.parametrize("case", ["repmtl", "repmtl_multi"])
def test_repmtl_ddp_gradient_is_mean_of_rank_objectives_with_global_negatives(spawned, case):
    ref = _repmtl_reference(multi_input=case == "repmtl_multi")
    g0, g1 = spawned[0][case]["grads"], spawned[1][case]["grads"]
    assert set(g0) == set(ref) and len(ref) > 0
    for name in ref:
        torch.testing.assert_close(g0[name], g1[name], rtol=0, atol=0)  # DDP: identical on every rank
        torch.testing.assert_close(g0[name], ref[name], rtol=1e-9, atol=1e-12, msg=name)
    # two-phase backward (heads + copies, then the encoder): every parameter accumulates exactly once
    for r in range(WORLD):
        assert set(spawned[r][case]["fires"]) == set(ref)
        assert set(spawned[r][case]["fires"].values()) == {1}
        assert spawned[r][case]["gather_set"]


@pytest.mark.dist
def test_root_scaled_repmtl_backward_under_ddp_is_s_times_the_gradient(spawned):
    for r in range(WORLD):
        ref, got = spawned[r]["repmtl"]["grads"], spawned[r]["repmtl_scaled"]["grads"]
        for name in ref:
            torch.testing.assert_close(got[name] / 1024.0, ref[name], rtol=1e-10, atol=1e-14, msg=name)
        assert set(spawned[r]["repmtl_scaled"]["fires"].values()) == {1}


@pytest.mark.dist
def test_ew_ddp_equals_single_process_on_concatenated_batch(spawned):
    ref = _ew_reference()
    for r in range(WORLD):
        for name, g in ref.items():
            torch.testing.assert_close(spawned[r]["ew"]["grads"][name], g, rtol=1e-10, atol=1e-13, msg=name)


@pytest.mark.dist
def test_metric_reduction_equals_single_process(spawned):
    single = _metric_scores(list(range(7)), None)
    for r in range(WORLD):
        got = spawned[r]["metrics"]
        assert set(got) == set(single)
        for k in single:
            assert got[k] == pytest.approx(single[k], rel=1e-12, abs=1e-12, nan_ok=True), k


@pytest.mark.dist
def test_sums_flags_and_main_only_writes(spawned):
    for r in range(WORLD):
        out = spawned[r]
        assert out["env"] == (r, WORLD, r == 0, True)
        assert out["sums"]["n"] == 3 and isinstance(out["sums"]["n"], int)
        assert out["sums"]["x"][0] == pytest.approx(0.5)
        torch.testing.assert_close(out["sums"]["x"][1], torch.tensor([1.0, 2.0]))
        assert out["sums"]["arr"].tolist() == [2.0, 1.0] and float(out["sums"]["np"]) == 1.0
        assert out["any"] == (True, False)
        assert "No space left on device" in out["run_on_main"]
        assert out["run_on_main_ok"] == ("written" if r == 0 else None)
    assert spawned[1]["run_on_main"].startswith("RuntimeError: rank 0 failed")


# ---------------------------------------------------------------------------------------------- single process
@pytest.mark.parametrize("name", ["MGDA", "PCGrad", "GradVac", "CAGrad", "IMTL", "GradNorm", "GradDrop", "Nash_MTL"])
def test_gradient_methods_are_refused_with_the_reason(name):
    with pytest.raises(ValueError) as err:
        check_weighting_supports_ddp(name)
    msg = str(err.value)
    assert name in msg and "per-task" in msg and "RepMTL" in msg and "single process" in msg


def test_loss_weightings_and_classes_pass(weighting_subclasses):
    from libmtl_repmtl.libmtl.weighting import RepMTL

    for name in ["EW", "UW", "DWA", "GLS", "RLW", "RepMTL"]:
        check_weighting_supports_ddp(name)
    check_weighting_supports_ddp(RepMTL)

    check_weighting_supports_ddp(weighting_subclasses.MyEW)
    check_weighting_supports_ddp(weighting_subclasses.Declared)
    with pytest.raises(ValueError, match="MyMGDA"):
        check_weighting_supports_ddp(weighting_subclasses.MyMGDA)
    with pytest.raises(ValueError, match="ddp_compatible = True"):
        check_weighting_supports_ddp("SomethingNew")


def test_single_process_is_a_no_op():
    env = DistEnv()
    model = torch.nn.Linear(2, 2)
    assert wrap_model(model, env) is model
    assert reduce_sums({"a": 1.5}, env) == {"a": 1.5}
    assert run_on_main(env, lambda: 7) == 7
    with pytest.raises(ValueError, match="sync_bn"):
        wrap_model(model, env, sync_bn=True)


def test_samplers_partition_and_order_depends_on_seed_and_epoch():
    data = list(range(11))
    shards = [list(ShardSampler(11, r, 3)) for r in range(3)]
    assert sorted(i for s in shards for i in s) == data and [len(s) for s in shards] == [4, 4, 3]
    assert [len(ShardSampler(11, r, 3)) for r in range(3)] == [4, 4, 3]
    env = DistEnv(rank=1, world_size=2)
    s = make_sampler(data, env, shuffle=True, seed=3)
    s.set_epoch(0)
    first = list(s)
    s.set_epoch(1)
    assert list(s) != first and len(first) == 6
    s.set_epoch(0)
    assert list(s) == first
    with pytest.raises(ValueError, match="empty"):
        make_sampler([], env)


def test_init_from_env_without_torchrun_is_single_process(monkeypatch):
    from libmtl_repmtl.training.distributed import init_from_env

    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    env = init_from_env(device="cpu")
    assert (env.rank, env.world_size, env.is_main, env.distributed, env.backend) == (0, 1, True, False, None)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(RuntimeError, match="RANK"):
        init_from_env(device="cpu")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(RuntimeError, match="MASTER_ADDR"):
        init_from_env(device="cpu")
