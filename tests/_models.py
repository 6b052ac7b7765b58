"""Small models shared by the tests: float64 models and a LibMTL-style builder for the method tests, and tiny
convolutional classifiers for the trainer tests."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from libmtl_repmtl.libmtl.bases import LibMTL

DT = torch.float64


class DenseEncoder(nn.Module):
    """``(B, 3, H, W) -> (B, C, H, W)``."""

    def __init__(self, channels: int = 5) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.Tanh(), nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class VectorEncoder(nn.Module):
    """``(B, 6) -> (B, C)`` (a pooled-classifier-like representation)."""

    def __init__(self, channels: int = 5) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, channels), nn.Tanh(), nn.Linear(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)



class TinyConvEncoder(nn.Module):
    """``(B, 3, H, W) -> (B, width, H, W)``: Conv3x3 [+ BatchNorm] + ReLU [+ Conv3x3] (``depth`` 1 or 2)."""

    def __init__(self, width: int = 4, depth: int = 1, batch_norm: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1)]
        if batch_norm:
            layers.append(nn.BatchNorm2d(width))
        layers.append(nn.ReLU())
        if depth == 2:
            layers.append(nn.Conv2d(width, width, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PooledLinearHead(nn.Module):
    """``(B, width, H, W) -> (B, classes)``: spatial mean, then a linear layer."""

    def __init__(self, width: int = 4, classes: int = 2) -> None:
        super().__init__()
        self.fc = nn.Linear(width, classes)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.fc(z.mean((2, 3)))


def acc_ce_task_dict(tasks: list[str] | tuple[str, ...], opts: object = None) -> dict[str, dict[str, object]]:
    """LibMTL task dict: accuracy metric and cross-entropy loss for every task (a registry ``task_dict``)."""
    return {t: {"metrics": ["Acc"], "metrics_fn": LibMTL.metrics.AccMetric(), "loss_fn": LibMTL.loss.CELoss(),
                "weight": [1]} for t in tasks}

def make_heads(tasks: list[str], dense: bool, channels: int = 5) -> nn.ModuleDict:
    if dense:
        return nn.ModuleDict({t: nn.Sequential(nn.Conv2d(channels, 4, 1), nn.Tanh(), nn.Conv2d(4, 2, 1))
                              for t in tasks})
    return nn.ModuleDict({t: nn.Sequential(nn.Linear(channels, 4), nn.Tanh(), nn.Linear(4, 2)) for t in tasks})


def task_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pred - target).pow(2).mean()


def build_model(arch: type, weighting: type, tasks: list[str], dense: bool, multi_input: bool,
                rep_grad: bool, channels: int = 5, dtype: torch.dtype = DT,
                device: torch.device | str = "cpu") -> nn.Module:
    """Compose ``class MTLmodel(arch, weighting)`` exactly as LibMTL's Trainer does, on ``device``."""
    device = torch.device(device)

    class MTLmodel(arch, weighting):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            encoder = DenseEncoder if dense else VectorEncoder
            super().__init__(tasks, lambda: encoder(channels), make_heads(tasks, dense, channels), rep_grad,
                             multi_input, device)
            self.init_param()

    return MTLmodel().to(dtype).to(device)


def make_batch(tasks: list[str], dense: bool, multi_input: bool, batch: int | list[int],
               seed: int = 0, dtype: torch.dtype = DT,
               device: torch.device | str = "cpu") -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Inputs (one, or one per task) and per-task targets (drawn on the CPU, then moved to ``device``)."""
    g = torch.Generator().manual_seed(seed)
    sizes = batch if isinstance(batch, list) else [batch] * len(tasks)

    def x(b: int) -> torch.Tensor:
        shape = (b, 3, 4, 5) if dense else (b, 6)
        return torch.randn(*shape, generator=g, dtype=dtype).to(device)

    inputs = [x(b) for b in sizes] if multi_input else [x(sizes[0])]
    targets = []
    for t in range(len(tasks)):
        b = sizes[t] if multi_input else sizes[0]
        shape = (b, 2, 4, 5) if dense else (b, 2)
        targets.append(torch.randn(*shape, generator=g, dtype=dtype).to(device))
    return inputs, targets


def forward_losses(model: nn.Module, tasks: list[str], inputs: list[torch.Tensor],
                   targets: list[torch.Tensor], multi_input: bool) -> torch.Tensor:
    """Forward pass and ``(T,)`` loss tensor, the way LibMTL's Trainer builds them."""
    losses = torch.zeros(len(tasks), dtype=inputs[0].dtype, device=inputs[0].device)
    if multi_input:
        for tn, task in enumerate(tasks):
            losses[tn] = task_loss(model(inputs[tn], task)[task], targets[tn])
    else:
        preds = model(inputs[0])
        for tn, task in enumerate(tasks):
            losses[tn] = task_loss(preds[task], targets[tn])
    return losses


HPS = LibMTL.architecture.HPS


class SignDataset(Dataset):
    """``x (3, 8, 8)``; task ``tasks[i]``'s label is the sign of channel ``i``'s mean."""

    def __init__(self, n: int, seed: int, tasks: tuple[str, ...] = ("a", "b")) -> None:
        self.x = torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
        self.tasks = tasks

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], {t: (self.x[i, k].mean() > 0).long() for k, t in enumerate(self.tasks)}
