"""Encoders and heads of the paper's benchmarks, built from torchvision parts.

Dense benchmarks (NYUv2, Cityscapes):

* :class:`DilatedResNetEncoder` -- torchvision ResNet-50 with ``replace_stride_with_dilation=[False, True,
  True]`` (output stride 8), avgpool/fc dropped: ``(B, 3, H, W) -> (B, 2048, H/8, W/8)``.
* :func:`aspp_head` -- torchvision's DeepLabV3 head (``ASPP`` rates 12/24/36 + 3x3 conv + 1x1 classifier):
  ``(B, C, h, w) -> (B, out, h, w)``. Predictions are upsampled to the label size by the trainer's
  ``process_preds`` (see :func:`libmtl_repmtl.benchmarks.dense.dense_process_preds`), as in LibMTL.

Office-31 / Office-Home:

* :class:`OfficeEncoder` -- ResNet-18 trunk -> global average pool -> Linear(512, 512) -> BN -> ReLU ->
  Dropout(0.5): ``(B, 3, H, W) -> (B, 512)``; one ``Linear(512, classes)`` head per domain
  (:func:`linear_heads`).

Each has a ``tiny`` variant with the same structure (Bottleneck / BasicBlock stages, dilation, ASPP, the
projection MLP) but one block per stage and a few channels, for fast CPU tests.

Encoder factories (:func:`dense_encoder_factory`, :func:`office_encoder_factory`) return zero-argument
callables, as LibMTL's ``encoder_class`` expects.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torchvision.models import resnet18, resnet50
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.models.segmentation.deeplabv3 import ASPP, DeepLabHead

from libmtl_repmtl.models.pretrained import apply_pretrained

#: Encoder variants: ``resnet50`` / ``resnet18`` (the paper's) and ``tiny`` (tests).
DENSE_VARIANTS = ("resnet50", "tiny")
OFFICE_VARIANTS = ("resnet18", "tiny")

#: ASPP width of the tiny dense variant (the full one uses torchvision's 256).
TINY_ASPP_CHANNELS = 16


def _tiny_trunk(block: type[nn.Module], widths: Sequence[int], dilate: Sequence[bool]) -> nn.Module:
    """A ResNet trunk with torchvision's module names (``conv1`` ... ``layer4``), one ``block`` per stage.

    Args:
        block: torchvision ``Bottleneck`` or ``BasicBlock``.
        widths: the 5 widths (stem, then the ``planes`` of stages 1-4); stage outputs are
            ``planes * block.expansion``.
        dilate: for stages 2-4, replace the stride by dilation (as torchvision's
            ``replace_stride_with_dilation``).
    """
    trunk = nn.Module()
    trunk.conv1 = nn.Conv2d(3, widths[0], 7, stride=2, padding=3, bias=False)
    trunk.bn1 = nn.BatchNorm2d(widths[0])
    trunk.relu = nn.ReLU(inplace=True)
    trunk.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
    inplanes, dilation = widths[0], 1
    for i, planes in enumerate(widths[1:], start=1):
        stride, prev_dilation = (1 if i == 1 else 2), dilation
        if i > 1 and dilate[i - 2]:
            dilation, stride = dilation * stride, 1
        out = planes * block.expansion  # type: ignore[attr-defined]
        down = None
        if stride != 1 or inplanes != out:
            down = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))
        setattr(trunk, f"layer{i}", nn.Sequential(block(inplanes, planes, stride, down, dilation=prev_dilation)))
        inplanes = out
    trunk.out_channels = inplanes  # type: ignore[assignment]
    _init_like_torchvision(trunk)
    return trunk


def _init_like_torchvision(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _run_trunk(trunk: nn.Module, x: Tensor) -> Tensor:
    x = trunk.maxpool(trunk.relu(trunk.bn1(trunk.conv1(x))))
    return trunk.layer4(trunk.layer3(trunk.layer2(trunk.layer1(x))))


class DilatedResNetEncoder(nn.Module):
    """Dilated ResNet trunk, output stride 8: ``(B, 3, H, W) -> (B, out_channels, ceil(H/8), ceil(W/8))``.

    Args:
        variant: ``resnet50`` (torchvision ResNet-50, ``out_channels = 2048``) or ``tiny`` (same stages with
            one Bottleneck each and few channels, ``out_channels = 64``).
        pretrained: ``imagenet``, ``none`` or a state dict path (see :mod:`libmtl_repmtl.models.pretrained`).

    The trunk's modules sit directly on the encoder (``conv1``, ``bn1``, ``layer1`` ... ``layer4``), so its
    state dict keys are torchvision's.
    """

    def __init__(self, variant: str = "resnet50", pretrained: str | None = "none") -> None:
        super().__init__()
        if variant == "resnet50":
            net = resnet50(weights=None, replace_stride_with_dilation=[False, True, True])
            out_channels = 2048
        elif variant == "tiny":
            net = _tiny_trunk(Bottleneck, (8, 4, 4, 8, 16), (False, True, True))
            out_channels = net.out_channels
        else:
            raise ValueError(f"unknown dense encoder variant {variant!r}; choose from {DENSE_VARIANTS}")
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            setattr(self, name, getattr(net, name))
        self.variant = variant
        self.out_channels = int(out_channels)
        self.pretrained_source = apply_pretrained(self, pretrained, variant)

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``(B, 3, H, W)`` -> ``(B, out_channels, H', W')`` with ``H' = ceil(H / 8)``."""
        return _run_trunk(self, x)


