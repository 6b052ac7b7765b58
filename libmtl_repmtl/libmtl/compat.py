"""Compatibility layer for LibMTL on current torch/torchvision (minimal first version).

Each patch is applied only when the installed LibMTL shows the symptom it cures.
"""

from __future__ import annotations

import importlib
import sys
import types


def _ensure_torchvision_models_utils() -> bool:
    """Symptom: ``import LibMTL`` fails with ``No module named 'torchvision.models.utils'``.

    torchvision removed ``torchvision.models.utils`` (0.13); LibMTL 1.1.5 imports
    ``load_state_dict_from_url`` from it. Cure: provide that module, backed by ``torch.hub``.
    Returns True when the shim was installed.
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
    sys.modules["torchvision.models.utils"] = shim
    torchvision.models.utils = shim  # type: ignore[attr-defined]
    return True


def ensure_libmtl() -> types.ModuleType:
    """Import LibMTL with the pre-import patches applied; return the ``LibMTL`` module."""
    _ensure_torchvision_models_utils()
    return importlib.import_module("LibMTL")
