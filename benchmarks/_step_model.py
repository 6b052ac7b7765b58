"""The measured part of ``benchmarks/step_cost.py``: the NYUv2 model, the methods, one training step per method
and its cost, run inside a worker process (the parent in ``step_cost.py`` starts the workers and writes the
table). Nothing here imports LibMTL at module level (the presets come from the method core, which needs only torch).
"""

from __future__ import annotations

import argparse
import platform
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from _measure import measure_steps, release_memory

from libmtl_repmtl.core.presets import parse_method

#: LibMTL weightings that manipulate gradients (each needs its rep_grad setting).
GRADIENT_METHODS = {"MGDA": False, "PCGrad": False, "GradVac": False, "CAGrad": False, "IMTL": False,
                    "GradNorm": False, "GradDrop": True}
LOSS_METHODS = {"EW": False, "UW": False, "DWA": False, "GLS": False, "RLW": False}
#: Weightings of LibMTL's git version (absent from the 1.1.5 release): measured where installed.
OPTIONAL_METHODS = ("Nash_MTL", "FairGrad", "DB_MTL")
#: The RepMTL settings measured beside its defaults: the presets of :mod:`libmtl_repmtl.core.presets`.
LOG_EW = parse_method("logEW").weight_args
PAPER = parse_method("RepMTL-paper").weight_args
#: Hyper-parameters of LibMTL's weightings (LibMTL's defaults), handed to every method as ``weight_args``.
RECIPE_ARGS: dict[str, Any] = {"T": 2.0, "alpha": 1.5, "mgda_gn": "none", "beta": 0.5, "leak": 0.0,
                               "calpha": 0.5, "rescale": 1, "dist": "Normal", "update_weights_every": 1,
                               "optim_niter": 20, "max_norm": 1.0, "FairGrad_alpha": 1.0, "DB_beta": 0.9,
                               "DB_beta_sigma": 0}
AMP_MODES = ("none", "bf16", "fp16")


@dataclass(frozen=True)
class Method:
    """One measured configuration: LibMTL weighting and architecture names, ``rep_grad``, extra weight_args."""

    weighting: str
    arch: str
    rep_grad: bool
    weight_args: tuple[tuple[str, Any], ...] = ()


METHODS: dict[str, Method] = {
    "EW": Method("EW", "HPS", False),
    "logEW": Method("RepMTL", "RepHPS", False, tuple(LOG_EW.items())),
    "RepMTL": Method("RepMTL", "RepHPS", False),
    "RepMTL-paper": Method("RepMTL", "RepHPS", False, tuple(PAPER.items())),
    "RepMTL+HPS": Method("RepMTL", "HPS", True),
    "naive": Method("naive", "HPS", True),
    **{m: Method(m, "HPS", rg) for m, rg in GRADIENT_METHODS.items()},
    **{m: Method(m, "HPS", rg) for m, rg in LOSS_METHODS.items() if m != "EW"},
    **{m: Method(m, "HPS", False) for m in OPTIONAL_METHODS},
}
DEFAULT_METHODS = ["EW", "RepMTL", "RepMTL+HPS", "naive", *GRADIENT_METHODS, "UW", "DWA", "GLS", "RLW"]
TASKS = {"segmentation": 13, "depth": 1, "normal": 3}
ROW_PREFIX = "ROW "


def parse_spec(spec: str) -> tuple[str, str]:
    """``"RepMTL@bf16"`` -> ``("RepMTL", "bf16")``; ``"EW"`` -> ``("EW", "none")``.

    Raises:
        ValueError: an unknown method or precision (the message lists the known ones).
    """
    name, _, amp = spec.partition("@")
    amp = amp or "none"
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r} in {spec!r}; available: {', '.join(METHODS)}")
    if amp not in AMP_MODES:
        raise ValueError(f"unknown precision {amp!r} in {spec!r}; write NAME, NAME@bf16 or NAME@fp16")
    return name, amp