class OfficeEncoder(nn.Module):
    """ResNet-18 trunk -> global average pool -> Linear -> BatchNorm1d -> ReLU -> Dropout(0.5).

    ``(B, 3, H, W) -> (B, out_features)``; ``out_features = 512`` (``resnet18``) or 32 (``tiny``).

    Args:
        variant: ``resnet18`` or ``tiny`` (one BasicBlock per stage, few channels).
        pretrained: initialisation of the trunk (``imagenet``, ``none`` or a path); the MLP is always fresh.
    """

    def __init__(self, variant: str = "resnet18", pretrained: str | None = "none") -> None:
        super().__init__()
        if variant == "resnet18":
            trunk = resnet18(weights=None)
            del trunk.fc, trunk.avgpool
            trunk_out, hidden = 512, 512
        elif variant == "tiny":
            trunk = _tiny_trunk(BasicBlock, (8, 8, 16, 16, 32), (False, False, False))
            trunk_out, hidden = trunk.out_channels, 32
        else:
            raise ValueError(f"unknown office encoder variant {variant!r}; choose from {OFFICE_VARIANTS}")
        self.backbone = trunk
        self.pretrained_source = apply_pretrained(trunk, pretrained, variant)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.hidden_layer = nn.Sequential(nn.Linear(trunk_out, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                                          nn.Dropout(0.5))
        for m in self.hidden_layer:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.005)
                nn.init.zeros_(m.bias)
        self.variant = variant
        self.out_features = int(hidden)

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``(B, 3, H, W)`` -> ``(B, out_features)``."""
        return self.hidden_layer(torch.flatten(self.avgpool(_run_trunk(self.backbone, x)), 1))


def aspp_head(in_channels: int, out_channels: int, width: int = 256,
              atrous_rates: Sequence[int] = (12, 24, 36)) -> nn.Module:
    """DeepLabV3 head: ``(B, in_channels, h, w) -> (B, out_channels, h, w)``.

    ``width = 256`` is torchvision's ``DeepLabHead`` itself; another width builds the same layers
    (``ASPP`` -> 3x3 conv -> BN -> ReLU -> 1x1 conv) narrower.
    """
    if width == 256:
        return DeepLabHead(in_channels, out_channels, atrous_rates)
    return nn.Sequential(ASPP(in_channels, atrous_rates, out_channels=width),
                         nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.Conv2d(width, out_channels, 1))


def dense_encoder_factory(variant: str = "resnet50", pretrained: str | None = "none") -> Callable[[], nn.Module]:
    """Zero-argument callable building a :class:`DilatedResNetEncoder` (LibMTL's ``encoder_class``)."""
    if variant not in DENSE_VARIANTS:
        raise ValueError(f"unknown dense encoder variant {variant!r}; choose from {DENSE_VARIANTS}")
    return functools.partial(DilatedResNetEncoder, variant, pretrained)


def office_encoder_factory(variant: str = "resnet18", pretrained: str | None = "none") -> Callable[[], nn.Module]:
    """Zero-argument callable building an :class:`OfficeEncoder` (LibMTL's ``encoder_class``)."""
    if variant not in OFFICE_VARIANTS:
        raise ValueError(f"unknown office encoder variant {variant!r}; choose from {OFFICE_VARIANTS}")
    return functools.partial(OfficeEncoder, variant, pretrained)


def dense_channels(variant: str) -> int:
    """Channels of the dense encoder's output for ``variant`` (2048 for ``resnet50``)."""
    return 2048 if variant == "resnet50" else 64


def deeplab_heads(outputs: dict[str, int], variant: str = "resnet50") -> nn.ModuleDict:
    """One DeepLabV3 head per task (``outputs``: task -> output channels, e.g. ``{"segmentation": 13}``)."""
    width = 256 if variant == "resnet50" else TINY_ASPP_CHANNELS
    return nn.ModuleDict({t: aspp_head(dense_channels(variant), n, width) for t, n in outputs.items()})


def office_features(variant: str) -> int:
    """Width of the Office encoder's output for ``variant`` (512 for ``resnet18``)."""
    return 512 if variant == "resnet18" else 32


def linear_heads(tasks: Sequence[str], classes: int, variant: str = "resnet18") -> nn.ModuleDict:
    """One ``Linear(features, classes)`` head per task (domain)."""
    return nn.ModuleDict({t: nn.Linear(office_features(variant), classes) for t in tasks})


__all__ = ["DENSE_VARIANTS", "OFFICE_VARIANTS", "DilatedResNetEncoder", "OfficeEncoder", "aspp_head",
           "deeplab_heads", "dense_channels", "dense_encoder_factory", "linear_heads", "office_encoder_factory",
           "office_features"]
