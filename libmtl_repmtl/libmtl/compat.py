"""Compatibility layer: LibMTL 1.1.5 (PyPI) on current torch / torchvision / Python.

Every patch cures one symptom. It is applied only when the installed LibMTL *shows* that symptom, found by a
small behavioural probe (never by a version string: the git checkout of LibMTL also says 1.1.5), and it is
idempotent (a patched function carries the attribute ``__libmtl_repmtl_patch__``; a second run finds the
marker, or finds the symptom gone, and does nothing). ``docs/compat.md`` lists them all.

Phases:

* pre-import (:func:`apply_pre_import_patches`): before ``LibMTL/__init__.py`` runs (it imports its
  submodules, which need these). The autoload hook runs them from its import finder.
* post-import (:func:`apply_post_import_patches`): on the imported LibMTL classes.

:func:`ensure_libmtl` does both around ``import LibMTL`` (with or without the autoload hook); import LibMTL
symbols through ``libmtl_repmtl.libmtl.bases``.

Device choice for LibMTL 1.1.5's ``Trainer`` (patch ``trainer-device``): the ``device=`` keyword of
``Trainer(...)``, else the environment variable ``LIBMTL_DEVICE`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``),
else ``auto`` (CUDA when available, else CPU). See :func:`resolve_device`.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: Environment variable naming the device of LibMTL's ``Trainer`` (``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``).
DEVICE_ENV = "LIBMTL_DEVICE"

#: Attribute set on every function/descriptor this module installs (value: the patch name).
MARKER = "__libmtl_repmtl_patch__"


class CompatWarning(UserWarning):
    """A compatibility patch could not be checked or applied (the message says which and why)."""


class MissingDependencyError(ImportError):
    """LibMTL needs a package that is not installed (the message names it and the ``pip`` command)."""


@dataclass(frozen=True)
class PatchInfo:
    """One compatibility patch: its name, phase, and the symptom it cures (the first docstring line)."""

    name: str
    phase: str
    symptom: str


#: patch name -> "applied" | "not needed" | "probe failed: ..." (what happened in this process).
_STATE: dict[str, str] = {}
#: patch name -> the LibMTL module it was checked against (probes run once per imported LibMTL).
_CHECKED: dict[str, Any] = {}


# ============================================================================================ helpers
def _marked(obj: Any, name: str) -> bool:
    return getattr(obj, MARKER, None) == name


def _mark(obj: Any, name: str) -> Any:
    setattr(obj, MARKER, name)
    return obj


def resolve_device(spec: Any = None) -> Any:
    """The ``torch.device`` for LibMTL's ``Trainer``.

    Args:
        spec: ``None`` (use ``$LIBMTL_DEVICE``, default ``auto``), ``"auto"`` (CUDA when available, else
            CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``, any ``torch.device`` string, or a ``torch.device``.

    Raises:
        ValueError: malformed device string, or CUDA requested where it is not available (the message says
            how to choose another device).
    """
    import torch

    if spec is None:
        spec = os.environ.get(DEVICE_ENV, "").strip() or "auto"
    if isinstance(spec, torch.device):
        device = spec
    else:
        text = str(spec).strip().lower()
        if text == "auto":
            return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
        try:
            device = torch.device(text)
        except RuntimeError as exc:
            raise ValueError(f"invalid device {spec!r} (use auto, cpu, cuda or cuda:N; ${DEVICE_ENV})") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r} requested but CUDA is not available; use device='cpu' "
                             f"or {DEVICE_ENV}=cpu (or auto)")
        index = 0 if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r} requested but only {torch.cuda.device_count()} CUDA "
                             f"device(s) are visible")
        device = torch.device("cuda", index)
    return device


#: Top-level module -> (what in LibMTL imports it when ``import LibMTL`` runs, the ``pip install`` arguments).
#: LibMTL declares none of them (its git version's requirements.txt lists them, its setup.py does not).
UNDECLARED_DEPENDENCIES: dict[str, tuple[str, str]] = {
    "scipy": ("its CAGrad (and the git version's FairGrad) weighting imports scipy.optimize",
              "'scipy>=1.8'  (libmtl_repmtl declares it; a --no-deps install skips it)"),
    "cvxpy": ("the git version's Trainer and Nash_MTL weighting import cvxpy",
              "'libmtl_repmtl[libmtl-git]'  (or: pip install cvxpy ecos)"),
    "qpsolvers": ("the git version's UPGrad weighting imports qpsolvers",
                  "'libmtl_repmtl[libmtl-git]'  (or: pip install qpsolvers quadprog)"),
    "torch_geometric": ("the git version's Trainer imports torch_geometric",
                        "'libmtl_repmtl[libmtl-git]'  (or: pip install torch-geometric)"),
}


def explain_import_error(exc: BaseException) -> MissingDependencyError | None:
    """A clear :class:`MissingDependencyError` for ``import LibMTL`` failing on a missing dependency, else None.

    Symptom: ``import LibMTL`` fails with ``No module named 'scipy'`` (1.1.5 and the git version) or
    ``'cvxpy'``, ``'qpsolvers'``, ``'torch_geometric'`` (the git version). Cause: LibMTL imports them at
    package import but does not declare them. Cure: this package declares scipy, and its extra
    ``libmtl_repmtl[libmtl-git]`` installs the git version's; where one is missing anyway, say which, why and
    the ``pip install`` command (:data:`UNDECLARED_DEPENDENCIES`).
    """
    if not (isinstance(exc, ModuleNotFoundError) and exc.name):
        return None
    top = exc.name.split(".")[0]
    if top not in UNDECLARED_DEPENDENCIES:
        return None
    why, install = UNDECLARED_DEPENDENCIES[top]
    return MissingDependencyError(
        f"LibMTL needs {top} ({why} when LibMTL is imported), but {exc.name!r} is not installed. "
        f"Install it: pip install {install}.", name=exc.name)


# ============================================================================================ pre-import
def _ensure_torchvision_models_utils() -> bool:
    """Symptom: ``import LibMTL`` fails with ``No module named 'torchvision.models.utils'``.

    Cause: torchvision 0.13 removed ``torchvision.models.utils``; LibMTL 1.1.5's ``LibMTL.model`` imports
    ``load_state_dict_from_url`` from it. Cure: provide that module, backed by ``torch.hub``.
    Detected by trying the import. Returns True when the shim was installed now.
    """
    try:
        importlib.import_module("torchvision.models.utils")
        return False
    except ImportError:
        pass
    import torch.hub
    import torchvision.models

    shim = types.ModuleType("torchvision.models.utils")
    shim.load_state_dict_from_url = torch.hub.load_state_dict_from_url  # type: ignore[attr-defined]
    shim.__doc__ = "Shim installed by libmtl_repmtl: torchvision no longer ships this module."
    _mark(shim, "torchvision-models-utils")
    sys.modules["torchvision.models.utils"] = shim
    torchvision.models.utils = shim  # type: ignore[attr-defined]
    return True


# ============================================================================================ post-import
class _TrainerDevice:
    """Data descriptor installed as ``LibMTL.Trainer.device`` by the ``trainer-device`` patch.

    While the patched ``__init__`` runs, the hard-coded ``torch.device('cuda:0')`` it assigns is replaced by the
    resolved device; afterwards ``trainer.device = x`` stores ``x`` as given.
    """

    _value = "_libmtl_repmtl_device"
    _forced = "_libmtl_repmtl_forced_device"

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        try:
            return obj.__dict__[self._value]
        except KeyError:
            raise AttributeError("device") from None

    def __set__(self, obj: Any, value: Any) -> None:
        import torch

        forced = obj.__dict__.get(self._forced)
        obj.__dict__[self._value] = forced if forced is not None else torch.device(value)


def _trainer_probe_device(trainer_cls: type) -> Any:
    """The device ``trainer_cls.__init__`` picks while ``torch.cuda.is_available()`` says False."""
    import torch

    class _Seen(Exception):
        pass

    class _Probe(trainer_cls):  # type: ignore[misc, valid-type]
        def _prepare_model(self, *args: Any, **kwargs: Any) -> None:
            raise _Seen(self.device)

    real = torch.cuda.is_available
    torch.cuda.is_available = lambda: False  # type: ignore[assignment]
    try:
        try:
            _Probe({}, None, None, None, {}, False, False, {"optim": "sgd"}, None)
        except _Seen as seen:
            return seen.args[0]
    finally:
        torch.cuda.is_available = real  # type: ignore[assignment]
    raise RuntimeError("Trainer.__init__ did not reach _prepare_model")


def _patch_trainer_device(libmtl: Any) -> bool:
    """Symptom: ``Trainer(...)`` fails on a machine without CUDA (``Torch not compiled with CUDA enabled`` /
    ``no NVIDIA driver``), and there is no way to pick a GPU other than ``cuda:0`` or to force the CPU.

    Cause: LibMTL 1.1.5's ``Trainer.__init__`` hard-codes ``self.device = torch.device('cuda:0')``.
    Cure: ``Trainer.__init__`` accepts ``device=`` (``auto``/``cpu``/``cuda``/``cuda:N``/``torch.device``),
    else reads ``$LIBMTL_DEVICE``, else uses CUDA when available and the CPU otherwise
    (:func:`resolve_device`). The model, the losses tensor and the weighting parameters all follow, since
    LibMTL creates them with ``self.device``.
    Detected by constructing a stub Trainer while ``torch.cuda.is_available()`` returns False: the symptom
    is present when it still picks a CUDA device.
    """
    trainer_cls = libmtl.trainer.Trainer
    if _marked(trainer_cls.__dict__.get("__init__"), "trainer-device"):
        return False
    if getattr(_trainer_probe_device(trainer_cls), "type", None) != "cuda":
        return False
    original = trainer_cls.__init__

    def __init__(self: Any, *args: Any, device: Any = None, **kwargs: Any) -> None:
        self.__dict__[_TrainerDevice._forced] = resolve_device(device)
        try:
            original(self, *args, **kwargs)
        finally:
            self.__dict__.pop(_TrainerDevice._forced, None)

    __init__.__doc__ = (original.__doc__ or "") + (
        "\n\nPatched by libmtl_repmtl: ``device=`` keyword (else $LIBMTL_DEVICE, else CUDA if available, "
        "else CPU) instead of the hard-coded cuda:0.")
    __init__.__wrapped__ = original  # type: ignore[attr-defined]
    trainer_cls.__init__ = _mark(__init__, "trainer-device")
    trainer_cls.device = _mark(_TrainerDevice(), "trainer-device")
    return True


class _BrokenSample(Exception):
    """Raised by the probe's iterator: a data error that ``_process_data`` must not swallow."""


def _process_data_symptom(trainer_cls: type) -> bool:
    import torch

    fake = types.SimpleNamespace(device=torch.device("cpu"), multi_input=True, task_name=[])
    batches = [(torch.zeros(1), torch.zeros(1))]
    try:
        trainer_cls._process_data(fake, [batches, iter(batches)])
    except AttributeError as exc:
        return "next" in str(exc)

    def broken() -> Any:
        raise _BrokenSample("probe")
        yield  # a generator

    try:
        trainer_cls._process_data(fake, [batches, broken()])
    except _BrokenSample:
        return False
    return True  # the data error was swallowed and the loader restarted


def _patch_process_data(libmtl: Any) -> bool:
    """Symptom: training fails at the first batch with ``AttributeError: '..._DataLoaderIter' object has no
    attribute 'next'`` (LibMTL 1.1.5), or an error raised by the dataset or the collate function is silently
    swallowed and the loader restarted from its first batch (1.1.5 and the git version).

    Cause: LibMTL 1.1.5's ``Trainer._process_data`` calls ``iterator.next()`` (Python 2); Python 3 iterators
    only have ``__next__``. Its bare ``except:`` around the call (kept by the git version, which calls
    ``next(...)``) treats *any* error as "iterator exhausted".
    Cure: ``next(iterator)``, restarting the loader on ``StopIteration`` only; data and labels (a tensor or a
    task -> tensor dict) are moved to ``self.device``.
    Detected by calling ``_process_data`` on a stub with a one-batch Python iterator, then with an iterator
    whose first item raises.
    """
    trainer_cls = libmtl.trainer.Trainer
    if _marked(trainer_cls.__dict__.get("_process_data"), "process-data-next"):
        return False
    if not _process_data_symptom(trainer_cls):
        return False

    def _process_data(self: Any, loader: list[Any]) -> tuple[Any, Any]:
        try:
            data, label = next(loader[1])
        except StopIteration:
            loader[1] = iter(loader[0])
            data, label = next(loader[1])
        non_blocking = getattr(self.device, "type", str(self.device)) == "cuda"
        data = data.to(self.device, non_blocking=non_blocking)
        if isinstance(label, dict):
            label = {k: (v.to(self.device, non_blocking=non_blocking) if hasattr(v, "to") else v)
                     for k, v in label.items()}
        elif hasattr(label, "to"):
            label = label.to(self.device, non_blocking=non_blocking)
        return data, label

    _process_data.__doc__ = "Next batch (restarting the loader when exhausted), on ``self.device`` (libmtl_repmtl)."
    trainer_cls._process_data = _mark(_process_data, "process-data-next")
    return True


def _tiny_parts(libmtl: Any) -> tuple[Any, Any]:
    import torch
    from torch import nn

    weighting_base = libmtl.weighting.abstract_weighting.AbsWeighting

    class _Holder(weighting_base):  # type: ignore[misc, valid-type]
        def __init__(self, dtype: Any = torch.float32) -> None:
            super().__init__()
            self.encoder = nn.Linear(2, 2).to(dtype)
            self.device = torch.device("cpu")

        def get_share_params(self) -> Any:
            return self.encoder.parameters()

    return _Holder, torch


def _patch_reset_grad(libmtl: Any) -> bool:
    """Symptom: gradient-manipulation weightings (PCGrad, GradVac, CAGrad, MGDA, IMTL, GradNorm with
    parameter gradients) fail with ``AttributeError: 'NoneType' object has no attribute 'data'`` in
    ``AbsWeighting._reset_grad``.

    Cause: since torch 2.0, ``zero_grad()`` sets ``.grad`` to ``None`` by default; LibMTL 1.1.5's
    ``Trainer.train`` and ``zero_grad_share_params`` call it, and ``_reset_grad`` then assigns
    ``param.grad.data = ...``. Cure: ``_reset_grad`` copies the new gradient into ``.grad``, allocating it
    (with the parameter's dtype and device) where it is ``None``.
    Detected by calling ``_reset_grad`` on a stub whose shared parameters have no gradient.
    """
    base = libmtl.weighting.abstract_weighting.AbsWeighting
    if _marked(base.__dict__.get("_reset_grad"), "reset-grad-none"):
        return False
    holder_cls, torch = _tiny_parts(libmtl)
    holder = holder_cls()
    holder._compute_grad_dim()
    try:
        holder._reset_grad(torch.zeros(holder.grad_dim))
        return False
    except AttributeError:
        pass

    def _reset_grad(self: Any, new_grads: Any) -> None:
        import torch

        start = 0
        with torch.no_grad():
            for param in self.get_share_params():
                n = param.numel()
                new = new_grads[start:start + n].reshape(param.shape).to(dtype=param.dtype, device=param.device)
                start += n
                if param.grad is None:
                    param.grad = new.clone()
                else:
                    param.grad.detach_()
                    param.grad.copy_(new)

    _reset_grad.__doc__ = "Set the shared parameters' gradients to ``new_grads`` (allocated where None; libmtl_repmtl)."
    base._reset_grad = _mark(_reset_grad, "reset-grad-none")
    return True


def _patch_zero_grad_share_params(libmtl: Any) -> bool:
    """Symptom: after a gradient weighting's per-task gradients (``_compute_grad``), the shared parameters'
    ``.grad`` are ``None`` (freed and re-allocated for every task at every step), not zero tensors.

    Cause: ``AbsArchitecture.zero_grad_share_params`` calls ``self.encoder.zero_grad()``, which sets
    gradients to ``None`` since torch 2.0 (LibMTL 1.1.5 was written for the zeroing behaviour).
    Cure: zero the shared parameters' gradients in place (``get_share_params()``), keeping the tensors.
    Architectures that override the method (MTAN, MMoE, PLE) keep theirs; ``reset-grad-none`` makes that
    harmless. Detected by calling it on a stub whose shared parameter has a gradient.
    """
    base = libmtl.architecture.abstract_arch.AbsArchitecture
    if _marked(base.__dict__.get("zero_grad_share_params"), "zero-grad-share-params"):
        return False
    holder_cls, torch = _tiny_parts(libmtl)
    holder = holder_cls()
    for p in holder.encoder.parameters():
        p.grad = torch.ones_like(p)
    base.zero_grad_share_params(holder)
    if all(p.grad is not None for p in holder.encoder.parameters()):
        return False

    def zero_grad_share_params(self: Any) -> None:
        for param in self.get_share_params():
            if param.grad is not None:
                param.grad.detach_()
                param.grad.zero_()

    zero_grad_share_params.__doc__ = "Zero the shared parameters' gradients in place (libmtl_repmtl)."
    base.zero_grad_share_params = _mark(zero_grad_share_params, "zero-grad-share-params")
    return True


def _patch_grad2vec(libmtl: Any) -> bool:
    """Symptom: per-task gradients of the shared parameters are gathered in a float32 CPU tensor whatever the
    parameters' device and dtype (a device -> host -> device round trip per task and step on GPU; float64
    models lose precision).

    Cause: ``AbsWeighting._grad2vec`` builds ``torch.zeros(self.grad_dim)`` (default dtype, CPU).
    Cure: build it with the shared parameters' dtype and device.
    Detected by calling ``_grad2vec`` on a stub with float64 parameters.
    """
    base = libmtl.weighting.abstract_weighting.AbsWeighting
    if _marked(base.__dict__.get("_grad2vec"), "grad2vec-device"):
        return False
    holder_cls, torch = _tiny_parts(libmtl)
    holder = holder_cls(torch.float64)
    for p in holder.encoder.parameters():
        p.grad = torch.ones_like(p)
    holder._compute_grad_dim()
    if holder._grad2vec().dtype == torch.float64:
        return False

    def _grad2vec(self: Any) -> Any:
        import torch

        params = list(self.get_share_params())
        like = params[0] if params else torch.zeros(0)
        grad = torch.zeros(self.grad_dim, dtype=like.dtype, device=like.device)
        start = 0
        for param in params:
            n = param.numel()
            if param.grad is not None:
                grad[start:start + n] = param.grad.detach().reshape(-1)
            start += n
        return grad

    _grad2vec.__doc__ = "Flatten the shared parameters' gradients (their dtype and device; libmtl_repmtl)."
    base._grad2vec = _mark(_grad2vec, "grad2vec-device")
    return True


def _same_rep_symptom(libmtl: Any) -> bool:
    import torch
    from torch import nn

    arch = libmtl.architecture.abstract_arch.AbsArchitecture
    probe = arch(["a", "b"], None, nn.ModuleDict({"a": nn.Identity(), "b": nn.Identity()}), True, False,
                 torch.device("cpu"))
    probe.encoder = nn.Linear(2, 2)
    with torch.enable_grad():
        probe(torch.zeros(1, 2))
    return isinstance(probe.rep, dict)


def _patch_same_rep(libmtl: Any) -> bool:
    """Symptom: single-input models with ``rep_grad=True`` (e.g. HPS with GradDrop, or ``--rep_grad`` with
    MGDA/IMTL/GradNorm) backpropagate through the shared encoder once per task, and ``self.rep`` is a
    task -> tensor dict holding the same tensor T times.

    Cause: ``AbsArchitecture.forward`` computes ``same_rep = isinstance(s_rep, list) and not multi_input``:
    the test is inverted (one shared tensor should mean ``same_rep=True``).
    Cure: ``same_rep`` is True when the encoder returns one tensor for all tasks of a single-input problem,
    so ``self.rep`` is that one tensor and the encoder is traversed once.
    Detected by a forward pass of a stub architecture with ``rep_grad=True``.
    """
    arch = libmtl.architecture.abstract_arch.AbsArchitecture
    if _marked(arch.__dict__.get("forward"), "same-rep"):
        return False
    if not _same_rep_symptom(libmtl):
        return False

    def forward(self: Any, inputs: Any, task_name: str | None = None) -> dict[str, Any]:
        out = {}
        s_rep = self.encoder(inputs)
        per_task = isinstance(s_rep, list)
        same_rep = not per_task and not self.multi_input
        for tn, task in enumerate(self.task_name):
            if task_name is not None and task != task_name:
                continue
            rep = s_rep[tn] if per_task else s_rep
            out[task] = self.decoders[task](self._prepare_rep(rep, task, same_rep))
        return out

    forward.__doc__ = (arch.forward.__doc__ or "") + "\n\nPatched by libmtl_repmtl: same_rep test corrected."
    arch.forward = _mark(forward, "same-rep")
    return True


def _cagrad_symptom(libmtl: Any) -> bool:
    import torch
    from torch import nn

    cagrad = libmtl.weighting.CAGrad
    hps = libmtl.architecture.HPS

    class _Probe(hps, cagrad):  # type: ignore[misc, valid-type]
        pass

    model = _Probe(["a", "b"], lambda: nn.Linear(2, 2), nn.ModuleDict({"a": nn.Linear(2, 1), "b": nn.Linear(2, 1)}),
                   False, False, torch.device("cpu"))
    model.init_param()
    with torch.enable_grad():
        out = model(torch.ones(3, 2))
        losses = torch.stack([out["a"].pow(2).mean(), out["b"].pow(2).mean()])
        try:
            model.backward(losses, calpha=0.5, rescale=1)
        except ValueError as exc:
            return "reshape" in str(exc) or "shape" in str(exc)
        except AttributeError:
            return False  # another symptom (reset-grad-none), cured separately
    return False


def _patch_cagrad_task_count(libmtl: Any) -> bool:
    """Symptom: CAGrad fails with ``ValueError: cannot reshape array of size 2 into shape (1,3)`` unless the
    problem has exactly 3 tasks.

    Cause: LibMTL 1.1.5's ``CAGrad.backward`` hard-codes ``x.reshape(1,3)`` / ``b.reshape(3,1)`` in the
    objective it minimises over the task-weight simplex. Cure: the same objective,
    ``w^T G b + c * sqrt(w^T G w + 1e-8)`` (``G`` the task-gradient Gram matrix, ``b`` uniform weights,
    ``c = calpha * ||g0||``), for any number of tasks, then the same update and rescaling.
    Detected by one CAGrad step of a stub 2-task model.
    """
    cagrad = libmtl.weighting.CAGrad
    if _marked(cagrad.__dict__.get("backward"), "cagrad-task-count"):
        return False
    if not _cagrad_symptom(libmtl):
        return False

    def backward(self: Any, losses: Any, **kwargs: Any) -> Any:
        import numpy as np
        import torch
        from scipy.optimize import minimize

        calpha, rescale = kwargs["calpha"], kwargs["rescale"]
        if self.rep_grad:
            raise ValueError("No support method CAGrad with representation gradients (rep_grad=True)")
        divisor = {0: 1.0, 1: 1.0 + calpha ** 2, 2: 1.0 + calpha}.get(rescale)
        if divisor is None:
            raise ValueError(f"No support rescale type {rescale}")
        self._compute_grad_dim()
        grads = self._compute_grad(losses, mode="backward")  # (T, D)
        gram = torch.matmul(grads, grads.t()).detach().cpu().double().numpy()
        n = self.task_num
        uniform = np.full(n, 1.0 / n)
        c = float(calpha * np.sqrt(gram.mean() + 1e-8) + 1e-8)
        gram_b = gram @ uniform

        def objective(w: Any) -> float:
            return float(w @ gram_b + c * np.sqrt(w @ gram @ w + 1e-8))

        res = minimize(objective, uniform, bounds=[(0.0, 1.0)] * n,
                       constraints=({"type": "eq", "fun": lambda w: 1.0 - np.sum(w)},))
        weights = np.asarray(res.x, dtype=float)
        ww = torch.as_tensor(weights, dtype=grads.dtype, device=grads.device)
        gw = (grads * ww.view(-1, 1)).sum(0)
        lmbda = c / (gw.norm() + 1e-8)
        self._reset_grad((grads.mean(0) + lmbda * gw) / divisor)
        return weights

    backward.__doc__ = (cagrad.backward.__doc__ or "") + "\n\nPatched by libmtl_repmtl: any number of tasks."
    cagrad.backward = _mark(backward, "cagrad-task-count")
    return True


# ============================================================================================ registry
_PRE: list[tuple[str, Callable[[], bool]]] = [
    ("torchvision-models-utils", _ensure_torchvision_models_utils),
]
# Order matters: the CAGrad probe runs a training step, so the gradient patches come first.
_POST: list[tuple[str, Callable[[Any], bool]]] = [
    ("trainer-device", _patch_trainer_device),
    ("process-data-next", _patch_process_data),
    ("reset-grad-none", _patch_reset_grad),
    ("zero-grad-share-params", _patch_zero_grad_share_params),
    ("grad2vec-device", _patch_grad2vec),
    ("same-rep", _patch_same_rep),
    ("cagrad-task-count", _patch_cagrad_task_count),
]


def _run(name: str, fn: Callable[..., bool], *args: Any) -> bool:
    try:
        applied = bool(fn(*args))
    except Exception as exc:  # a probe on an unexpected LibMTL: report, leave LibMTL as it is
        _STATE[name] = f"probe failed: {type(exc).__name__}: {exc}"
        warnings.warn(f"libmtl_repmtl: compatibility patch {name!r} could not be checked "
                      f"({type(exc).__name__}: {exc}); LibMTL is left unpatched there. "
                      f"See docs/compat.md.", CompatWarning, stacklevel=3)
        return False
    if applied:
        _STATE[name] = "applied"
    else:
        _STATE.setdefault(name, "not needed")
    return applied


def apply_pre_import_patches() -> dict[str, bool]:
    """Apply the patches needed before ``LibMTL/__init__.py`` runs. Returns name -> applied now."""
    return {name: _run(name, fn) for name, fn in _PRE}


def apply_post_import_patches(libmtl: Any | None = None) -> dict[str, bool]:
    """Apply the patches on LibMTL's classes (``libmtl``: the imported package; default ``sys.modules``).

    Returns name -> applied now (False: not needed, already applied, or the probe failed with a warning).
    """
    if libmtl is None:
        libmtl = sys.modules["LibMTL"]
    for sub in ("trainer", "weighting", "architecture", "weighting.abstract_weighting",
                "architecture.abstract_arch", "config"):
        importlib.import_module(f"LibMTL.{sub}")
    result = {}
    for name, fn in _POST:
        if _CHECKED.get(name) is libmtl:  # probed already for this LibMTL: nothing to do
            result[name] = False
            continue
        result[name] = _run(name, fn, libmtl)
        _CHECKED[name] = libmtl
    return result


def patches() -> list[PatchInfo]:
    """Every patch this module knows, in application order."""
    out = []
    for phase, table in (("pre-import", _PRE), ("post-import", _POST)):
        for name, fn in table:
            doc = (fn.__doc__ or "").strip().splitlines()
            out.append(PatchInfo(name, phase, doc[0] if doc else ""))
    return out


def patch_state() -> dict[str, str]:
    """What happened to each patch in this process: ``applied``, ``not needed``, ``probe failed: ...``."""
    return dict(_STATE)


def ensure_libmtl() -> types.ModuleType:
    """Import LibMTL with the pre-import patches applied, then apply the post-import patches.

    Returns the ``LibMTL`` module. Raises :class:`MissingDependencyError` (an ImportError) when LibMTL needs a
    package that is missing (scipy).
    """
    apply_pre_import_patches()
    try:
        libmtl = importlib.import_module("LibMTL")
    except ImportError as exc:
        clear = explain_import_error(exc)
        if clear is not None:
            raise clear from exc
        raise
    apply_post_import_patches(libmtl)
    return libmtl


__all__ = [
    "DEVICE_ENV", "MARKER", "CompatWarning", "MissingDependencyError", "PatchInfo", "apply_post_import_patches",
    "apply_pre_import_patches", "ensure_libmtl", "explain_import_error", "patch_state", "patches",
    "resolve_device",
]
