"""The tiny two-task benchmark ``hostile`` (registered on import) that the hostile-input tests poison, and the
checks they share: a run fails with a clear error and leaves no partial file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from libmtl_repmtl.benchmarks import Benchmark, register
from libmtl_repmtl.libmtl.bases import AbsLoss, LibMTL
from libmtl_repmtl.tasks.losses import DepthLoss
from libmtl_repmtl.tasks.metrics import DepthMetric
from libmtl_repmtl.training import run_experiment
from tests._models import PooledLinearHead, TinyConvEncoder

TASKS = ("cls", "depth")


class Data(Dataset):
    """``x (3, 8, 8)``; ``cls`` = sign of channel 0's mean (2 classes), ``depth`` = ``(1, 8, 8)`` > 0.

    ``poison(item) -> item`` is applied from the ``poison_from``-th ``__getitem__`` call on (counting calls lets
    a test poison the second epoch of an unshuffled loader); ``x_channels`` / ``target`` alter every item."""

    def __init__(self, n: int, seed: int, poison: Any = None, poison_from: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 3, 8, 8, generator=g)
        self.cls = (self.x[:, 0].mean((1, 2)) > 0).long()
        self.depth = self.x[:, 1:2].abs() + 0.5
        self.poison, self.poison_from, self.calls = poison, poison_from, 0

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        item = (self.x[i].clone(), {"cls": self.cls[i].clone(), "depth": self.depth[i].clone()})
        self.calls += 1
        if self.poison is not None and self.calls > self.poison_from:
            item = self.poison(*item)
        return item


class _Diverging(AbsLoss):
    """A loss that is infinite from the ``at``-th batch on (a model that diverges on finite data)."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at, self.n = at, 0

    def compute_loss(self, pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        self.n += 1
        loss = nn.functional.cross_entropy(pred, gt)
        return loss * float("inf") if self.n > self.at else loss


def task_dict(tasks, opts):
    cls_loss = _Diverging(int(opts["diverge_at"])) if opts.get("diverge_at") is not None else LibMTL.loss.CELoss()
    d = {"cls": {"metrics": ["Acc"], "metrics_fn": LibMTL.metrics.AccMetric(), "loss_fn": cls_loss, "weight": [1]},
         "depth": {"metrics": ["abs_err", "rel_err"], "metrics_fn": DepthMetric(), "loss_fn": DepthLoss(),
                   "weight": [0, 0]}}
    return {t: d[t] for t in tasks}


def _loaders(tasks, opts):
    split = opts.get("poison_split", "train")
    ds = {s: Data(8 if s == "train" else 4, k, opts.get("poison") if s == split else None,
                   int(opts.get("poison_from", 0))) for k, s in enumerate(("train", "val", "test"))}
    if opts.get("empty"):
        ds[opts["empty"]] = Data(0, 9)
    return {"train": DataLoader(ds["train"], batch_size=4, drop_last=True),
            "val": DataLoader(ds["val"], batch_size=4), "test": DataLoader(ds["test"], batch_size=4)}


register(Benchmark(
    name="hostile", tasks=TASKS, multi_input=False, has_val=True, task_dict=task_dict, dataloaders=_loaders,
    encoder_class=lambda o: TinyConvEncoder,
    decoders=lambda tasks, o: nn.ModuleDict({"cls": PooledLinearHead(), "depth": nn.Conv2d(4, 1, 1)}),
    defaults={"epochs": 2, "train_bs": 4, "lr": 1e-2},
    options={"diverge_at": int, "poison": object, "poison_split": str, "poison_from": int, "empty": str}))


def run_hostile(save: Path, **kw: Any) -> dict[str, Any]:
    kw.setdefault("epochs", 2)
    return run_experiment("hostile", "EW", "HPS", None, save, device="cpu", verbose=False, progress=False,
                          baseline="none", **kw)


def no_partial_files(save: Path) -> dict[str, Any]:
    """Every file of the run is complete (results parse, checkpoints load), no temporary file is left;
    returns the results."""
    names = sorted(p.name for p in save.iterdir())
    assert not [n for n in names if n.startswith(".") or n.endswith(".tmp")], names
    for ck in ("best.pt", "last.pt"):
        if (save / ck).exists():
            assert "model" in torch.load(save / ck, weights_only=False)
    return json.loads((save / "results.json").read_text())


def failed(save: Path, match: str) -> dict[str, Any]:
    res = no_partial_files(save)
    assert res["status"] == "failed" and match in res["error"], res["error"]
    return res
