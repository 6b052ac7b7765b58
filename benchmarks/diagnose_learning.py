"""Why does Rep-MTL stall on the CPU MultiMNIST benchmark? Short training runs with per-step diagnostics.

Trains the CPU suite's MultiMNIST model (``MultiMNISTEncoder`` -> ``(B, 32, 9, 9)``, two conv heads; Adam
lr 1e-3, weight decay 1e-5, batch 64, the data of ``--suite cpu``: 3,000 training images, 47 steps per epoch)
for ``--steps`` steps under one or more Rep-MTL settings, and every ``--log-every`` steps records:

* the task losses ``L_t``, ``L_tsr``, ``L_csa``, the Frobenius norm of each saliency ``S_t``;
* the gradient norms of the three parts of ``L`` (``sum_t l_t``, ``lambda_tsr L_tsr``, ``lambda_csa L_csa``)
  separately, on the encoder and on the heads, and the cosine of the task-objective gradient with the total;
* how concentrated the TSR gradient is on low-saliency positions: the share of ``||dL_tsr/ds||^2`` (``s`` =
  the channel-mean saliencies) on the 10% of positions with the smallest ``sum_t |s_t|``, and the fraction of
  positions where one task's share ``P`` is below 1e-2;
* dead units: the fraction of head-conv ReLUs and encoder-output channels that are zero on the whole batch.

The training step itself is ``core.objective.repmtl_backward`` (what the ``RepMTL`` weighting runs); on logged
steps the three parts are differentiated separately and their sum is checked against it (``err``).

Settings are ``name:key=value,...`` with keys ``tsr``, ``csa``, ``tau``, ``log`` (0/1) of
:class:`RepMTLConfig`, and three what-ifs that are NOT library options (and not the spec): ``warm=K`` (ramp both
lambdas linearly from 0 over the first K steps), ``floor=f`` (TSR with ``P = (|s_t| + d) / (sum_k |s_k| + T d)``,
``d = f * max_i sum_k |s_k[i]|`` detached, which flattens the ill-conditioned near-zero-saliency positions) and
``headreg=0`` (the regularisers' gradient is removed from the heads: only the encoder is regularised; the
logged gradient norms and ``err`` are still those of the spec's step).
``default`` alone means the project's defaults. Example (about 1 min per setting on 2 cores):

    OMP_NUM_THREADS=2 PYTHONPATH=. python benchmarks/diagnose_learning.py --steps 300 --log-every 50 \
        --settings default EW:tsr=0,csa=0 tsr:csa=0 csa:tsr=0 --json /tmp/diag.json

Prints one line per logged step and a final table (train-batch accuracy over the last 50 steps, validation
accuracy at the end). Results and the commands behind ``docs/method.md`` ("Behaviour on small CPU
benchmarks") come from this script.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
import time
from typing import Any

import torch
import torch.nn.functional as F

import libmtl_repmtl.core.tsr as tsr_mod
from libmtl_repmtl.benchmarks import get
from libmtl_repmtl.core.config import RepMTLConfig
from libmtl_repmtl.core.csa import csa_loss
from libmtl_repmtl.core.objective import regularised_objective, repmtl_backward
from libmtl_repmtl.core.saliency import stack_saliencies, task_objectives, task_saliencies
from libmtl_repmtl.core.tsr import tsr_loss
from libmtl_repmtl.libmtl.capabilities import resolve_architecture, resolve_weighting
from libmtl_repmtl.models.small import MultiMNISTEncoder, multimnist_heads
from libmtl_repmtl.training.experiment import arch_args_for, weight_args_for
from libmtl_repmtl.training.io import atomic_write_json
from libmtl_repmtl.training.model import compose_model

TASKS = ("left", "right")
KEYS = {"tsr": "lambda_tsr", "csa": "lambda_csa", "tau": "tau", "log": "log_loss"}
EXTRA = {"floor", "warm", "headreg"}


def parse_setting(text: str) -> tuple[str, RepMTLConfig, dict[str, float]]:
    """``name:key=value,...`` -> (name, config, extra); ``default`` alone is the project's defaults."""
    name, _, rest = text.partition(":")
    values: dict[str, Any] = {}
    extra: dict[str, float] = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        key = key.strip()
        if key in EXTRA:
            extra[key] = float(value)
            continue
        field = KEYS[key]
        values[field] = bool(int(value)) if field == "log_loss" else float(value)
    return name, RepMTLConfig(**values), extra


