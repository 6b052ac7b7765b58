"""The benchmark registry: everything :func:`~libmtl_repmtl.training.experiment.run_experiment` needs to train
one benchmark, by name.

A benchmark is a :class:`BenchmarkSpec` of builder functions. Each builder receives ``opts``, the run's merged
options (the spec's :attr:`~BenchmarkSpec.defaults`, then the caller's options: ``train_bs``, ``test_bs``,
``aug``, ``seed``, ``num_workers``, ``encoder``, ``pretrained``, ``dataset_path`` and any benchmark-specific
keys such as ``n_train`` or ``list_dir``).

Plugging in a benchmark (e.g. from the harness, without editing this package)::

    from libmtl_repmtl.training.registry import BenchmarkSpec, register_benchmark

    register_benchmark(BenchmarkSpec(
        name="multimnist", tasks=("left", "right"), multi_input=False, has_val=True,
        task_dict=lambda tasks, opts: {...},          # LibMTL task dict restricted to `tasks`
        dataloaders=lambda tasks, opts: {"train": ..., "val": ..., "test": ...},
        encoder_class=lambda opts: MyEncoder,         # a zero-argument callable -> nn.Module
        decoders=lambda tasks, opts: nn.ModuleDict({t: MyHead() for t in tasks}),
        defaults={"epochs": 6, "train_bs": 64, "lr": 1e-3, "weight_decay": 1e-5, "scheduler": None},
    ))

``dataloaders`` returns ``{"train": L, "val": L or None, "test": L}``, each ``L`` a DataLoader yielding
``(inputs, {task: label})`` (single input) or a ``task -> DataLoader`` dict yielding ``(inputs, label)``
(multi-input). ``process_preds(trainer, preds, task_name)`` post-processes predictions before the loss and
metrics (dense benchmarks: :func:`dense_process_preds`). ``baseline`` (task -> list of single-task metric
values, in the task dict's metric order and units) is the Δp reference used when
:mod:`libmtl_repmtl.training.deltap` has none for the benchmark.
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

Options = Mapping[str, Any]
Loaders = Any  # DataLoader or task -> DataLoader


@dataclass(frozen=True)
class BenchmarkSpec:
    """Everything needed to train one benchmark (see the module docstring).

    Attributes:
        name: registry name (lower case; ``office-31`` style).
        tasks: all task names, in order.
        multi_input: each task has its own input batch (Office).
        task_dict: ``(tasks, opts) -> LibMTL task dict`` (fresh loss/metric objects) for ``tasks``.
        dataloaders: ``(tasks, opts) -> {"train", "val" (or None), "test"}`` loaders.
        encoder_class: ``opts -> zero-argument callable`` building the shared encoder.
        decoders: ``(tasks, opts) -> nn.ModuleDict`` of heads.
        has_val: whether ``dataloaders`` gives a validation split (best epoch chosen on it).
        process_preds: optional ``(trainer, preds, task_name) -> preds``.
        defaults: default options (``epochs``, ``train_bs``, ``test_bs``, ``optim``, ``lr``, ``weight_decay``,
            ``scheduler``, ``step_size``, ``gamma``, ``encoder``, ``pretrained``, ...).
        baseline: fallback single-task baseline (task -> metric values, task-dict order and units).
        description: one line for listings.
    """

    name: str
    tasks: tuple[str, ...]
    multi_input: bool
    task_dict: Callable[[Sequence[str], Options], dict[str, dict[str, Any]]]
    dataloaders: Callable[[Sequence[str], Options], dict[str, Loaders]]
    encoder_class: Callable[[Options], Callable[[], nn.Module]]
    decoders: Callable[[Sequence[str], Options], nn.ModuleDict]
    has_val: bool = False
    process_preds: Callable[[Any, Any, str | None], Any] | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    baseline: dict[str, list[float]] | None = None
    description: str = ""


class BenchmarkSetupError(RuntimeError):
    """A benchmark cannot be set up (missing reader module, dataset folder, ...); the message says why."""


_REGISTRY: dict[str, BenchmarkSpec] = {}


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def register_benchmark(spec: BenchmarkSpec, *, overwrite: bool = True) -> BenchmarkSpec:
    """Add ``spec`` to the registry (names match ignoring case, ``-`` and ``_``). Returns ``spec``.

    Raises:
        ValueError: the name is taken and ``overwrite`` is false.
    """
    key = _key(spec.name)
    if not overwrite and key in _REGISTRY:
        raise ValueError(f"benchmark {spec.name!r} is already registered")
    _REGISTRY[key] = spec
    return spec


def get_benchmark(name: str) -> BenchmarkSpec:
    """The registered :class:`BenchmarkSpec` called ``name``.

    Raises:
        KeyError: unknown name (the message lists the registered ones).
    """
    spec = _REGISTRY.get(_key(name))
    if spec is None:
        raise KeyError(f"unknown benchmark {name!r}; registered: {benchmark_names()} "
                       "(add one with libmtl_repmtl.training.registry.register_benchmark)")
    return spec


def benchmark_names() -> list[str]:
    """Names of the registered benchmarks."""
    return sorted(s.name for s in _REGISTRY.values())


# ---------------------------------------------------------------------------------------------- dense helpers
def dense_process_preds(normalize: Sequence[str] = ("normal",)) -> Callable[[Any, Any, str | None], Any]:
    """``process_preds`` for dense tasks: bilinear upsampling of every ``(B, C, h, w)`` prediction to the
    trainer's current input size ``trainer.input_size`` (= label size in the NYUv2/Cityscapes layouts;
    ``align_corners=True`` as LibMTL), and L2 normalisation over channels for the tasks in ``normalize``."""

    def process(trainer: Any, preds: Any, task_name: str | None = None) -> Any:
        size = getattr(trainer, "input_size", None)

        def one(task: str, p: torch.Tensor) -> torch.Tensor:
            if size is not None and p.dim() == 4 and tuple(p.shape[-2:]) != tuple(size):
                p = F.interpolate(p, size=tuple(size), mode="bilinear", align_corners=True)
            if task in normalize:
                p = F.normalize(p, p=2, dim=1)
            return p

        if isinstance(preds, dict):
            return {t: one(t, p) for t, p in preds.items()}
        return one(task_name or "", preds)

    return process


def _call_flexibly(factory: Callable[..., Any], **kwargs: Any) -> Any:
    """Call ``factory`` with the keyword arguments its signature accepts (the data readers may name things
    differently)."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return factory(**kwargs)
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return factory(**kwargs)
    return factory(**{k: v for k, v in kwargs.items() if k in params})


