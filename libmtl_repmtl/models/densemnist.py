"""The DenseMNIST model: a small dilated CNN encoder with a spatial output and one dense head per task.

The layout of the NYUv2 model at CPU scale: the encoder keeps a spatial map (output stride 2 here, 8 for the
dilated ResNet-50), dilated convolutions widen its receptive field (32 x 32 input pixels, 36 x 36 with a
head; a digit is 16 x 16), each head predicts at the representation's resolution and the benchmark's ``process_preds``
bilinearly upsamples the predictions to the label size (and L2-normalises the normals), as for NYUv2.

Cost: about 3.8 M multiply-adds per 32 x 32 image with the three heads (the MultiMNIST model: 3.9 M), so a
training step costs about as much as a MultiMNIST step of the same batch size.

* :class:`DenseMNISTEncoder`: ``(B, 1, H, W) -> (B, channels, H/2, W/2)``.
* :class:`DenseHead`: ``(B, channels, h, w) -> (B, outputs, h, w)``.
* :func:`dense_heads`: one head per task.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn


class DenseMNISTEncoder(nn.Module):
    """Conv 3x3 (16 channels) + max-pool 2, then three 3x3 convs (``channels``) with dilations 1, 2, 4, ReLUs:
    ``(B, 1, H, W) -> (B, channels, H/2, W/2)`` (``H``, ``W`` even)."""

    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(16, channels, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=2, dilation=2), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=4, dilation=4), nn.ReLU(),
        )

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``(B, 1, H, W)`` -> ``(B, channels, H/2, W/2)``."""
        return self.net(x)


class DenseHead(nn.Module):
    """Conv 3x3 + ReLU + conv 1x1: ``(B, channels, h, w) -> (B, outputs, h, w)`` (logits / depth / raw normal)."""

    def __init__(self, outputs: int, channels: int = 16, hidden: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(inplace=True),
                                 nn.Conv2d(hidden, outputs, 1))

    def forward(self, z: Tensor) -> Tensor:
        """``z``: ``(B, channels, h, w)`` -> ``(B, outputs, h, w)``."""
        return self.net(z)


def dense_heads(outputs: Mapping[str, int], channels: int = 16) -> nn.ModuleDict:
    """One :class:`DenseHead` per task, ``outputs``: task -> output channels (e.g. 11 / 1 / 3)."""
    return nn.ModuleDict({t: DenseHead(int(n), channels) for t, n in outputs.items()})


__all__ = ["DenseHead", "DenseMNISTEncoder", "dense_heads"]
