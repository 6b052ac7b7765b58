"""Office-31 and Office-Home: each domain is a task with its own batch (multi-input), one class label each.

Data: images under ``ROOT/<relpath>``, split lists ``<domain>_{train,val,test}.txt`` (LibMTL's published lists
ship with the package; ``list_dir`` overrides). Model: ResNet-18 trunk -> pool -> Linear(512, 512) -> BN ->
ReLU -> Dropout(0.5) as the shared encoder, one linear head per domain. Setup: Adam lr 1e-4, wd 1e-5, batch
64, 100 epochs, best epoch on validation. Accuracy is a fraction (the paper prints percent).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from libmtl_repmtl.benchmarks.base import Baseline, Benchmark, Loaders, Options, Published, Task, task_dict_of
from libmtl_repmtl.benchmarks.loading import LOADER_OPTIONS, make_loader, need_path
from libmtl_repmtl.benchmarks.registry import register
from libmtl_repmtl.data.office import OfficeDataset, check_image_size, office_domains, office_num_classes
from libmtl_repmtl.models.resnet import linear_heads, office_encoder_factory
from libmtl_repmtl.tasks.losses import ClsLoss
from libmtl_repmtl.tasks.metrics import AccMetric

#: The paper's single-task accuracies (percent), per domain.
BASELINES_PRINTED: dict[str, list[float]] = {
    "office-31": [86.61, 95.63, 96.85],
    "office-home": [65.59, 79.60, 90.47, 80.00],
}

#: Rep-MTL paper: Δp_task (Office-31: Table 5, Office-Home: Table 3; mean of 3 runs) and some mean rows.
PUBLISHED: dict[str, Published] = {
    "office-31": Published(
        delta_p_task={"EW": -0.61, "UW": -0.56, "DWA": -0.70, "MGDA": -0.27, "PCGrad": -0.68, "CAGrad": -1.14,
                      "Nash-MTL": 0.24, "DB-MTL": 1.05, "RepMTL": 1.31},
        metrics={"EW": {"amazon": [83.53], "dslr": [97.27], "webcam": [96.85]},
                 "DB-MTL": {"amazon": [85.12], "dslr": [98.63], "webcam": [98.51]},
                 "RepMTL": {"amazon": [85.93], "dslr": [98.54], "webcam": [98.67]}}),
    "office-home": Published(
        delta_p_task={"EW": -0.92, "UW": -0.98, "DWA": -1.26, "MGDA": -1.61, "PCGrad": -1.04, "CAGrad": -1.50,
                      "Nash-MTL": -0.08, "DB-MTL": 0.17, "RepMTL": 0.41},
        metrics={"EW": {"Art": [65.34], "Clipart": [78.04], "Product": [89.80], "Real_World": [79.50]},
                 "DB-MTL": {"Art": [67.42], "Clipart": [77.89], "Product": [90.43], "Real_World": [80.07]},
                 "RepMTL": {"Art": [67.40], "Clipart": [78.75], "Product": [90.37], "Real_World": [80.04]}}),
}


#: The options the Office builders read: the data folder, split lists, image size, encoder and its weights.
OPTIONS: dict[str, type] = {**LOADER_OPTIONS, "dataset_path": str, "list_dir": str, "image_size": int,
                            "encoder": str, "pretrained": str}


def _loaders(name: str) -> Callable[[Sequence[str], Options], dict[str, Loaders]]:
    def build(tasks: Sequence[str], opts: Options) -> dict[str, Loaders]:
        root = need_path(opts, name)
        out: dict[str, Loaders] = {}
        for split in ("train", "val", "test"):
            train = split == "train"
            out[split] = {t: make_loader(OfficeDataset(str(root), dataset=name, domain=t, split=split,
                                                       list_dir=opts.get("list_dir"),
                                                       image_size=opts["image_size"]),
                                         opts["train_bs"] if train else opts["test_bs"], train, opts)
                          for t in tasks}
        return out

    return build


def office_benchmark(name: str) -> Benchmark:
    """The :class:`Benchmark` of ``office-31`` or ``office-home`` (domains and classes from the reader)."""
    domains, classes = tuple(office_domains(name)), office_num_classes(name)
    tasks = {d: Task(("Acc",), (True,), ClsLoss, AccMetric, classes) for d in domains}
    baseline = Baseline(printed={d: [v] for d, v in zip(domains, BASELINES_PRINTED[name])},
                        percent={d: [True] for d in domains})
    return Benchmark(
        name=name, tasks=domains, multi_input=True, has_val=True,
        task_dict=task_dict_of(name, tasks), dataloaders=_loaders(name),
        encoder_class=lambda o: office_encoder_factory(o.get("encoder") or "resnet18", o.get("pretrained")),
        decoders=lambda ts, o: linear_heads(ts, classes, o.get("encoder") or "resnet18"),
        defaults={"epochs": 100, "train_bs": 64, "test_bs": 64, "optim": "adam", "lr": 1e-4, "weight_decay": 1e-5,
                  "scheduler": None, "encoder": "resnet18", "pretrained": "imagenet", "image_size": 224},
        options=OPTIONS, validate=lambda o: check_image_size(o["image_size"]),
        baseline=baseline, published=PUBLISHED[name],
        description=f"{name}: {len(domains)} domains as tasks (multi-input), ResNet-18 + MLP encoder")


OFFICE_31 = register(office_benchmark("office-31"))
OFFICE_HOME = register(office_benchmark("office-home"))