def _norm(grads: list[torch.Tensor | None]) -> float:
    return float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads if g is not None)))


def _flat(grads: list[torch.Tensor | None], params: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params)])


def _component_grads(part: torch.Tensor, z: torch.Tensor, copies: list[torch.Tensor],
                     enc: list[torch.Tensor], heads: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat gradients of ``part`` w.r.t. the encoder and the heads (through the copies into the encoder)."""
    if not part.requires_grad:
        return torch.zeros(sum(p.numel() for p in enc)), torch.zeros(sum(p.numel() for p in heads))
    g = torch.autograd.grad(part, heads + copies, retain_graph=True, allow_unused=True)
    g_heads, g_copies = list(g[: len(heads)]), [x for x in g[len(heads):] if x is not None]
    g_enc: list[torch.Tensor | None] = [None] * len(enc)
    if g_copies:
        g_enc = list(torch.autograd.grad(z, enc, grad_outputs=sum(g_copies), retain_graph=True, allow_unused=True))
    return _flat(g_enc, enc), _flat(g_heads, heads)


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    na, nb = a.norm(), b.norm()
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else 0.0


def run(name: str, cfg0: RepMTLConfig, extra: dict[str, float], args: argparse.Namespace,
        data: dict[str, Any]) -> dict[str, Any]:
    """Train one setting; returns its summary and the logged records."""
    orig = tsr_mod.task_distribution
    floor = extra.get("floor", 0.0)
    if floor > 0:
        def floored(stacked: torch.Tensor, channel_mean: str = "signed") -> torch.Tensor:
            mag = tsr_mod.channel_magnitudes(stacked, channel_mean)
            delta = floor * mag.detach().sum(0).amax()
            return (mag + delta) / (mag.sum(dim=0, keepdim=True) + mag.shape[0] * delta)
        tsr_mod.task_distribution = floored
    try:
        return _run(name, cfg0, extra, args, data)
    finally:
        tsr_mod.task_distribution = orig


def _run(name: str, cfg0: RepMTLConfig, extra: dict[str, float], args: argparse.Namespace,
         data: dict[str, Any]) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    encoder, heads = MultiMNISTEncoder(), multimnist_heads(TASKS)
    enc_params, head_params = list(encoder.parameters()), list(heads.parameters())
    optim = torch.optim.Adam(enc_params + head_params, lr=args.lr, weight_decay=args.weight_decay)
    hidden: dict[str, torch.Tensor] = {}
    for t in TASKS:
        heads[t].conv.register_forward_hook(lambda m, i, o, t=t: hidden.__setitem__(t, o.detach()))
    loader = data["train"]
    records, accs = [], []
    step, t0 = 0, time.perf_counter()
    while step < args.steps:
        for x, y in loader:
            if step >= args.steps:
                break
            z = encoder(x)
            copies = [z.detach().requires_grad_() for _ in TASKS]
            preds = {t: heads[t](c) for t, c in zip(TASKS, copies)}
            losses = torch.stack([F.cross_entropy(preds[t], y[t]) for t in TASKS])
            accs.append([float((preds[t].argmax(1) == y[t]).float().mean()) for t in TASKS])
            ramp = min(1.0, step / extra["warm"]) if extra.get("warm") else 1.0
            cfg = dataclasses.replace(cfg0, lambda_tsr=cfg0.lambda_tsr * ramp, lambda_csa=cfg0.lambda_csa * ramp)
            log = step % args.log_every == 0 or step == args.steps - 1
            optim.zero_grad(set_to_none=False)
            if log:
                rec = diagnose(cfg, losses, z, copies, enc_params, head_params, hidden)
                rec.update(step=step, acc=accs[-1])
                # the training step is repmtl_backward's; check it against the sum of the parts
                full = torch.cat([p.grad.reshape(-1) for p in enc_params + head_params]).clone()
                rebuilt = torch.cat([rec.pop("_enc"), rec.pop("_heads")])
                rec["parts_sum_rel_err"] = float((full - rebuilt).norm() / full.norm().clamp_min(1e-30))
                records.append(rec)
                print(f"[{name}] step {step:4d} L={[round(v, 3) for v in rec['losses']]} "
                      f"tsr={rec['L_tsr']:.3f} csa={rec['L_csa']:.3f} "
                      f"|S_t|={'/'.join(f'{v:.1e}' for v in rec['sal_norms'])} "
                      f"|g| enc task/tsr/csa={rec['enc']['task']:.2e}/{rec['enc']['tsr']:.2e}/"
                      f"{rec['enc']['csa']:.2e} heads={rec['heads']['task']:.2e}/{rec['heads']['tsr']:.2e}/"
                      f"{rec['heads']['csa']:.2e} cos(task,total) enc/heads={rec['cos_enc']:.2f}/"
                      f"{rec['cos_heads']:.2f} lowsal10%share={rec['tsr_grad_share_low10']:.2f} "
                      f"deadhead={rec['dead_head']:.2f} deadenc={rec['dead_enc_channels']:.2f} "
                      f"err={rec['parts_sum_rel_err']:.1e}", flush=True)
            else:
                repmtl_backward(losses, [z] * len(TASKS), copies, cfg)
            if extra.get("headreg", 1.0) == 0 and cfg.needs_saliency_graph:
                _drop_head_regulariser_gradient(cfg, z, y, heads, head_params)
            optim.step()
            step += 1
    tail = torch.tensor(accs[-50:]).mean(0).tolist()
    val = evaluate(encoder, heads, data["val"])
    out = {"name": name, "config": cfg0.__dict__, "extra": extra, "train_acc_last50": tail, "val_acc": val,
           "seconds": time.perf_counter() - t0, "log": records}
    print(f"[{name}] done: train acc (last 50 steps) {[round(a, 3) for a in tail]}, val acc "
          f"{[round(a, 3) for a in val]}, {out['seconds']:.0f} s", flush=True)
    return out


def _drop_head_regulariser_gradient(cfg: RepMTLConfig, z: torch.Tensor, y: dict[str, torch.Tensor],
                                    heads: torch.nn.ModuleDict, head_params: list[torch.Tensor]) -> None:
    """What-if ``headreg=0``: remove ``d(lambda_tsr L_tsr + lambda_csa L_csa)/d(heads)`` from the heads' ``.grad``."""
    copies = [z.detach().requires_grad_() for _ in TASKS]
    losses = torch.stack([F.cross_entropy(heads[t](c), y[t]) for t, c in zip(TASKS, copies)])
    terms = regularised_objective(losses, copies, cfg)
    reg = terms.total - terms.objectives.sum()
    for p, g in zip(head_params, torch.autograd.grad(reg, head_params, allow_unused=True)):
        if g is not None:
            p.grad.sub_(g)


def diagnose(cfg: RepMTLConfig, losses: torch.Tensor, z: torch.Tensor, copies: list[torch.Tensor],
             enc: list[torch.Tensor], heads: list[torch.Tensor], hidden: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Diagnostics of one step; also accumulates the step's gradient into ``.grad`` (repmtl_backward)."""
    objectives = task_objectives(losses, cfg.log_loss)
    sal = task_saliencies(objectives, copies, create_graph=True)
    stacked = stack_saliencies(sal)
    tsr = tsr_loss(stacked)
    csa = csa_loss(stacked, cfg.tau) if stacked.shape[1] > 1 else stacked.sum() * 0.0
    parts = {"task": objectives.sum(), "tsr": cfg.lambda_tsr * tsr, "csa": cfg.lambda_csa * csa}
    grads = {k: _component_grads(v, z, copies, enc, heads) for k, v in parts.items()
             if k == "task" or getattr(cfg, "lambda_" + k) > 0}
    zeros = (torch.zeros(sum(p.numel() for p in enc)), torch.zeros(sum(p.numel() for p in heads)))
    for k in ("tsr", "csa"):
        grads.setdefault(k, zeros)
    total_enc = sum(g[0] for g in grads.values())
    total_heads = sum(g[1] for g in grads.values())
    # TSR gradient w.r.t. the channel means, and its share on the 10% lowest-saliency positions
    ch = stacked.detach().mean(dim=2).requires_grad_()  # (T, B, N) channel means
    h = tsr_loss(ch.unsqueeze(2))
    g_s = torch.autograd.grad(h, ch)[0]
    mass = ch.detach().abs().sum(0).reshape(-1)
    gpos = (g_s ** 2).sum(0).reshape(-1)
    k = max(1, mass.numel() // 10)
    low = torch.topk(mass, k, largest=False).indices
    share = float(gpos[low].sum() / gpos.sum()) if gpos.sum() > 0 else 0.0
    pmin = (ch.detach().abs() / mass.reshape(ch.shape[1:]).clamp_min(1e-300)).amin(0)
    rec = {
        "losses": losses.tolist(), "L_tsr": float(tsr.detach()), "L_csa": float(csa.detach()),
        "sal_norm": float(stacked.detach().norm()), "sal_norms": [float(x.detach().norm()) for x in sal],
        "enc": {k: float(v[0].norm()) for k, v in grads.items()},
        "heads": {k: float(v[1].norm()) for k, v in grads.items()},
        "cos_enc": _cos(grads["task"][0], total_enc), "cos_heads": _cos(grads["task"][1], total_heads),
        "tsr_grad_share_low10": share,
        "mass_ratio_p10_to_max": float(mass.sort().values[k] / mass.max()),
        "frac_pmin_below_1e-2": float((pmin < 1e-2).float().mean()),
        "dead_head": float(sum((hidden[t] <= 0).all(0).float().mean() for t in TASKS) / len(TASKS)),
        "dead_enc_channels": float((z.detach() <= 0).all(dim=(0, 2, 3)).float().mean()),
        "_enc": total_enc, "_heads": total_heads,
    }
    repmtl_backward(losses, [z] * len(TASKS), copies, cfg)
    return rec


def _options(batch_size: int, seed: int, **sizes: int) -> dict[str, Any]:
    """The MultiMNIST benchmark's loader options: its defaults with this batch size, seed and data sizes."""
    return {**get("multimnist").defaults, "train_bs": batch_size, "test_bs": batch_size, "seed": seed, **sizes}


def checks(seed: int = 0, batch_size: int = 64) -> dict[str, Any]:
    """Two sanity checks on one training batch of the real benchmark, at initialisation.

    * ``wiring``: the gradient the harness's model (``RepHPS`` + the ``RepMTL`` weighting, LibMTL's
      ``model.backward(losses, **weight_args)``) accumulates, against ``repmtl_backward`` on the same batch and
      weights: the largest relative difference over the parameter tensors.
    * ``fp32_vs_fp64``: the relative difference between the float32 and float64 parameter gradients of the
      default objective (and of TSR / CSA alone).
    """
    torch.manual_seed(seed)
    bench = get("multimnist")
    tasks = list(bench.tasks)
    opts = _options(batch_size, seed)
    x, y = next(iter(bench.dataloaders(tasks, opts)["train"]))
    weighting, architecture = resolve_weighting("RepMTL"), resolve_architecture("RepHPS")
    # the trainer's model, composed as MTLTrainer composes it
    model = compose_model(weighting, architecture, bench.encoder_class(opts), bench.decoders(tasks, opts), tasks,
                          rep_grad=False, multi_input=bench.multi_input, device=torch.device("cpu"),
                          arch_args=arch_args_for(architecture))
    preds = model(x)
    model.backward(torch.stack([F.cross_entropy(preds[t], y[t]) for t in tasks]), **weight_args_for(weighting))
    via_weighting = [p.grad.clone() for p in model.parameters()]

    def direct(enc: torch.nn.Module, heads: torch.nn.ModuleDict, dtype: torch.dtype,
               cfg: RepMTLConfig) -> list[torch.Tensor]:
        params = list(enc.parameters()) + list(heads.parameters())
        for p in params:
            p.grad = None
        z = enc(x.to(dtype))
        copies = [z.detach().requires_grad_() for _ in tasks]
        losses = torch.stack([F.cross_entropy(heads[t](c), y[t]) for t, c in zip(tasks, copies)])
        repmtl_backward(losses, [z] * len(tasks), copies, cfg)
        return [p.grad.double() for p in params]

    ref = direct(model.encoder, model.decoders, torch.float32, RepMTLConfig())
    # model.parameters() lists decoders first, then the encoder
    order = list(model.decoders.parameters()) + list(model.encoder.parameters())
    n_enc = len(list(model.encoder.parameters()))
    ref_by_param = ref[n_enc:] + ref[:n_enc]
    assert [p.shape for p in order] == [g.shape for g in ref_by_param]
    wiring = max(float((a.double() - b).norm() / b.norm().clamp_min(1e-30))
                 for a, b in zip(via_weighting, ref_by_param))
    out: dict[str, Any] = {"wiring_max_rel_diff": wiring, "fp32_vs_fp64": {}}
    for name, cfg in (("default", RepMTLConfig()), ("tsr_only", RepMTLConfig(lambda_csa=0)),
                      ("csa_only", RepMTLConfig(lambda_tsr=0))):
        g32 = torch.cat([g.reshape(-1) for g in direct(model.encoder, model.decoders, torch.float32, cfg)])
        e64, h64 = copy.deepcopy(model.encoder).double(), copy.deepcopy(model.decoders).double()
        g64 = torch.cat([g.reshape(-1) for g in direct(e64, h64, torch.float64, cfg)])
        out["fp32_vs_fp64"][name] = float((g32 - g64).norm() / g64.norm())
    print(f"checks: runner/weighting gradient vs repmtl_backward: max relative difference {wiring:.1e}; "
          f"float32 vs float64 parameter gradient: " +
          ", ".join(f"{k} {v:.1e}" for k, v in out["fp32_vs_fp64"].items()), flush=True)
    return out


@torch.no_grad()
def evaluate(encoder: torch.nn.Module, heads: torch.nn.ModuleDict, loader: Any) -> list[float]:
    correct, total = [0, 0], 0
    for x, y in loader:
        z = encoder(x)
        for i, t in enumerate(TASKS):
            correct[i] += int((heads[t](z).argmax(1) == y[t]).sum())
        total += x.shape[0]
    return [c / total for c in correct]


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--settings", nargs="+", default=["default", "EW:tsr=0,csa=0"])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--n-train", type=int, default=3000)
    parser.add_argument("--n-val", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--checks", action="store_true",
                        help="only run the wiring and float32/float64 checks (see checks())")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.checks:
        return [checks(args.seed, args.batch_size)]
    results = []
    for text in args.settings:
        # fresh loaders per setting: every setting sees the same batches in the same order
        data = get("multimnist").dataloaders(TASKS, _options(args.batch_size, args.seed, n_train=args.n_train,
                                                              n_val=args.n_val, n_test=args.n_val))
        results.append(run(*parse_setting(text), args, data))
    print("\n| setting | train acc left/right (last 50 steps) | val acc left/right |")
    print("|---|---|---|")
    for r in results:
        print(f"| {r['name']} | {r['train_acc_last50'][0]:.3f} / {r['train_acc_last50'][1]:.3f} | "
              f"{r['val_acc'][0]:.3f} / {r['val_acc'][1]:.3f} |")
    if args.json:
        atomic_write_json(args.json, {"argv": sys.argv, "results": results})
    return results


if __name__ == "__main__":
    main()
