"""Pre-import patch ``torchvision-models-utils``."""

from __future__ import annotations

import importlib
import sys
import types

from libmtl_repmtl.libmtl.compat._common import _mark


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