# ----------------------------------------------------------------------------------------- worker
def _naive_weighting(base: type) -> type:
    import torch

    from libmtl_repmtl.core.config import LOG_EPS, RepMTLConfig
    from libmtl_repmtl.core.reference import materialised_csa, materialised_tsr

    class NaiveRepMTL(base):  # type: ignore[misc, valid-type]
        def backward(self, losses: torch.Tensor, **kwargs: Any) -> Any:
            cfg = RepMTLConfig.from_weight_args(kwargs)
            objectives = [torch.log(losses[t] + LOG_EPS) for t in range(self.task_num)]
            copies = [self.rep_tasks[t] for t in self.task_name]
            sal = [torch.autograd.grad(objectives[t], copies[t], create_graph=True)[0]
                   for t in range(self.task_num)]  # one pass per task
            total = (sum(objectives) + cfg.lambda_tsr * materialised_tsr(sal)
                     + cfg.lambda_csa * materialised_csa(sal, cfg.tau))
            total.backward()
            reps = self.rep if isinstance(self.rep, dict) else {t: self.rep for t in self.task_name}
            for tn, task in enumerate(self.task_name):  # one encoder backward per task
                reps[task].backward(copies[tn].grad, retain_graph=tn + 1 < self.task_num)
            return [1.0] * self.task_num

    return NaiveRepMTL


def _encoder_and_heads(variant: str) -> tuple[Any, Any]:
    """The NYUv2 model's parts (``libmtl_repmtl.models.resnet``, as the NYUv2 command builds them): the dilated
    ResNet encoder class (``variant``: ``resnet50``, or ``tiny`` with the same structure and few channels) and
    the three ASPP heads."""
    from libmtl_repmtl.models.resnet import deeplab_heads, dense_encoder_factory

    return dense_encoder_factory(variant, "none"), deeplab_heads(TASKS, variant)