def _loader(ds: Any, batch_size: int, train: bool, opts: Options) -> DataLoader:
    gen = torch.Generator().manual_seed(int(opts.get("seed", 0))) if train else None
    workers = int(opts.get("num_workers", 0) or 0)
    return DataLoader(ds, batch_size=int(batch_size), shuffle=train, drop_last=train, generator=gen,
                      num_workers=workers, pin_memory=bool(opts.get("pin_memory", False)),
                      persistent_workers=workers > 0)


def _need_path(opts: Options, name: str) -> Path:
    path = opts.get("dataset_path")
    if not path:
        raise BenchmarkSetupError(f"{name}: no dataset path; pass --dataset_path ROOT (the spec's layout) or "
                                  f"generate small data with 'python -m libmtl_repmtl.data.synthetic {name} OUT'")
    root = Path(os.fspath(path)).expanduser()
    if not root.is_dir():
        raise BenchmarkSetupError(f"{name}: dataset path {str(root)!r} is not a folder")
    return root


def _task_dict_for(benchmark: str) -> Callable[[Sequence[str], Options], dict[str, dict[str, Any]]]:
    def build(tasks: Sequence[str], opts: Options) -> dict[str, dict[str, Any]]:
        try:
            from libmtl_repmtl.tasks.specs import task_dict  # type: ignore[import-not-found]
        except ImportError as exc:
            raise BenchmarkSetupError(f"{benchmark}: the task definitions (libmtl_repmtl.tasks.specs) are not "
                               f"available ({exc})") from exc
        full = task_dict(benchmark)
        unknown = [t for t in tasks if t not in full]
        if unknown:
            raise ValueError(f"{benchmark}: unknown task(s) {unknown}; tasks are {list(full)}")
        return {t: full[t] for t in tasks}

    return build


class _LabelSubset(torch.utils.data.Dataset):
    """A single-input dataset whose label dicts are restricted to some tasks (single-task runs)."""

    def __init__(self, base: Any, tasks: Sequence[str]) -> None:
        self.base, self.tasks = base, list(tasks)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> Any:
        x, y = self.base[i]
        return x, {t: y[t] for t in self.tasks}


def _dense_loaders(benchmark: str, cls_name: str, all_tasks: Sequence[str]) -> Callable[..., dict[str, Loaders]]:
    def build(tasks: Sequence[str], opts: Options) -> dict[str, Loaders]:
        root = _need_path(opts, benchmark)
        try:
            from libmtl_repmtl.data import dense  # type: ignore[attr-defined]
        except ImportError as exc:
            raise BenchmarkSetupError(f"{benchmark}: the dataset readers (libmtl_repmtl.data.dense) are not available "
                               f"({exc})") from exc
        cls = getattr(dense, cls_name)
        out: dict[str, Loaders] = {"val": None}
        for split, mode, train in (("train", "train", True), ("test", "test", False)):
            ds = _call_flexibly(cls, root=str(root), mode=mode, augmentation=bool(opts.get("aug")) and train,
                                aug=bool(opts.get("aug")) and train)
            if list(tasks) != list(all_tasks):
                ds = _LabelSubset(ds, tasks)
            out[split] = _loader(ds, opts["train_bs"] if train else opts["test_bs"], train, opts)
        return out

    return build


