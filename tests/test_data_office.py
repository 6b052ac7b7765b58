"""Office-31 / Office-Home: the shipped split lists, the reader on generated images, errors naming the file."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
import torch

from libmtl_repmtl.data import office
from libmtl_repmtl.data.office import (
    PACKAGE_LIST_DIR,
    OfficeDataset,
    find_list_file,
    office_domains,
    office_num_classes,
    office_split_counts,
    read_split_list,
)
from libmtl_repmtl.data.synthetic import generate

EXPECTED_COUNTS = {
    "office-31": {"amazon": (1680, 552, 585), "dslr": (287, 89, 122), "webcam": (466, 149, 180)},
    "office-home": {"Art": (1435, 465, 527), "Clipart": (2596, 846, 923), "Product": (2635, 860, 944),
                    "Real_World": (2586, 846, 925)},
}


@pytest.mark.parametrize("dataset", ["office-31", "office-home"])
def test_shipped_lists_parse(dataset):
    counts = office_split_counts(dataset)
    assert {d: tuple(c[s] for s in ("train", "val", "test")) for d, c in counts.items()} == EXPECTED_COUNTS[dataset]
    total = sum(sum(v) for v in EXPECTED_COUNTS[dataset].values())
    assert total == {"office-31": 4110, "office-home": 15588}[dataset]
    k = office_num_classes(dataset)
    for d in office_domains(dataset):
        f = find_list_file(dataset, d, "train")
        assert f.parent == PACKAGE_LIST_DIR / dataset
        entries = read_split_list(f, k)
        assert {lab for _, lab in entries} == set(range(k))  # every class in every training list
        assert all(rel.startswith(d + "/") for rel, _ in entries)
    assert (PACKAGE_LIST_DIR / "README.md").read_text().count("MIT") >= 1


def test_domains_and_names():
    assert office_domains("Office_31") == ["amazon", "dslr", "webcam"]
    assert office_domains("officehome") == ["Art", "Clipart", "Product", "Real_World"]
    assert (office_num_classes("office-31"), office_num_classes("office-home")) == (31, 65)
    with pytest.raises(ValueError, match="domains are"):
        find_list_file("office-31", "Art", "train")


@pytest.fixture(scope="module")
def o31(tmp_path_factory) -> Path:
    return generate("office-31", tmp_path_factory.mktemp("o31"), size=4, test_size=2, classes=3, seed=0)


def test_reader_on_generated_images(o31):
    shipped = {d: {s: set(read_split_list(find_list_file("office-31", d, s), 31)) for s in ("train", "val", "test")}
               for d in office_domains("office-31")}
    for d in office_domains("office-31"):
        for split, n in (("train", 4), ("val", 2), ("test", 2)):
            ds = OfficeDataset(o31, "office-31", d, split, list_dir=o31)
            assert len(ds) == n and ds.list_file == o31 / f"{d}_{split}.txt"
            assert set(ds.entries) <= shipped[d][split]  # real published paths and labels
    ds = OfficeDataset(o31, dataset="office-31", domain="dslr", split="train", list_dir=o31)
    x, y = ds[1]
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    assert y.dtype == torch.long and y.dim() == 0 and int(y) == ds.entries[1][1]
    assert -3.0 < float(x.min()) and float(x.max()) < 3.0  # ImageNet-normalised
    xb, yb = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert xb.shape == (4, 3, 224, 224) and yb.shape == (4,)
    assert OfficeDataset(o31, "office-31", "dslr", mode="val", list_dir=o31).split == "val"


def test_the_lists_in_the_dataset_root_are_read_without_list_dir(o31):
    """The generator's lists sit in the dataset root; the reader finds them there (no --list_dir needed)."""
    for d in office_domains("office-31"):
        for split, n in (("train", 4), ("val", 2), ("test", 2)):
            ds = OfficeDataset(o31, "office-31", d, split)
            assert len(ds) == n and ds.list_file == o31 / f"{d}_{split}.txt"
    assert office.list_dir_candidates("office-31", root=o31)[0] == o31
    assert office.list_dir_candidates("office-31", list_dir=o31 / "x", root=o31)[:3] == [o31 / "x", o31 / "x" /
                                                                                           "office-31", o31]


