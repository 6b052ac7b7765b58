"""Post-import patch ``trainer-device``."""

from __future__ import annotations

from typing import Any

from libmtl_repmtl.libmtl.compat._common import _mark, _marked
from libmtl_repmtl.libmtl.compat.device import resolve_device


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
