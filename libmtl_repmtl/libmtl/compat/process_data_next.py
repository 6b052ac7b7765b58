"""Post-import patch ``process-data-next``."""

from __future__ import annotations

import types
from typing import Any

from libmtl_repmtl.libmtl.compat._common import _mark, _marked


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