def test_default_lists_need_all_images(o31, tmp_path):
    # without lists in the root, the shipped lists name every image of the split: the generated subset is
    # reported as missing
    root = tmp_path / "no_lists"
    shutil.copytree(o31, root, ignore=shutil.ignore_patterns("*.txt"))
    with pytest.raises(FileNotFoundError, match=r"images listed in .*office_lists.*amazon_train.txt are missing"):
        OfficeDataset(root, "office-31", "amazon", "train")


def test_libmtl_checkout_lists_found(tmp_path, monkeypatch):
    repo = tmp_path / "LibMTL-main"
    (repo / "LibMTL").mkdir(parents=True)
    (repo / "LibMTL" / "__init__.py").write_text("")
    lists = repo / "examples" / "office" / "data_txt" / "office-31"
    lists.mkdir(parents=True)
    real = importlib.util.find_spec

    def fake(name, *a, **k):
        if name == "LibMTL":
            return importlib.util.spec_from_file_location("LibMTL", repo / "LibMTL" / "__init__.py")
        return real(name, *a, **k)

    monkeypatch.setattr(importlib.util, "find_spec", fake)
    assert office.list_dir_candidates("office-31")[-1] == lists
    # used when the package copy is unavailable
    monkeypatch.setattr(office, "PACKAGE_LIST_DIR", tmp_path / "nothing")
    (lists / "amazon_test.txt").write_text("amazon/images/a/x.jpg 0\n")
    assert find_list_file("office-31", "amazon", "test") == lists / "amazon_test.txt"


def _lists_copy(o31: Path, tmp_path: Path) -> Path:
    root = tmp_path / "o31"
    shutil.copytree(o31, root)
    return root


def test_list_errors_name_file_and_line(o31, tmp_path):
    root = _lists_copy(o31, tmp_path)
    f = root / "webcam_val.txt"
    lines = f.read_text().splitlines()
    f.write_text(lines[0] + "\n" + lines[1].split()[0] + "\n")
    with pytest.raises(ValueError, match=r"webcam_val\.txt:2: malformed line"):
        OfficeDataset(root, "office-31", "webcam", "val", list_dir=root)
    f.write_text(lines[0] + "\n\n" + lines[1].rsplit(" ", 1)[0] + " 31\n")
    with pytest.raises(ValueError, match=r"webcam_val\.txt:3: label 31 out of range \[0, 30\]"):
        OfficeDataset(root, "office-31", "webcam", "val", list_dir=root)
    f.write_text(lines[0].rsplit(" ", 1)[0] + " cat\n")
    with pytest.raises(ValueError, match=r"webcam_val\.txt:1: label 'cat' is not an integer"):
        OfficeDataset(root, "office-31", "webcam", "val", list_dir=root)
    f.write_text("\n")
    with pytest.raises(ValueError, match=r"webcam_val\.txt: the split list is empty"):
        OfficeDataset(root, "office-31", "webcam", "val", list_dir=root)
    (root / "webcam_test.txt").unlink()
    with pytest.raises(FileNotFoundError, match="webcam_test.txt not found"):
        OfficeDataset(root, "office-31", "webcam", "test", list_dir=root)


def test_image_errors_name_file(o31, tmp_path):
    root = _lists_copy(o31, tmp_path)
    ds = OfficeDataset(root, "office-31", "amazon", "train", list_dir=root)
    bad = root / ds.entries[0][0]
    bad.write_bytes(bad.read_bytes()[: len(bad.read_bytes()) // 2])  # truncated JPEG
    with pytest.raises(ValueError, match="corrupt or truncated") as err:
        ds[0]
    assert str(bad) in str(err.value)
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot read the image"):
        ds[0]
    gone = root / ds.entries[1][0]
    gone.unlink()
    with pytest.raises(FileNotFoundError, match="image file not found") as err:
        ds[1]
    assert str(gone) in str(err.value)
    with pytest.raises(FileNotFoundError, match=r"1 of 4 images .* missing") as err:
        OfficeDataset(root, "office-31", "amazon", "train", list_dir=root)
    assert str(gone) in str(err.value)
