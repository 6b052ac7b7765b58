"""What the installed LibMTL accepts and how its ``Trainer`` drives each weighting, found by behaviour.

LibMTL 1.1.5 (PyPI) and LibMTL's git version both say ``1.1.5``, so nothing here reads a version string.
Every fact is observed on the imported LibMTL and cached per imported ``LibMTL.config`` module:

* :func:`accepted_names`: the ``--weighting`` / ``--arch`` names LibMTL's own ``prepare_args`` accepts.
  Candidates are the string constants of its code and the classes of ``LibMTL.weighting`` /
  ``LibMTL.architecture``; a candidate is accepted unless ``prepare_args`` rejects it with the same error it
  gives an invented name. This finds names that are not classes: ``DIY`` (your own architecture class) and,
  in the git version, the bilevel methods ``MOML``, ``FORUM``, ``AutoLambda``.
* :func:`bilevel_methods`: the names ``Trainer.__init__`` declares as bilevel (``self.bilevel_methods`` of
  the git version; none in 1.1.5), seen on a stub construction that stops before the model is built.
* :func:`trainer_takes_names`: ``Trainer(weighting="EW", architecture="HPS")`` (git version) or classes
  (1.1.5), seen by building a model with ``Trainer._prepare_model`` on a stub.
* :func:`protocol`: per weighting, what a training loop must do for it (:class:`WeightingProtocol`).

Use these through :mod:`libmtl_repmtl.libmtl.host` (``host.available``, ``host.protocol``, ...).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import random
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from libmtl_repmtl.libmtl import compat

#: Name ``prepare_args`` is probed with to learn its "unknown method" error.
_SENTINEL = "LibmtlRepmtlNoSuchMethod"
#: The flag (``argparse`` dest) of each kind, and the built-in that stands in for the other kind in a probe.
_DEST = {"weighting": "weighting", "architecture": "arch"}
_PLAIN = {"weighting": "EW", "architecture": "HPS"}
#: Most loss samples a weighting's ``backward`` is probed with.
MAX_LOSS_SAMPLES = 4

_cache: dict[str, Any] = {}


@dataclass(frozen=True)
class WeightingProtocol:
    """How LibMTL's ``Trainer`` drives one weighting (what our trainers must reproduce or refuse).

    Attributes:
        name: the ``--weighting`` name.
        has_class: ``LibMTL.weighting.<name>`` is a weighting class (False for bilevel methods).
        model_weighting: the class the model is built with (``name`` itself; ``EW`` for bilevel methods).
        loss_samples: how many loss vectors ``backward`` takes. 1: ``losses`` has shape ``(T,)``; k > 1: shape
            ``(k, T)``, row i computed on its own freshly drawn batch (MoDo, SDMGrad: 3).
        update_after_step: a model method to call after ``optimizer.step()`` with the task losses recomputed
            without gradient on the same batch, shape ``(T,)`` (FAMO: ``"update_w"``), else None.
        bilevel: run by the Trainer itself (``Trainer.train_bilevel``): inner and outer batches of half the
            batch size, softmax task weights ``Trainer.tw`` with their own optimiser (``outer_lr``), and the
            method's flags (``--outer_lr``, ``--inner_lr``, ``--inner_step``, ``--FORUM_phi``).
        weight_args: what ``prepare_args`` puts into ``kwargs['weight_args']`` with LibMTL's default flags.
        note: why a probe could not decide (then the defaults above are assumed), else ``""``.
    """

    name: str
    has_class: bool
    model_weighting: str
    loss_samples: int = 1
    update_after_step: str | None = None
    bilevel: bool = False
    weight_args: dict[str, Any] = field(default_factory=dict)
    note: str = ""


# ============================================================================================ helpers
def _config() -> Any:
    compat.ensure_libmtl()
    return sys.modules["LibMTL.config"]


def _cached(key: str, make: Any) -> Any:
    config = _config()
    slot = _cache.get(key)
    if slot is None or slot[0] is not config:
        slot = (config, make(config))
        _cache[key] = slot
    return slot[1]


def _original_prepare_args(config: Any) -> Any:
    fn = config.prepare_args
    while hasattr(fn, "__wrapped__"):
        fn = fn.__wrapped__
    return fn


def default_params(config: Any | None = None) -> argparse.Namespace:
    """LibMTL's command-line defaults (``LibMTL_args`` parsed from no arguments, not from ``sys.argv``)."""
    config = config if config is not None else _config()
    return argparse.ArgumentParser.parse_known_args(config.LibMTL_args, [])[0]


