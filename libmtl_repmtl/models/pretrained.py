"""ImageNet / file weights for the ResNet trunks, never downloaded.

``--pretrained`` takes:

* ``imagenet``: torchvision's ImageNet file from the torch hub cache (``torch.hub.get_dir()/checkpoints/``):
  ``resnet50-19c8e357.pth`` (V1, the file LibMTL uses) or ``resnet50-0676ba61.pth`` (V2) for ResNet-50,
  ``resnet18-f37072fd.pth`` or ``resnet18-5c106cde.pth`` for ResNet-18. Nothing is downloaded: when no file
  is there, :class:`PretrainedWeightsError` says which file names, the exact folder, and the alternatives.
* ``none``: random initialisation.
* a path: a ``torch.save``'d state dict of the trunk (torchvision key names, e.g. ``layer1.0.conv1.weight``;
  ``fc.*`` keys are ignored; a ``{"state_dict": ...}`` / ``{"model": ...}`` wrapper and a ``module.`` prefix
  are accepted). Keys and shapes are validated.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

#: torchvision weight file names, preferred first (V1 is the file LibMTL's examples load).
IMAGENET_FILES: dict[str, tuple[str, ...]] = {
    "resnet50": ("resnet50-19c8e357.pth", "resnet50-0676ba61.pth"),
    "resnet18": ("resnet18-f37072fd.pth", "resnet18-5c106cde.pth"),
}


class PretrainedWeightsError(RuntimeError):
    """Requested weights are absent or do not fit the model (the message says what and how to fix it)."""


def hub_checkpoint_dir() -> Path:
    """The folder where torchvision keeps downloaded weights: ``torch.hub.get_dir()/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_imagenet_file(arch: str) -> Path:
    """The local ImageNet weight file of ``arch`` (``resnet50`` or ``resnet18``).

    Raises:
        PretrainedWeightsError: no such file in :func:`hub_checkpoint_dir` (or ``arch`` has no ImageNet file).
    """
    if arch not in IMAGENET_FILES:
        raise PretrainedWeightsError(
            f"no ImageNet weights exist for the {arch!r} trunk (known: {sorted(IMAGENET_FILES)}); "
            "use --pretrained none or --pretrained PATH")
    folder = hub_checkpoint_dir()
    for name in IMAGENET_FILES[arch]:
        if (folder / name).is_file():
            return folder / name
    names = " or ".join(IMAGENET_FILES[arch])
    raise PretrainedWeightsError(
        f"--pretrained imagenet: the torchvision ImageNet weights of {arch} were not found, and they are never "
        f"downloaded. Put {names} into {folder} (the torch hub cache; set TORCH_HOME to move it), or pass "
        "--pretrained PATH (a state dict file of the trunk), or --pretrained none (random initialisation).")


def _unwrap(obj: object, source: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise PretrainedWeightsError(f"{source}: not a state dict (a mapping of parameter names to tensors)")
    out = {}
    for k, v in obj.items():
        k = str(k)
        out[k[len("module."):] if k.startswith("module.") else k] = v
    return out


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Load a state dict file on the CPU (tensors only; ``weights_only`` loading).

    Raises:
        PretrainedWeightsError: missing, unreadable or not a state dict.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise PretrainedWeightsError(
            f"--pretrained {path}: no such file. Pass an existing state dict file, 'imagenet' (torchvision's file "
            f"in {hub_checkpoint_dir()}) or 'none'.")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise PretrainedWeightsError(f"--pretrained {path}: cannot read it as a torch state dict ({exc})") from None
    return _unwrap(obj, str(path))


def load_trunk_weights(trunk: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Copy ``state`` into ``trunk`` (torchvision ResNet names; ``fc.*`` ignored), checking keys and shapes.

    Raises:
        PretrainedWeightsError: keys missing from / unknown to the trunk, or shapes that differ (the message
            lists a few of each).
    """
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    own = trunk.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s), e.g. {missing[:3]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[:3]}")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es), e.g. {shapes[:2]}")
        raise PretrainedWeightsError(
            f"--pretrained {source}: the weights do not fit the {type(trunk).__name__} trunk: " + "; ".join(parts)
            + ". Use a state dict of the same torchvision ResNet (keys like 'layer1.0.conv1.weight'), or "
            "--pretrained none.")
    with torch.no_grad():
        trunk.load_state_dict(state, strict=True)


def apply_pretrained(trunk: nn.Module, pretrained: str | os.PathLike[str] | None, arch: str) -> str:
    """Initialise ``trunk`` as ``--pretrained`` asks.

    Args:
        trunk: a torchvision-named ResNet trunk (``conv1``, ``bn1``, ``layer1`` ... ``layer4``).
        pretrained: ``"imagenet"``, ``"none"`` / ``None`` or a file path.
        arch: ``resnet50``, ``resnet18`` or ``tiny`` (which has no ImageNet weights).

    Returns:
        A description of what was loaded (``"none"`` or the file path), for the results file.
    """
    if pretrained is None or str(pretrained).lower() in {"none", ""}:
        return "none"
    if str(pretrained).lower() == "imagenet":
        path = find_imagenet_file(arch)
    else:
        path = Path(pretrained).expanduser()
    load_trunk_weights(trunk, read_state_dict(path), str(pretrained))
    return str(path)


__all__ = ["IMAGENET_FILES", "PretrainedWeightsError", "apply_pretrained", "find_imagenet_file",
           "hub_checkpoint_dir", "load_trunk_weights", "read_state_dict"]
