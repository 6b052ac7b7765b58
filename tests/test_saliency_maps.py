"""Saliency maps and the TSR entropy map: values against plain autograd, ranges, PNG output, command."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from libmtl_repmtl.analysis.saliency_maps import compute_saliency_maps, main, saliency_figure, save_saliency_grid
from libmtl_repmtl.models.small import MultiMNISTEncoder, multimnist_heads


class HalfHead(nn.Module):
    """Reads only the left (``side=0``) or right (``side=1``) half of the representation."""

    def __init__(self, channels: int, side: int) -> None:
        super().__init__()
        self.side = side
        self.fc = nn.Linear(channels, 3)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        w = z.shape[-1] // 2
        part = z[..., :w] if self.side == 0 else z[..., w:]
        return self.fc(part.mean(dim=(2, 3)))


def test_maps_match_autograd_and_entropy_is_bounded() -> None:
    torch.manual_seed(0)
    enc = nn.Conv2d(1, 4, 3, padding=1)
    heads = nn.ModuleDict({"a": HalfHead(4, 0), "b": HalfHead(4, 1)})
    x = torch.randn(3, 1, 6, 8)
    y = {"a": torch.tensor([0, 1, 2]), "b": torch.tensor([2, 1, 0])}
    maps = compute_saliency_maps(enc, heads, x, y, {"a": F.cross_entropy, "b": F.cross_entropy}, log_loss=False)
    assert maps.task_maps["a"].shape == (3, 6, 8) and maps.entropy.shape == (3, 6, 8)
    z = enc(x).detach().requires_grad_()
    (g,) = torch.autograd.grad(F.cross_entropy(heads["a"](z), y["a"]), z)
    torch.testing.assert_close(maps.task_maps["a"], g.mean(1).abs())
    # Each half is read by one task only: the task distribution is one-hot, entropy 0 everywhere.
    assert maps.entropy.abs().max() < 1e-6
    assert torch.all(maps.task_maps["b"][..., :4] == 0) and torch.all(maps.task_maps["a"][..., 4:] == 0)


def test_shared_positions_have_positive_entropy(tmp_path) -> None:
    torch.manual_seed(1)
    enc, heads = MultiMNISTEncoder(8), multimnist_heads(["left", "right"], 8)
    x = torch.randn(4, 1, 36, 36)
    y = {"left": torch.randint(0, 10, (4,)), "right": torch.randint(0, 10, (4,))}
    maps = compute_saliency_maps(enc, heads, x, y, {t: F.cross_entropy for t in heads})
    assert maps.entropy.shape == (4, 9, 9)
    assert float(maps.entropy.min()) >= 0.0 and float(maps.entropy.max()) <= math.log(2) + 1e-6
    assert float(maps.entropy.mean()) > 0.0
    assert enc.training  # modes restored
    png = save_saliency_grid(maps, tmp_path / "grid.png", title="t")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_command_on_a_checkpoint(tmp_path, capsys, monkeypatch) -> None:
    import numpy as np

    import libmtl_repmtl.data.multimnist as mm

    rng = np.random.default_rng(0)
    fake = ((rng.random((100, 28, 28)) > 0.8).astype(np.float32), np.repeat(np.arange(10), 10))
    monkeypatch.setattr(mm, "load_mnist_digits", lambda: fake)
    model = nn.Module()
    model.encoder, model.decoders = MultiMNISTEncoder(), multimnist_heads(["left", "right"])
    torch.save({"model": model.state_dict()}, tmp_path / "best.pt")
    assert main([str(tmp_path / "best.pt"), "--out", str(tmp_path / "sal"), "--n", "3"]) == 0
    assert (tmp_path / "sal" / "saliency_maps.png").is_file()
    assert np.load(tmp_path / "sal" / "saliency_maps.npz")["entropy"].shape == (3, 9, 9)
    assert main([str(tmp_path / "nope.pt")]) == 2


def test_every_map_has_its_own_colour_bar() -> None:
    """Each task map and each entropy map of every row has a colour bar axis drawn for its own image; the
    entropy bars span [0, log T]; the input images have none."""
    import matplotlib.pyplot as plt

    torch.manual_seed(2)
    enc, heads = MultiMNISTEncoder(8), multimnist_heads(["left", "right"], 8)
    x = torch.randn(3, 1, 36, 36)
    y = {"left": torch.randint(0, 10, (3,)), "right": torch.randint(0, 10, (3,))}
    maps = compute_saliency_maps(enc, heads, x, y, {t: F.cross_entropy for t in heads})
    fig = saliency_figure(maps)
    try:
        bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
        images = [ax.images[0] for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]
        assert len(images) == 3 * 4  # 3 rows x (input, left, right, entropy)
        maps_drawn = [im for im in images if im.get_cmap().name != "gray"]
        assert len(bars) == len(maps_drawn) == 3 * 3
        assert all(im.colorbar is not None and im.colorbar.ax in bars for im in maps_drawn)
        assert all(im.colorbar is None for im in images if im.get_cmap().name == "gray")
        entropy = [im for im in maps_drawn if im.get_cmap().name == "magma"]
        assert len(entropy) == 3 and all(im.colorbar.vmin == 0.0 and im.colorbar.vmax == pytest.approx(math.log(2))
                                         for im in entropy)
    finally:
        plt.close(fig)