def _prepare(config: Any, **names: str) -> tuple[Any, BaseException | None]:
    """Call LibMTL's own ``prepare_args`` on the defaults with ``names``; (kwargs or None, error or None)."""
    params = copy.copy(default_params(config))
    for key, value in names.items():
        setattr(params, key, value)
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            return _original_prepare_args(config)(params)[0], None
        except Exception as exc:  # prepare_args raises ValueError, or e.g. TypeError on a missing flag value
            return None, exc


def _string_constants(code: Any) -> set[str]:
    out: set[str] = set()
    for const in code.co_consts:
        if isinstance(const, str):
            out.add(const)
        elif isinstance(const, (tuple, frozenset)):
            out |= {c for c in const if isinstance(c, str)}
        elif hasattr(const, "co_consts"):
            out |= _string_constants(const)
    return out


def _classes(kind: str) -> list[str]:
    mod = sys.modules[f"LibMTL.{kind}"]
    base = (mod.abstract_weighting.AbsWeighting if kind == "weighting" else mod.abstract_arch.AbsArchitecture)
    return sorted(n for n, v in vars(mod).items() if isinstance(v, type) and issubclass(v, base) and v is not base)


# ============================================================================================ names
def _accepted(config: Any) -> dict[str, list[str]]:
    code = getattr(_original_prepare_args(config), "__code__", None)
    constants = _string_constants(code) if code is not None else set()
    out: dict[str, list[str]] = {}
    for kind, dest in _DEST.items():
        other = {d: _PLAIN[k] for k, d in _DEST.items() if k != kind}
        _, unknown = _prepare(config, **{dest: _SENTINEL}, **other)
        template = str(unknown) if isinstance(unknown, ValueError) else None
        candidates = {c for c in constants | set(_classes(kind)) if c.isidentifier() and not c.startswith("_")}
        names = []
        for cand in sorted(candidates):
            _, err = _prepare(config, **{dest: cand}, **other)
            rejected = template is not None and isinstance(err, ValueError) and \
                str(err) == template.replace(_SENTINEL, cand)
            if not rejected:
                names.append(cand)
        out[kind] = names
    return out


def accepted_names(kind: str) -> list[str]:
    """The names LibMTL's own ``prepare_args`` accepts for ``kind`` (plugins not included), sorted."""
    return list(_cached("accepted", _accepted)[kind])


# ============================================================================================ Trainer
def _stub_trainer(trainer_cls: type) -> Any:
    import torch
    from torch import nn

    stub = trainer_cls.__new__(trainer_cls)
    nn.Module.__init__(stub)
    stub.__dict__.update(task_name=["a", "b"], task_num=2, rep_grad=False, multi_input=False, load_path=None,
                         kwargs={"weight_args": {}, "arch_args": {}}, bilevel_methods=list(bilevel_methods()))
    stub.device = torch.device("cpu")
    return stub


def _bilevel(config: Any) -> tuple[str, ...]:
    trainer_cls = sys.modules["LibMTL.trainer"].Trainer

    class _Seen(Exception):
        pass

    class _Probe(trainer_cls):  # type: ignore[misc, valid-type]
        def _prepare_model(self, *args: Any, **kwargs: Any) -> None:
            raise _Seen(list(getattr(self, "bilevel_methods", []) or []))

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            _Probe({}, "EW", "HPS", None, {}, False, False, {"optim": "sgd"}, None, weight_args={}, arch_args={},
                   device="cpu")
    except _Seen as seen:
        return tuple(str(n) for n in seen.args[0])
    except TypeError:  # no device= keyword: a LibMTL that picks its device itself
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                _Probe({}, "EW", "HPS", None, {}, False, False, {"optim": "sgd"}, None, weight_args={},
                       arch_args={})
        except _Seen as seen:
            return tuple(str(n) for n in seen.args[0])
    return ()


def bilevel_methods() -> tuple[str, ...]:
    """The weighting names LibMTL's ``Trainer`` runs as bilevel methods itself (empty for LibMTL 1.1.5)."""
    return _cached("bilevel", _bilevel)


def _model_with(weighting: Any, architecture: Any) -> Any:
    """The model ``Trainer._prepare_model`` builds on a stub for these arguments (names or classes)."""
    from torch import nn

    stub = _stub_trainer(sys.modules["LibMTL.trainer"].Trainer)
    stub.weighting = weighting
    decoders = nn.ModuleDict({t: nn.Linear(3, 1) for t in stub.task_name})
    with contextlib.redirect_stdout(io.StringIO()):
        sys.modules["LibMTL.trainer"].Trainer._prepare_model(stub, weighting, architecture, lambda: nn.Linear(3, 3),
                                                             decoders)
    return stub.model


def _takes_names(config: Any) -> bool:
    try:
        _model_with("EW", "HPS")
        return True
    except (TypeError, KeyError):
        return False


