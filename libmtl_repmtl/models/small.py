"""Small CNNs for the CPU benchmarks (MultiMNIST and digit domains).

* :class:`MultiMNISTEncoder`: ``(B, 1, 36, 36) -> (B, C, 9, 9)`` -- a *spatial* shared representation, so
  Rep-MTL's dense (per-position) TSR and CSA paths are exercised.
* :class:`MultiMNISTHead`: ``(B, C, H', W') -> (B, 10)`` (conv + global average pool + linear).
* :class:`DigitEncoder`: ``(B, 1, 28, 28) -> (B, D)`` pooled vector (Office-style shared encoder).
* :func:`linear_heads`: one ``Linear(D, 10)`` per domain.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


class MultiMNISTEncoder(nn.Module):
    """Three 3x3 conv layers with two 2x2 max-pools: ``(B, 1, H, W) -> (B, channels, H/4, W/4)``."""

    def __init__(self, channels: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(16, channels, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
        )

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``(B, 1, H, W)`` -> ``(B, channels, H/4, W/4)``."""
        return self.net(x)


class MultiMNISTHead(nn.Module):
    """Conv 3x3 + ReLU + global average pool + linear: ``(B, C, H', W') -> (B, classes)``."""

    def __init__(self, channels: int = 32, hidden: int = 32, classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(hidden, classes)

    def forward(self, z: Tensor) -> Tensor:
        """``z``: ``(B, C, H', W')`` -> logits ``(B, classes)``."""
        return self.fc(self.pool(self.conv(z)).flatten(1))


class DigitEncoder(nn.Module):
    """Two conv blocks, global average pool and a linear layer: ``(B, 1, 28, 28) -> (B, dim)``."""

    def __init__(self, dim: int = 64) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        self.fc = nn.Sequential(nn.Linear(32 * 7 * 7, dim), nn.ReLU())

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``(B, 1, 28, 28)`` -> ``(B, dim)``."""
        return self.fc(self.features(x).flatten(1))


def multimnist_heads(tasks: Sequence[str], channels: int = 32) -> nn.ModuleDict:
    """One :class:`MultiMNISTHead` per task."""
    return nn.ModuleDict({t: MultiMNISTHead(channels) for t in tasks})


def linear_heads(tasks: Sequence[str], dim: int = 64, classes: int = 10) -> nn.ModuleDict:
    """One ``Linear(dim, classes)`` per task (domain)."""
    return nn.ModuleDict({t: nn.Linear(dim, classes) for t in tasks})


__all__ = ["DigitEncoder", "MultiMNISTEncoder", "MultiMNISTHead", "linear_heads", "multimnist_heads"]
