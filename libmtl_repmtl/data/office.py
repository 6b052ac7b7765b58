"""Reader of Office-31 and Office-Home (multi-input: each domain is a task with its own batches).

Layout: images at ``ROOT/<relpath>``; split lists ``<domain>_{train,val,test}.txt`` with one
``<relpath> <label>`` per line (e.g. ``amazon/images/back_pack/frame_0065.jpg 0``,
``Art/Calendar/00010.jpg 0``). The split lists are looked up, in this order, in

1. ``list_dir`` when given (the folder holding ``<domain>_<split>.txt``, or its parent holding
   ``<dataset>/<domain>_<split>.txt``), and nowhere else;
2. the dataset root itself, ``ROOT/<domain>_<split>.txt`` (where ``python -m libmtl_repmtl.data.synthetic``
   writes the lists of the images it generates);
3. the copy shipped in this package, ``libmtl_repmtl/data/office_lists/<dataset>/`` (LibMTL's published
   60/20/20 lists, MIT licence, see the README there);
4. a LibMTL git checkout's ``examples/office/data_txt/<dataset>/`` (found next to the imported ``LibMTL``
   package).

Items are ``(image, label)``: ``image`` float32 ``(3, 224, 224)`` (RGB, resized to 224 x 224, ``ToTensor``,
ImageNet mean/std normalisation), ``label`` int64 scalar tensor in ``[0, classes - 1]``.

Errors (each naming the file, and the line for list files): malformed list line, label out of range, empty
split, missing image file (checked up front for the whole split), unreadable or truncated image (checked when
the item is loaded).
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

#: Domains (tasks) per dataset, in order.
OFFICE_DOMAINS: dict[str, tuple[str, ...]] = {
    "office-31": ("amazon", "dslr", "webcam"),
    "office-home": ("Art", "Clipart", "Product", "Real_World"),
}
#: Number of classes per dataset.
OFFICE_NUM_CLASSES: dict[str, int] = {"office-31": 31, "office-home": 65}
#: Split names.
OFFICE_SPLITS: tuple[str, ...] = ("train", "val", "test")
#: ImageNet normalisation constants (RGB).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
#: The split lists shipped with the package.
PACKAGE_LIST_DIR: Path = Path(__file__).resolve().parent / "office_lists"


def canonical_office(dataset: str) -> str:
    """``'office-31'`` or ``'office-home'`` for any spelling (``Office_31``, ``officehome``, ...).

    Raises:
        ValueError: not an Office dataset.
    """
    key = re.sub(r"[^a-z0-9]", "", str(dataset).lower())
    for name in OFFICE_DOMAINS:
        if re.sub(r"[^a-z0-9]", "", name) == key:
            return name
    raise ValueError(f"unknown Office dataset {dataset!r}; expected one of {list(OFFICE_DOMAINS)}")


def office_domains(dataset: str) -> list[str]:
    """Domain (task) names of ``dataset``: office-31 ``amazon, dslr, webcam``; office-home ``Art, Clipart,
    Product, Real_World``."""
    return list(OFFICE_DOMAINS[canonical_office(dataset)])


def office_num_classes(dataset: str) -> int:
    """31 (Office-31) or 65 (Office-Home)."""
    return OFFICE_NUM_CLASSES[canonical_office(dataset)]


def canonical_domain(dataset: str, domain: str) -> str:
    """The domain's canonical spelling (matched ignoring case, ``-``/``_``/spaces).

    Raises:
        ValueError: unknown domain (the message lists the dataset's domains).
    """
    ds = canonical_office(dataset)
    key = re.sub(r"[^a-z0-9]", "", str(domain).lower())
    for d in OFFICE_DOMAINS[ds]:
        if re.sub(r"[^a-z0-9]", "", d.lower()) == key:
            return d
    raise ValueError(f"unknown {ds} domain {domain!r}; domains are {list(OFFICE_DOMAINS[ds])}")


def _libmtl_checkout_lists(dataset: str) -> Path | None:
    try:
        spec = importlib.util.find_spec("LibMTL")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    repo = Path(spec.origin).resolve().parent.parent
    cand = repo / "examples" / "office" / "data_txt" / dataset
    return cand if cand.is_dir() else None


def list_dir_candidates(dataset: str, list_dir: str | os.PathLike[str] | None = None,
                        root: str | os.PathLike[str] | None = None) -> list[Path]:
    """The folders searched for ``dataset``'s split lists, in order (see the module docstring; ``root``: the
    dataset root, searched after ``list_dir``)."""
    ds = canonical_office(dataset)
    out: list[Path] = []
    if list_dir is not None:
        d = Path(os.fspath(list_dir)).expanduser()
        out += [d, d / ds]
    if root is not None:
        out.append(Path(os.fspath(root)).expanduser())
    out.append(PACKAGE_LIST_DIR / ds)
    lib = _libmtl_checkout_lists(ds)
    if lib is not None:
        out.append(lib)
    return out


def find_list_file(dataset: str, domain: str, split: str, list_dir: str | os.PathLike[str] | None = None,
                   root: str | os.PathLike[str] | None = None) -> Path:
    """Path of ``<domain>_<split>.txt`` for ``dataset``: from ``list_dir``, else the dataset ``root`` (when
    given), else the shipped lists, else a LibMTL checkout's.

    When ``list_dir`` is given it must hold the file (directly or under ``<dataset>/``); it is not silently
    replaced by the shipped lists.

    Raises:
        FileNotFoundError: no such list file (the message lists where it looked).
    """
    ds = canonical_office(dataset)
    dom = canonical_domain(ds, domain)
    if split not in OFFICE_SPLITS:
        raise ValueError(f"split must be one of {list(OFFICE_SPLITS)}, got {split!r}")
    name = f"{dom}_{split}.txt"
    cands = list_dir_candidates(ds, list_dir, root)
    if list_dir is not None:
        cands = cands[:2]
    for d in cands:
        if (d / name).is_file():
            return d / name
    raise FileNotFoundError(f"{ds}: split list {name} not found in " + ", ".join(str(d) for d in cands)
                            + ("; pass --list_dir pointing at the folder holding it" if list_dir is None else
                               "; check list_dir (or omit it to use the lists shipped with libmtl_repmtl)"))


def read_split_list(path: str | os.PathLike[str], num_classes: int) -> list[tuple[str, int]]:
    """Parse a split list: ``(relpath, label)`` per non-blank line (a path may contain spaces: the label is the
    last field).

    Raises:
        ValueError: malformed line, non-integer or out-of-range label (``file:line: ...``), or no entries.
    """
    p = Path(os.fspath(path))
    entries: list[tuple[str, int]] = []
    with open(p, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            text = line.strip()
            if not text:
                continue
            parts = text.rsplit(None, 1)
            if len(parts) != 2:
                raise ValueError(f"{p}:{lineno}: malformed line {text!r}; expected '<relpath> <label>'")
            rel, lab = parts
            try:
                label = int(lab)
            except ValueError:
                raise ValueError(f"{p}:{lineno}: label {lab!r} is not an integer; expected '<relpath> <label>'") \
                    from None
            if not 0 <= label < num_classes:
                raise ValueError(f"{p}:{lineno}: label {label} out of range [0, {num_classes - 1}]")
            entries.append((rel, label))
    if not entries:
        raise ValueError(f"{p}: the split list is empty; it needs one '<relpath> <label>' line per image")
    return entries


#: The smallest image side accepted: ResNet-18's output stride. At 32 pixels its last stage sees a 1 x 1 map;
#: a smaller image is mostly the convolutions' zero padding by then, and 0 or less cannot be resized to.
MIN_IMAGE_SIZE = 32


def check_image_size(value: object) -> int:
    """``value`` as the side of the square resize: an integer of at least :data:`MIN_IMAGE_SIZE`.

    Raises:
        ValueError: anything else (the message names ``--image_size`` and the minimum).
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < MIN_IMAGE_SIZE:
        raise ValueError(f"--image_size {value!r}: the side of the square image resize must be an integer of at "
                         f"least {MIN_IMAGE_SIZE} (ResNet-18's output stride; the paper's is 224)")
    return value