def trainer_takes_names() -> bool:
    """True when ``LibMTL.Trainer`` takes weighting/architecture *names* (git version), False for classes."""
    return _cached("takes_names", _takes_names)


# ============================================================================================ protocol
def _tiny_model(cls: type, rep_grad: bool) -> Any:
    import torch
    from torch import nn

    hps = sys.modules["LibMTL.architecture"].HPS

    class _Probe(hps, cls):  # type: ignore[misc, valid-type]
        pass

    torch.manual_seed(0)
    model = _Probe(["a", "b"], lambda: nn.Linear(3, 3), nn.ModuleDict({t: nn.Linear(3, 1) for t in "ab"}),
                   rep_grad, False, torch.device("cpu"))
    model.init_param()
    model.epoch, model.epochs = 0, 2
    model.train_loss_buffer = torch.ones(2, 2).numpy()
    return model


def _backward_works(cls: type, samples: int, weight_args: dict[str, Any], rep_grad: bool) -> BaseException | None:
    import torch

    model = _tiny_model(cls, rep_grad)
    rows = []
    with torch.enable_grad():
        for _ in range(samples):
            out = model(torch.randn(4, 3))
            rows.append(torch.stack([out[t].pow(2).mean() for t in ("a", "b")]))
        losses = torch.stack(rows).squeeze(0)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                model.backward(losses, **weight_args)
        except Exception as exc:  # the weighting's own error for this input shape
            return exc
    return None


def _loss_samples(cls: type, weight_args: dict[str, Any]) -> tuple[int, str]:
    first: BaseException | None = None
    for rep_grad in (False, True):
        err = _backward_works(cls, 1, weight_args, rep_grad)
        if err is None:
            return 1, ""
        first = first or err
    for samples in range(2, MAX_LOSS_SAMPLES + 1):
        if _backward_works(cls, samples, weight_args, False) is None:
            return samples, ""
    message = (str(first).strip().splitlines() or [""])[0]
    return 1, f"backward failed on a stub model ({type(first).__name__}: {message}); one loss sample assumed"


def _protocols(config: Any) -> dict[str, WeightingProtocol]:
    return {}


@contextlib.contextmanager
def _random_state_kept() -> Any:
    """Restore torch's CPU, numpy's and Python's random states afterwards: probing a weighting (a stub step)
    must not shift the draws of the run that asked, whose seed is already set."""
    states = torch.get_rng_state(), np.random.get_state(), random.getstate()
    try:
        yield
    finally:
        torch.set_rng_state(states[0])
        np.random.set_state(states[1])
        random.setstate(states[2])


def protocol(name: str) -> WeightingProtocol:
    """How LibMTL's ``Trainer`` drives the weighting ``name`` (built-in or plugin), probed once and cached.

    Raises:
        KeyError: ``name`` is not a weighting LibMTL accepts (see ``host.available('weighting')``).
    """
    table: dict[str, WeightingProtocol] = _cached("protocols", _protocols)
    if name in table:
        return table[name]
    with _random_state_kept():
        table[name] = _probe_protocol(name)
    return table[name]


def _probe_protocol(name: str) -> WeightingProtocol:
    config = _config()
    weighting_mod = sys.modules["LibMTL.weighting"]
    cls = vars(weighting_mod).get(name)
    has_class = isinstance(cls, type) and issubclass(cls, weighting_mod.abstract_weighting.AbsWeighting)
    bilevel = name in bilevel_methods()
    if not has_class and not bilevel and name not in accepted_names("weighting"):
        raise KeyError(name)
    kwargs, _ = _prepare(config, weighting=name if name in accepted_names("weighting") else _PLAIN["weighting"])
    weight_args = dict(kwargs["weight_args"]) if kwargs and name in accepted_names("weighting") else {}
    if bilevel:
        model = _model_with(name, "HPS")
        plain = [c for c in type(model).__mro__ if c.__module__.startswith("LibMTL.weighting.")]
        found = WeightingProtocol(name, has_class, plain[0].__name__ if plain else _PLAIN["weighting"],
                                  bilevel=True, weight_args=weight_args)
    elif has_class:
        samples, note = _loss_samples(cls, weight_args)
        update = "update_w" if callable(getattr(cls, "update_w", None)) else None
        found = WeightingProtocol(name, True, name, samples, update, False, weight_args, note)
    else:
        found = WeightingProtocol(name, False, name, weight_args=weight_args,
                                  note="accepted by prepare_args but not a weighting class")
    return found


__all__ = ["MAX_LOSS_SAMPLES", "WeightingProtocol", "accepted_names", "bilevel_methods", "default_params",
           "protocol", "trainer_takes_names"]
