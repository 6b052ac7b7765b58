"""The synthetic data generator: layouts, determinism, CLI, learnable signal."""

from __future__ import annotations

import filecmp
from pathlib import Path

import numpy as np
import pytest
import torch

from libmtl_repmtl.data.dense import CityscapesDataset, NYUv2Dataset
from libmtl_repmtl.data.office import OfficeDataset, office_domains
from libmtl_repmtl.data.synthetic import generate, main


def _files(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def test_dense_layout_and_sizes(tmp_path):
    root = generate("nyuv2", tmp_path / "n", size=3, test_size=2, height=10, width=14)
    for split, n in (("train", 3), ("val", 2)):
        for f in ("image", "label", "depth", "normal"):
            assert sorted(p.name for p in (root / split / f).iterdir()) == [f"{i}.npy" for i in range(n)]
    assert np.load(root / "train" / "image" / "0.npy").shape == (10, 14, 3)
    assert np.load(root / "train" / "label" / "0.npy").shape == (10, 14)
    assert np.load(root / "train" / "depth" / "0.npy").shape == (10, 14, 1)
    assert np.load(root / "train" / "normal" / "0.npy").shape == (10, 14, 3)
    c = generate("cityscapes", tmp_path / "c", size=2)
    assert not (c / "train" / "normal").exists() and (c / "train" / "label_7").is_dir()
    assert np.load(c / "val" / "image" / "0.npy").shape == (32, 64, 3)
    assert len(CityscapesDataset(c, "test")) == 1  # default test_size = size // 2


def test_deterministic_given_seed(tmp_path):
    a = generate("nyuv2", tmp_path / "a", size=2, height=8, width=8, seed=3)
    b = generate("nyuv2", tmp_path / "b", size=2, height=8, width=8, seed=3)
    c = generate("nyuv2", tmp_path / "c", size=2, height=8, width=8, seed=4)
    assert _files(a) == _files(b)
    assert all(filecmp.cmp(a / f, b / f, shallow=False) for f in _files(a))
    assert not filecmp.cmp(a / "train/image/0.npy", c / "train/image/0.npy", shallow=False)
    o1 = generate("office-home", tmp_path / "o1", size=2, test_size=1, seed=0)
    o2 = generate("office-home", tmp_path / "o2", size=2, test_size=1, seed=0)
    assert _files(o1) == _files(o2) and all(filecmp.cmp(o1 / f, o2 / f, shallow=False) for f in _files(o1))
    assert len(_files(o1)) == 4 * 3 + 4 * (2 + 1 + 1)  # 12 lists + images


def test_cli(tmp_path, capsys):
    assert main(["office-31", str(tmp_path / "o"), "--size", "3", "--test-size", "1", "--classes", "2"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "o")
    for d in office_domains("office-31"):
        assert len(OfficeDataset(tmp_path / "o", "office-31", d, "test", list_dir=tmp_path / "o")) == 1
    assert main(["cityscapes", str(tmp_path / "c"), "--size", "2", "--label-dir", "label"]) == 0
    assert (tmp_path / "c" / "train" / "label").is_dir()
    assert main(["nyuv2", str(tmp_path / "n"), "--size", "0"]) == 2
    with pytest.raises(ValueError, match="unknown kind"):
        generate("kitti", tmp_path / "k")


def test_dense_signal_is_learnable(tmp_path):
    """Nearest class-colour on the pixels separates the classes: an easy, learnable signal."""
    root = generate("nyuv2", tmp_path, size=6, test_size=3, height=16, width=24)
    tr, te = NYUv2Dataset(root, "train"), NYUv2Dataset(root, "test")

    def pixels(ds):
        xs, ys = zip(*[(x.reshape(3, -1).T, y["segmentation"].reshape(-1)) for x, y in ds])
        return torch.cat(xs), torch.cat(ys)

    x, y = pixels(tr)
    means = torch.stack([x[y == c].mean(0) if (y == c).any() else torch.full((3,), 9.0) for c in range(13)])
    xt, yt = pixels(te)
    keep = yt >= 0
    pred = torch.cdist(xt[keep], means).argmin(1)
    assert float((pred == yt[keep]).float().mean()) > 0.6


def test_short_training_improves_segmentation(tmp_path):
    """A per-pixel linear model trained for a few steps on the generated data beats its initial mIoU."""
    from libmtl_repmtl.tasks.losses import SegLoss
    from libmtl_repmtl.tasks.metrics import SegMetric

    root = generate("cityscapes", tmp_path, size=6, test_size=3, height=16, width=32)
    tr, te = CityscapesDataset(root, "train"), CityscapesDataset(root, "test")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 1), torch.nn.ReLU(), torch.nn.Conv2d(16, 7, 1))

    def miou() -> float:
        m = SegMetric(7)
        with torch.no_grad():
            for x, y in torch.utils.data.DataLoader(te, batch_size=3):
                m.update_fun(model(x), y["segmentation"])
        return m.score_fun()[0]

    before = miou()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    loss_fn = SegLoss()
    x, y = next(iter(torch.utils.data.DataLoader(tr, batch_size=len(tr))))
    for _ in range(30):
        opt.zero_grad()
        loss_fn.compute_loss(model(x), y["segmentation"]).backward()
        opt.step()
    assert miou() > before + 0.2


def test_office_signal_is_learnable(tmp_path):
    root = generate("office-31", tmp_path, size=8, test_size=4, classes=4)

    def feats(split):
        ds = OfficeDataset(root, "office-31", "amazon", split, list_dir=root)
        return torch.stack([ds[i][0].mean((1, 2)) for i in range(len(ds))]), torch.tensor(ds.labels)

    x, y = feats("train")
    means = torch.stack([x[y == c].mean(0) for c in range(4)])
    xt, yt = feats("test")
    assert float((torch.cdist(xt, means).argmin(1) == yt).float().mean()) >= 0.75