def office_transform(image_size: int = 224) -> Callable[[Image.Image], Tensor]:
    """The preprocessing: RGB image -> ``Resize((s, s))`` -> ``ToTensor`` -> ImageNet ``Normalize``;
    output float32 ``(3, s, s)``."""
    from torchvision import transforms

    return transforms.Compose([
        transforms.Resize((int(image_size), int(image_size))),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


class OfficeDataset(Dataset):
    """One domain and split of Office-31 / Office-Home.

    Args:
        root: dataset root; image ``i`` is ``root / <relpath from the list>``.
        dataset: ``'office-31'`` or ``'office-home'``.
        domain: a domain of ``dataset`` (:func:`office_domains`).
        split: ``'train'``, ``'val'`` or ``'test'``.
        list_dir: folder of the split lists (default: search order in the module docstring: the lists in
            ``root`` itself, as the small-data generator writes them, else the shipped ones).
        image_size: side of the square resize (224 as in the paper).
        check_files: check up front that every listed image exists.

    Keyword alias: ``mode`` for ``split`` (LibMTL example style).

    Items: ``(image float32 (3, image_size, image_size), label int64 scalar)``.

    Attributes:
        entries: ``(relpath, label)`` per item; ``list_file``: the split list read; ``num_classes``.
    """

    def __init__(self, root: str | os.PathLike[str], dataset: str = "office-31", domain: str = "amazon",
                 split: str = "train", list_dir: str | os.PathLike[str] | None = None, *, image_size: int | None = 224,
                 check_files: bool = True, mode: str | None = None) -> None:
        split = mode if mode is not None else split
        self.dataset = canonical_office(dataset)
        self.domain = canonical_domain(self.dataset, domain)
        self.split = split
        self.root = Path(os.fspath(root)).expanduser()
        self.num_classes = OFFICE_NUM_CLASSES[self.dataset]
        self.image_size = check_image_size(224 if image_size is None else image_size)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.dataset}: dataset root {self.root} is not a folder; pass the folder "
                                    "that the list paths are relative to (or generate small data with "
                                    f"'python -m libmtl_repmtl.data.synthetic {self.dataset} OUT')")
        self.list_file = find_list_file(self.dataset, self.domain, split, list_dir, self.root)
        self.entries = read_split_list(self.list_file, self.num_classes)
        if check_files:
            missing = [rel for rel, _ in self.entries if not (self.root / rel).is_file()]
            if missing:
                raise FileNotFoundError(
                    f"{self.dataset} {self.domain}/{split}: {len(missing)} of {len(self.entries)} images listed "
                    f"in {self.list_file} are missing under {self.root}, e.g. {self.root / missing[0]}; check "
                    "--dataset_path (the folder holding the domain folders), or put lists matching your images "
                    "in it as <domain>_<split>.txt, or pass list_dir with them")
        self.transform = office_transform(self.image_size)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def labels(self) -> list[int]:
        """Labels of all items, in order."""
        return [lab for _, lab in self.entries]

    def load_image(self, index: int) -> Image.Image:
        """Item ``index``'s image as an RGB PIL image (fully decoded).

        Raises:
            FileNotFoundError: missing file; ValueError: unreadable or truncated image (both name the file).
        """
        path = self.root / self.entries[index][0]
        try:
            with Image.open(path) as im:
                im.load()
                return im.convert("RGB")
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: image file not found (listed in {self.list_file})") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise ValueError(f"{path}: cannot read the image ({exc}); the file is corrupt or truncated "
                             f"(replace it, or remove its line from {self.list_file})") from None

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        index = int(index)
        image = self.transform(self.load_image(index))
        return image, torch.tensor(self.entries[index][1], dtype=torch.long)


def office_split_counts(dataset: str, list_dir: str | os.PathLike[str] | None = None
                        ) -> dict[str, dict[str, int]]:
    """Domain -> split -> number of listed images (from the split lists; no image is read)."""
    ds = canonical_office(dataset)
    return {d: {s: len(read_split_list(find_list_file(ds, d, s, list_dir), OFFICE_NUM_CLASSES[ds]))
                for s in OFFICE_SPLITS} for d in OFFICE_DOMAINS[ds]}


__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "MIN_IMAGE_SIZE", "OFFICE_DOMAINS", "OFFICE_NUM_CLASSES", "OFFICE_SPLITS",
           "OfficeDataset", "PACKAGE_LIST_DIR", "canonical_domain", "canonical_office", "check_image_size",
           "find_list_file",
           "list_dir_candidates", "office_domains", "office_num_classes", "office_split_counts",
           "office_transform", "read_split_list"]
