"""What a weighting class can do, read from the class, and method names turned into classes by the plugin host.

* :func:`resolve_weighting` / :func:`resolve_architecture`: a class is returned as it is; a name goes to
  :func:`libmtl_repmtl.libmtl.host.lookup`, the one authority on method names (its error lists every
  available one).
* :func:`ddp_compatible` and :func:`needs_rep`: the class says it. A class (or a base) that sets the attribute
  ``ddp_compatible`` / ``needs_rep`` decides. LibMTL's own classes, which cannot carry our attributes, are
  judged here, once, by their structure:

  - a LibMTL weighting is DDP-compatible when none of its own methods calls the per-task gradient helpers of
    ``AbsWeighting`` (``_get_grads``, ``_compute_grad``, ``_reset_grad``, ``_backward_new_grads``) and it
    has no protocol after the optimiser step (``update_w``, FAMO): its ``backward`` then back-propagates one
    scalar combination of the task losses, and DDP's averaged gradient is that scalar's gradient over the
    global batch (EW, UW, DWA, GLS, RLW, STCH). The others (MGDA, PCGrad, GradNorm, Nash-MTL, FAMO, MoDo, ...)
    need the global per-task gradients, which DDP's single all-reduce never forms;
  - a LibMTL weighting needs the representation when one of its methods reads ``self.rep`` (GradDrop).

  A class outside LibMTL that declares nothing is not DDP-compatible (:func:`ddp_compatible` returns
  ``None``: unknown) and does not need the representation.
"""

from __future__ import annotations

import inspect
from types import CodeType, FunctionType

from libmtl_repmtl.libmtl import host

#: ``AbsWeighting`` helpers that compute or rewrite per-task gradients of the shared parameters.
GRADIENT_HELPERS = frozenset({"_get_grads", "_compute_grad", "_reset_grad", "_backward_new_grads"})
#: Methods of a training protocol that runs after the optimiser step (not driven by a DDP step).
POST_STEP_METHODS = frozenset({"update_w"})


def resolve_weighting(weighting: str | type) -> type:
    """A weighting class from a class or a name (through the plugin host).

    Raises:
        libmtl_repmtl.libmtl.host.UnknownMethodError: an unknown name (a ``ValueError`` listing every name).
    """
    return _resolve("weighting", weighting)


def resolve_architecture(architecture: str | type) -> type:
    """An architecture class from a class or a name (through the plugin host).

    Raises:
        libmtl_repmtl.libmtl.host.UnknownMethodError: an unknown name (a ``ValueError`` listing every name).
    """
    return _resolve("architecture", architecture)


def _resolve(kind: str, obj: str | type) -> type:
    if isinstance(obj, type):
        return obj
    return host.lookup(kind, str(obj))  # registers the plugins first when nobody has


def _is_libmtl(cls: type) -> bool:
    return cls.__module__.split(".")[0] == "LibMTL"


def _is_abstract_base(cls: type) -> bool:
    return _is_libmtl(cls) and cls.__name__.startswith("Abs")


def _names_in(code: CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, CodeType):
            names |= _names_in(const)
    return names


def _own_names(cls: type) -> set[str]:
    """Attribute and global names used by the functions ``cls`` defines itself (nested functions, and the
    functions a wrapper's ``__wrapped__`` names, included)."""
    names: set[str] = set()
    for value in vars(cls).values():
        func = value.__func__ if isinstance(value, (staticmethod, classmethod)) else value
        while isinstance(func, FunctionType):  # a compatibility patch's wrapper: the original's names too
            names |= _names_in(func.__code__)
            func = getattr(func, "__wrapped__", None)
    return names


def _declared(cls: type, attr: str) -> tuple[bool, type | None]:
    """``(value, class)`` of the first class in the MRO that declares ``attr`` or is one of LibMTL's concrete
    weightings (value derived from its structure); ``(False, None)`` when neither is found."""
    for k in inspect.getmro(cls):
        if attr in vars(k):
            return bool(vars(k)[attr]), k
        if _is_libmtl(k) and not _is_abstract_base(k) and k is not object:
            names = _own_names(k)
            if attr == "ddp_compatible":
                return not (names & GRADIENT_HELPERS or set(vars(k)) & POST_STEP_METHODS), k
            return "rep" in names, k
    return False, None


def ddp_compatible(weighting: type) -> bool | None:
    """Whether ``weighting`` can be trained with DistributedDataParallel: ``True``/``False`` as declared by the
    class (or derived for LibMTL's own, see the module docstring), ``None`` when nothing says."""
    value, source = _declared(weighting, "ddp_compatible")
    return value if source is not None else None


def needs_rep(weighting: type) -> bool:
    """Whether ``weighting`` reads the shared representation (``needs_rep`` on the class; LibMTL's: derived)."""
    return _declared(weighting, "needs_rep")[0]


__all__ = ["GRADIENT_HELPERS", "POST_STEP_METHODS", "ddp_compatible", "needs_rep", "resolve_architecture",
           "resolve_weighting"]