def flop_floor(size: tuple[int, int], batch: int, variant: str = "resnet50") -> dict[str, float]:
    """Forward FLOPs of the encoder (``E``) and of all heads (``H``), counted by torch's ``FlopCounterMode`` on
    the meta device (shapes only: nothing is computed), and the cost floors they imply.

    A training step of EW costs ``3 (E + H)`` (forward, input and weight gradients). Any exact Rep-MTL step
    costs at least ``3 E + 6 H``: the encoder as in EW; in the heads the forward, the saliency pass (input
    gradients), one backward through the forward graph (input and weight gradients: the first-order term
    plus the regularisers' path through BatchNorm and the loss curvature) and the double backward through the
    saliency graph (one convolution for the output-gradient direction, one weight gradient per layer).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        encoder_class, heads = _encoder_and_heads(variant)
        encoder = encoder_class()
        x = torch.randn(batch, 3, *size)
    with torch.no_grad():
        with FlopCounterMode(display=False) as fc:
            z = encoder(x)
        e = float(fc.get_total_flops())
        with FlopCounterMode(display=False) as fc:
            for head in heads.values():
                head(z)
        h = float(fc.get_total_flops())
    return {"encoder_flops": e, "heads_flops": h, "ew_step_flops": 3 * (e + h),
            "repmtl_floor_flops": 3 * e + 6 * h, "floor_ratio": (3 * e + 6 * h) / (3 * (e + h))}


@dataclass
class _Context:
    """What every method of one worker shares: the device, LibMTL, the input batch and targets."""

    device: Any
    libmtl: Any
    data: dict[str, Any]
    size: tuple[int, int]
    device_name: str
    variant: str


def _context(device_name: str, threads: int, size: tuple[int, int], batch: int, variant: str) -> _Context:
    import torch
    import torch.nn.functional as F

    import libmtl_repmtl

    torch.set_num_threads(threads)
    libmtl_repmtl.register()  # compatibility patches for LibMTL 1.1.5 + plugin names
    import LibMTL

    device = torch.device(device_name)
    g = torch.Generator().manual_seed(0)
    h, w = size
    data = {"x": torch.randn(batch, 3, h, w, generator=g), "seg": torch.randint(-1, 13, (batch, h, w), generator=g),
            "depth": torch.rand(batch, 1, h, w, generator=g),
            "normal": F.normalize(torch.randn(batch, 3, h, w, generator=g), dim=1)}
    name = (f"{torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}" if device.type == "cuda"
            else f"CPU ({platform.processor() or platform.machine()})")
    return _Context(device, LibMTL, {k: v.to(device) for k, v in data.items()}, size, name, variant)


def _losses(preds: dict[str, Any], data: dict[str, Any]) -> Any:
    """The NYUv2 trainer's three losses, in float32, from the heads' outputs resized to the input."""
    import torch
    import torch.nn.functional as F

    size = data["seg"].shape[-2:]
    preds = {t: F.interpolate(p.float(), size=size, mode="bilinear", align_corners=True) for t, p in preds.items()}
    losses = torch.zeros(len(TASKS), device=data["x"].device)
    losses[0] = F.cross_entropy(preds["segmentation"], data["seg"], ignore_index=-1)
    valid = (data["depth"] != 0).float()
    losses[1] = ((preds["depth"] - data["depth"]).abs() * valid).sum() / valid.sum()
    n = F.normalize(preds["normal"], dim=1)
    losses[2] = (1 - (n * data["normal"]).sum(dim=1)).mean()
    return losses


def _libmtl_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("LibMTL")
    except metadata.PackageNotFoundError:
        return "of unknown version"


def _build_model(ctx: _Context, method: Method, weighting: type) -> Any:
    import numpy as np

    from libmtl_repmtl.libmtl.host import lookup

    architecture = lookup("architecture", method.arch)
    encoder_class, heads = _encoder_and_heads(ctx.variant)

    class MTLmodel(architecture, weighting):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__(list(TASKS), encoder_class, heads, method.rep_grad, False, ctx.device)
            self.init_param()

    model = MTLmodel().to(ctx.device)
    model.train()
    model.epoch = 2  # past the warm-up epochs of GradNorm / DWA
    model.train_loss_buffer = np.ones((len(TASKS), 3))
    return model


def _step_function(ctx: _Context, model: Any, amp: Any, weight_args: dict[str, Any]) -> Callable[[], None]:
    import torch

    from libmtl_repmtl.training.amp import make_grad_scaler, scaled_backward

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=1e-5)
    scaler = make_grad_scaler(amp)

    def step() -> None:
        with torch.autocast(amp.device_type, dtype=amp.dtype, enabled=amp.enabled):
            preds = model(ctx.data["x"])
        losses = _losses(preds, ctx.data)  # outside autocast: float32, as in the trainer
        optimizer.zero_grad()
        if scaler is None:
            model.backward(losses, **weight_args)
            optimizer.step()
        else:
            scaled_backward(model, losses, scaler, **weight_args)
            scaler.step(optimizer)
            scaler.update()

    return step


def measure_method(spec: str, ctx: _Context, steps: int, warmup: int) -> dict[str, Any]:
    """One row: ``{"method", "name", "amp", "device_name"}`` plus :func:`measure_steps`' figures, or a
    ``"skipped"`` reason (precision not available on the device, weighting not in the installed LibMTL)."""
    import torch

    from libmtl_repmtl.libmtl.host import UnknownMethodError, lookup, protocol
    from libmtl_repmtl.training.amp import AmpConfig

    name, amp_flag = parse_spec(spec)
    method = METHODS[name]
    row: dict[str, Any] = {"method": spec, "name": name, "amp": amp_flag, "device_name": ctx.device_name}
    try:
        amp = AmpConfig.from_flag(ctx.device, amp_flag)
    except ValueError as exc:
        return {**row, "skipped": str(exc)}
    try:
        base = lookup("weighting", "EW" if method.weighting == "naive" else method.weighting)
    except UnknownMethodError:
        if name not in OPTIONAL_METHODS:
            raise
        return {**row, "skipped": f"the installed LibMTL ({_libmtl_version()}) has no weighting {name}"}
    weighting = _naive_weighting(base) if method.weighting == "naive" else base
    release_memory(ctx.device)
    torch.manual_seed(0)
    model = _build_model(ctx, method, weighting)
    # LibMTL's own defaults for this weighting (the git version names some per method, e.g. GradVac_beta) over
    # the recipe's shared ones, then the method's settings.
    libmtl_args = protocol(base.__name__).weight_args if method.weighting not in ("naive", "RepMTL") else {}
    step = _step_function(ctx, model, amp, {**RECIPE_ARGS, **libmtl_args, **dict(method.weight_args)})
    try:
        return {**row, **measure_steps(step, ctx.device, steps, warmup)}
    finally:
        del step, model
        release_memory(ctx.device)


def worker(specs: list[str], args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    """Measure ``specs`` one after another in this process; a method that raises gives an ``"error"`` row."""
    ctx = _context(args.device, args.threads, tuple(args.size), args.batch, args.encoder)
    for spec in specs:
        try:
            yield measure_method(spec, ctx, args.steps, args.warmup)
        except Exception as exc:  # recorded in the table; the next method still runs
            release_memory(ctx.device)
            yield {"method": spec, "error": [f"{type(exc).__name__}: {exc}".splitlines()[0][:300]]}


