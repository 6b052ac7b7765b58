"""NYUv2 / Cityscapes readers on generated data, validation errors naming the file, NYUv2 augmentation."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from libmtl_repmtl.data.dense import CityscapesDataset, DatasetFormatError, NYUv2Dataset, RandomScaleCrop
from libmtl_repmtl.data.synthetic import generate


@pytest.fixture
def nyu_copy(nyu_root, tmp_path) -> Path:
    dst = tmp_path / "nyu"
    shutil.copytree(nyu_root, dst)
    return dst


def test_nyuv2_items(nyu_root):
    train, test = NYUv2Dataset(nyu_root, "train"), NYUv2Dataset(nyu_root, split="test")
    assert len(train) == 4 and len(test) == 2 and len(NYUv2Dataset(nyu_root, "val")) == 2
    assert train.num_out_channels == {"segmentation": 13, "depth": 1, "normal": 3}
    x, y = test[1]
    assert x.shape == (3, 16, 24) and x.dtype == torch.float32
    assert set(y) == {"segmentation", "depth", "normal"}
    assert y["segmentation"].shape == (16, 24) and y["segmentation"].dtype == torch.int64
    assert y["depth"].shape == (1, 16, 24) and y["depth"].dtype == torch.float32
    assert y["normal"].shape == (3, 16, 24) and y["normal"].dtype == torch.float32
    seg = y["segmentation"]
    assert int(seg.min()) >= -1 and int(seg.max()) <= 12
    # same content as the file
    np.testing.assert_allclose(x.numpy(), np.load(nyu_root / "val" / "image" / "1.npy").transpose(2, 0, 1))
    # a DataLoader batches it in LibMTL's single-input format
    xb, yb = next(iter(torch.utils.data.DataLoader(train, batch_size=2)))
    assert xb.shape == (2, 3, 16, 24) and yb["normal"].shape == (2, 3, 16, 24)


def test_registry_style_aliases(nyu_root):
    ds = NYUv2Dataset(root=str(nyu_root), mode="test", aug=False)
    assert ds.split == "test" and len(ds) == 2 and not ds.augment
    assert NYUv2Dataset(nyu_root, "train", aug=True).augment


@pytest.mark.parametrize("label_dir", ["label", "label_7"])
def test_cityscapes_label_folders(tmp_path, label_dir):
    root = generate("cityscapes", tmp_path, size=3, test_size=2, height=8, width=16, label_dir=label_dir)
    assert (root / "train" / label_dir).is_dir()
    ds = CityscapesDataset(root, "test")
    assert len(ds) == 2 and ds.num_out_channels == {"segmentation": 7, "depth": 1}
    x, y = ds[0]
    assert x.shape == (3, 8, 16) and set(y) == {"segmentation", "depth"}
    assert int(y["segmentation"].max()) <= 6


def test_cityscapes_label_folder_missing_or_both(tmp_path):
    root = generate("cityscapes", tmp_path, size=2, test_size=1, height=8, width=16, label_dir="label_7")
    shutil.copytree(root / "train" / "label_7", root / "train" / "label")
    assert CityscapesDataset(root, "train").task_dirs["segmentation"].name == "label_7"  # label_7 preferred
    shutil.rmtree(root / "val" / "label_7")
    with pytest.raises(FileNotFoundError, match=r"label_7/ or label/"):
        CityscapesDataset(root, "val")


def _expect(path: Path, match: str, ds: NYUv2Dataset, index: int) -> None:
    with pytest.raises(DatasetFormatError) as err:
        ds[index]
    assert str(path) in str(err.value)
    assert match in str(err.value)


def test_label_out_of_range_names_file(nyu_copy):
    p = nyu_copy / "val" / "label" / "1.npy"
    lab = np.load(p)
    lab[0, 0] = 17
    np.save(p, lab)
    with pytest.raises(ValueError, match=r"label values out of range \[-1, 12\]: found 17") as err:
        NYUv2Dataset(nyu_copy, "test")[1]
    assert str(p) in str(err.value)


def test_bad_arrays_name_the_file(nyu_copy):
    ds = NYUv2Dataset(nyu_copy, "train")
    # NaN in a target
    p = nyu_copy / "train" / "depth" / "0.npy"
    d = np.load(p)
    d[1, 1, 0] = np.nan
    np.save(p, d)
    _expect(p, "NaN/Inf", ds, 0)
    # wrong shape
    p = nyu_copy / "train" / "normal" / "1.npy"
    np.save(p, np.zeros((16, 24, 2), np.float32))
    _expect(p, "expected H x W x 3", ds, 1)
    # mismatched spatial size
    p = nyu_copy / "train" / "depth" / "1.npy"
    np.save(p, np.ones((8, 24, 1), np.float32))
    _expect(p, "same H x W", ds, 1)
    # wrong dtype (an integer image)
    p = nyu_copy / "train" / "image" / "2.npy"
    np.save(p, np.zeros((16, 24, 3), np.uint8))
    _expect(p, "expected a float array", ds, 2)
    # non-integral label
    p = nyu_copy / "train" / "label" / "3.npy"
    np.save(p, np.full((16, 24), 0.5, np.float32))
    _expect(p, "non-integer", ds, 3)


def test_corrupt_and_pickled_npy(nyu_copy):
    ds = NYUv2Dataset(nyu_copy, "train")
    p = nyu_copy / "train" / "image" / "0.npy"
    p.write_bytes(p.read_bytes()[:100])  # truncated
    _expect(p, "corrupt or truncated", ds, 0)
    p = nyu_copy / "train" / "normal" / "1.npy"
    np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True)  # object array: refused, not unpickled
    _expect(p, "corrupt or truncated", ds, 1)


def test_layout_errors(nyu_copy, tmp_path):
    (nyu_copy / "train" / "depth" / "2.npy").unlink()
    with pytest.raises(DatasetFormatError, match=r"depth lacks 1 of the 4 files") as err:
        NYUv2Dataset(nyu_copy, "train")
    assert "2.npy" in str(err.value)
    (nyu_copy / "val" / "image" / "0.npy").unlink()
    with pytest.raises(DatasetFormatError, match="missing 0.npy"):
        NYUv2Dataset(nyu_copy, "test")
    for f in (nyu_copy / "val" / "image").iterdir():
        f.unlink()
    with pytest.raises(DatasetFormatError, match="split is empty"):
        NYUv2Dataset(nyu_copy, "test")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        NYUv2Dataset(tmp_path / "nowhere")
    shutil.copy(nyu_copy / "train" / "depth" / "1.npy", nyu_copy / "train" / "depth" / "2.npy")
    shutil.rmtree(nyu_copy / "train" / "normal")
    with pytest.raises(FileNotFoundError, match="normal/"):
        NYUv2Dataset(nyu_copy, "train")
    with pytest.raises(ValueError, match="split must be"):
        NYUv2Dataset(nyu_copy, "validation")


# ---------------------------------------------------------------------------------------------- augmentation
def _sample(h: int = 12, w: int = 18) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    img = torch.rand(3, h, w, generator=g)
    seg = torch.randint(-1, 13, (h, w), generator=g)
    depth = torch.rand(1, h, w, generator=g) + 0.5
    normal = torch.nn.functional.normalize(torch.randn(3, h, w, generator=g), dim=0)
    invalid = torch.rand(h, w, generator=g) < 0.2
    depth[:, invalid] = 0.0
    normal[:, invalid] = 0.0
    return img, {"segmentation": seg, "depth": depth, "normal": normal}


def test_flip_negates_normal_x():
    img, t = _sample()
    out_img, out = RandomScaleCrop(scales=(1.0,), flip_p=1.0)(img, t)
    assert torch.equal(out_img, img.flip(-1))
    assert torch.equal(out["segmentation"], t["segmentation"].flip(-1))
    assert torch.equal(out["depth"], t["depth"].flip(-1))
    assert torch.equal(out["normal"][0], -t["normal"][0].flip(-1))
    assert torch.equal(out["normal"][1:], t["normal"][1:].flip(-1))


def test_no_flip_identity_at_scale_one():
    img, t = _sample()
    out_img, out = RandomScaleCrop(scales=(1.0,), flip_p=0.0)(img, t)
    assert torch.equal(out_img, img) and all(torch.equal(out[k], t[k]) for k in t)


@pytest.mark.parametrize("scale", [1.2, 1.5])
def test_scale_crop_properties(scale):
    img, t = _sample()
    aug = RandomScaleCrop(scales=(scale,), flip_p=0.5, generator=torch.Generator().manual_seed(3))
    for _ in range(5):
        out_img, out = aug(img, t)
        assert out_img.shape == img.shape and out_img.dtype == img.dtype
        for k in t:
            assert out[k].shape == t[k].shape and out[k].dtype == t[k].dtype
        # nearest sampling: labels stay in the original label set; depth values are originals / scale
        assert set(out["segmentation"].unique().tolist()) <= set(t["segmentation"].unique().tolist())
        orig = set((t["depth"] / scale).flatten().tolist())
        assert set(out["depth"].flatten().tolist()) <= orig
        # validity masks travel together: invalid depth <-> zero normal, as in the input
        assert torch.equal(out["depth"][0] == 0, out["normal"].norm(dim=0) == 0)
        # normals stay unit vectors where valid
        n = out["normal"].norm(dim=0)
        assert torch.allclose(n[n > 0], torch.ones_like(n[n > 0]), atol=1e-5)


def test_augmentation_reproducible_and_dataset(nyu_root):
    img, t = _sample()
    a = RandomScaleCrop(generator=torch.Generator().manual_seed(5))(img, t)
    b = RandomScaleCrop(generator=torch.Generator().manual_seed(5))(img, t)
    assert torch.equal(a[0], b[0]) and all(torch.equal(a[1][k], b[1][k]) for k in t)
    ds = NYUv2Dataset(nyu_root, "train", augment=True)
    x, y = ds[0]
    assert x.shape == (3, 16, 24) and y["normal"].shape == (3, 16, 24)
    with pytest.raises(ValueError, match="scales"):
        RandomScaleCrop(scales=(0.5,))