def _dense_spec(name: str, cls_name: str, outputs: dict[str, int], batch: int,
                baseline: dict[str, list[float]], description: str) -> BenchmarkSpec:
    from libmtl_repmtl.models.resnet import deeplab_heads, dense_encoder_factory

    return BenchmarkSpec(
        name=name, tasks=tuple(outputs), multi_input=False, has_val=False,
        task_dict=_task_dict_for(name),
        dataloaders=_dense_loaders(name, cls_name, tuple(outputs)),
        encoder_class=lambda o: dense_encoder_factory(o.get("encoder") or "resnet50", o.get("pretrained")),
        decoders=lambda tasks, o: deeplab_heads({t: outputs[t] for t in tasks}, o.get("encoder") or "resnet50"),
        process_preds=dense_process_preds(("normal",)),
        defaults={"epochs": 200, "train_bs": batch, "test_bs": batch, "optim": "adam", "lr": 1e-4,
                  "weight_decay": 1e-5, "scheduler": "step", "step_size": 100, "gamma": 0.5,
                  "encoder": "resnet50", "pretrained": "imagenet"},
        baseline=baseline, description=description)


# ---------------------------------------------------------------------------------------------- Office
OFFICE_DOMAINS: dict[str, tuple[str, ...]] = {
    "office-31": ("amazon", "dslr", "webcam"),
    "office-home": ("Art", "Clipart", "Product", "Real_World"),
}
OFFICE_CLASSES = {"office-31": 31, "office-home": 65}


def _office_loaders(name: str) -> Callable[..., dict[str, Loaders]]:
    def build(tasks: Sequence[str], opts: Options) -> dict[str, Loaders]:
        root = _need_path(opts, name)
        try:
            from libmtl_repmtl.data import office  # type: ignore[attr-defined]
        except ImportError as exc:
            raise BenchmarkSetupError(
                f"{name}: the dataset reader (libmtl_repmtl.data.office) is not available ({exc})") from exc
        out: dict[str, Loaders] = {}
        for split in ("train", "val", "test"):
            train = split == "train"
            loaders = {}
            for t in tasks:
                ds = _call_flexibly(office.OfficeDataset, dataset=name, root=str(root), root_path=str(root),
                                    list_dir=opts.get("list_dir"), task=t, domain=t, mode=split, split=split,
                                    image_size=opts.get("image_size"))
                loaders[t] = _loader(ds, opts["train_bs"] if train else opts["test_bs"], train, opts)
            out[split] = loaders
        return out

    return build


def _office_spec(name: str, baseline: list[float]) -> BenchmarkSpec:
    from libmtl_repmtl.models.resnet import linear_heads, office_encoder_factory

    domains = OFFICE_DOMAINS[name]
    return BenchmarkSpec(
        name=name, tasks=domains, multi_input=True, has_val=True,
        task_dict=_task_dict_for(name), dataloaders=_office_loaders(name),
        encoder_class=lambda o: office_encoder_factory(o.get("encoder") or "resnet18", o.get("pretrained")),
        decoders=lambda tasks, o: linear_heads(tasks, OFFICE_CLASSES[name], o.get("encoder") or "resnet18"),
        defaults={"epochs": 100, "train_bs": 64, "test_bs": 64, "optim": "adam", "lr": 1e-4, "weight_decay": 1e-5,
                  "scheduler": None, "encoder": "resnet18", "pretrained": "imagenet"},
        baseline={d: [v] for d, v in zip(domains, baseline)},
        description=f"{name}: {len(domains)} domains as tasks (multi-input), ResNet-18 + MLP encoder")


# The spec's single-task rows in LibMTL's metric units (fractions for mIoU / pixAcc / accuracy / the
# within-angle ratios; Cityscapes' relative depth error as the metric reports it).
register_benchmark(_dense_spec(
    "nyuv2", "NYUv2Dataset", {"segmentation": 13, "depth": 1, "normal": 3}, 8,
    {"segmentation": [0.5350, 0.7539], "depth": [0.3926, 0.1605],
     "normal": [21.99, 15.16, 0.3904, 0.6500, 0.7516]},
    "NYUv2: segmentation/depth/normal, dilated ResNet-50 + DeepLabV3 heads"))
register_benchmark(_dense_spec(
    "cityscapes", "CityscapesDataset", {"segmentation": 7, "depth": 1}, 64,
    {"segmentation": [0.6906, 0.9154], "depth": [0.01282, 43.53]},
    "Cityscapes: 7-class segmentation/depth, dilated ResNet-50 + DeepLabV3 heads"))
register_benchmark(_office_spec("office-31", [0.8661, 0.9563, 0.9685]))
register_benchmark(_office_spec("office-home", [0.6559, 0.7960, 0.9047, 0.8000]))


__all__ = ["BenchmarkSetupError", "BenchmarkSpec", "OFFICE_CLASSES", "OFFICE_DOMAINS", "benchmark_names",
           "dense_process_preds", "get_benchmark", "register_benchmark"]
