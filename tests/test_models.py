"""Models built from torchvision parts: shapes, output stride, structure, heads, zero-argument factories."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from libmtl_repmtl.benchmarks.dense import dense_process_preds
from libmtl_repmtl.models import (
    DilatedResNetEncoder,
    OfficeEncoder,
    aspp_head,
    deeplab_heads,
    dense_encoder_factory,
    linear_heads,
    office_encoder_factory,
)


def test_tiny_dense_encoder_output_stride_8():
    enc = DilatedResNetEncoder("tiny")
    z = enc(torch.randn(2, 3, 32, 48))
    assert z.shape == (2, enc.out_channels, 4, 6)


def test_resnet50_encoder_is_dilated_torchvision_trunk():
    enc = DilatedResNetEncoder("resnet50")
    assert enc.out_channels == 2048
    assert not hasattr(enc, "fc") and not hasattr(enc, "avgpool")
    # stride replaced by dilation in layers 3 and 4 (torchvision's replace_stride_with_dilation=[F, T, T])
    assert enc.layer3[0].conv2.stride == (1, 1) and enc.layer4[0].conv2.stride == (1, 1)
    assert enc.layer4[1].conv2.dilation == (4, 4)
    with torch.no_grad():
        z = enc.eval()(torch.randn(1, 3, 32, 48))
    assert z.shape == (1, 2048, 4, 6)
    assert "layer4.2.conv3.weight" in enc.state_dict()


def test_deeplab_heads_shapes_and_torchvision_head():
    heads = deeplab_heads({"segmentation": 13, "depth": 1, "normal": 3}, "tiny")
    z = torch.randn(2, 64, 4, 6)
    assert {t: tuple(h(z).shape) for t, h in heads.items()} == {
        "segmentation": (2, 13, 4, 6), "depth": (2, 1, 4, 6), "normal": (2, 3, 4, 6)}
    from torchvision.models.segmentation.deeplabv3 import DeepLabHead

    assert isinstance(aspp_head(2048, 7), DeepLabHead)


def test_dense_process_preds_upsamples_and_normalises_normals():
    class T:
        input_size = (32, 48)

    fn = dense_process_preds(("normal",))
    preds = {"segmentation": torch.randn(2, 13, 4, 6), "normal": torch.randn(2, 3, 4, 6)}
    out = fn(T(), preds, None)
    assert out["segmentation"].shape == (2, 13, 32, 48)
    assert torch.allclose(out["normal"].norm(dim=1), torch.ones(2, 32, 48), atol=1e-5)
    assert fn(T(), torch.randn(2, 1, 4, 6), "depth").shape == (2, 1, 32, 48)


def test_office_encoder_and_heads():
    enc = OfficeEncoder("tiny")
    z = enc(torch.randn(3, 3, 32, 32))
    assert z.shape == (3, enc.out_features)
    assert isinstance(enc.hidden_layer[1], nn.BatchNorm1d) and isinstance(enc.hidden_layer[3], nn.Dropout)
    heads = linear_heads(["amazon", "dslr"], 31, "tiny")
    assert heads["dslr"](z).shape == (3, 31)
    full = OfficeEncoder("resnet18")
    assert full.out_features == 512 and full.hidden_layer[0].in_features == 512
    assert linear_heads(["a"], 65)["a"].in_features == 512


def test_factories_are_zero_argument_callables_building_fresh_modules():
    for factory in (dense_encoder_factory("tiny"), office_encoder_factory("tiny")):
        a, b = factory(), factory()
        assert isinstance(a, nn.Module) and a is not b


def test_unknown_variant_is_a_clear_error():
    with pytest.raises(ValueError, match="resnet50"):
        dense_encoder_factory("resnet101")
    with pytest.raises(ValueError, match="resnet18"):
        OfficeEncoder("vgg")
