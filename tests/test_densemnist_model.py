"""The DenseMNIST model: shapes, receptive field, cost."""

from __future__ import annotations

import torch
from torch import nn

from libmtl_repmtl.models.densemnist import DenseMNISTEncoder, dense_heads

OUTPUTS = {"segmentation": 11, "depth": 1, "normal": 3}


def test_shapes() -> None:
    enc, heads = DenseMNISTEncoder(), dense_heads(OUTPUTS)
    z = enc(torch.randn(2, 1, 32, 32))
    assert z.shape == (2, 16, 16, 16)
    assert {t: tuple(h(z).shape) for t, h in heads.items()} == {t: (2, n, 16, 16) for t, n in OUTPUTS.items()}
    assert DenseMNISTEncoder(channels=8)(torch.randn(1, 1, 24, 40)).shape == (1, 8, 12, 20)


def test_receptive_field_is_32_pixels() -> None:
    # one representation position depends on exactly a 32 x 32 input window: 3 (conv) + 1 (pool) + 4 + 8 + 16
    torch.manual_seed(0)
    enc = DenseMNISTEncoder()
    for m in enc.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.constant_(m.weight, 0.1)
            nn.init.constant_(m.bias, 1.0)  # every ReLU open: the dependence pattern is the receptive field
    enc.net[2] = nn.AvgPool2d(2)  # same geometry as the max-pool, but the gradient reaches every pixel
    x = torch.zeros(1, 1, 96, 96, requires_grad=True)
    enc(x)[0, :, 24, 24].sum().backward()
    rows, cols = torch.nonzero(x.grad[0, 0], as_tuple=True)
    assert int(rows.max() - rows.min()) + 1 == 32 and int(cols.max() - cols.min()) + 1 == 32


def test_cost_matches_the_docstring() -> None:
    macs = 0

    def count(module: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal macs
        k = module.kernel_size[0] * module.kernel_size[1]
        macs += out[0].numel() * module.in_channels // module.groups * k

    enc, heads = DenseMNISTEncoder(), dense_heads(OUTPUTS)
    for m in [*enc.modules(), *heads.modules()]:
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(count)
    z = enc(torch.randn(1, 1, 32, 32))
    for h in heads.values():
        h(z)
    assert 3.7e6 < macs < 3.9e6  # "about 3.8 M multiply-adds per 32 x 32 image with the three heads"
