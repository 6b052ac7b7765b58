"""Which LibMTL the tests run against, found by behaviour in a fresh interpreter (never by version string).

LibMTL 1.1.5 (PyPI) and LibMTL's git version both report 1.1.5. Tests whose expectations depend on the
installed LibMTL take the ``libmtl_flavour`` fixture (``tests/conftest.py``) and branch on these facts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from typing import Any

_PROBE = textwrap.dedent("""
    import json, sys
    out = {}
    try:
        import LibMTL  # LIBMTL_REPMTL_AUTOLOAD=0: no compatibility patch yet
        out["imports_without_shim"] = True
    except ImportError as exc:
        out["imports_without_shim"] = False
    for name in [m for m in sys.modules if m == "LibMTL" or m.startswith("LibMTL.")]:
        del sys.modules[name]
    import libmtl_repmtl
    from libmtl_repmtl.libmtl import host
    libmtl_repmtl.register()
    out["trainer_takes_names"] = host.trainer_takes_names()
    out["bilevel"] = list(host.bilevel_methods())
    out["weightings"] = host.builtin_names("weighting")
    out["architectures"] = host.builtin_names("architecture")
    out["available"] = host.available()
    print("JSON" + json.dumps(out))
""")


@dataclass(frozen=True)
class Flavour:
    """Facts about the installed LibMTL.

    Attributes:
        imports_without_shim: ``import LibMTL`` works without the ``torchvision.models.utils`` shim.
        trainer_takes_names: ``Trainer(weighting=..., architecture=...)`` takes names (git version), not classes.
        bilevel: the weighting names LibMTL's Trainer runs as bilevel methods (git version: MOML, FORUM, ...).
        weightings / architectures: LibMTL's own classes.
        available: every name per kind (LibMTL's accepted names and the plugins), as ``host.available()``.
    """

    imports_without_shim: bool
    trainer_takes_names: bool
    bilevel: tuple[str, ...]
    weightings: tuple[str, ...]
    architectures: tuple[str, ...]
    available: dict[str, list[str]]

    def arg(self, cls: type) -> Any:
        """What LibMTL's Trainer takes for the class ``cls``: its name or the class itself."""
        return cls.__name__ if self.trainer_takes_names else cls

    def arg_code(self, expr: str) -> str:
        """Python source for the Trainer argument of the class expression ``expr`` (for subprocess code)."""
        return f"({expr}).__name__" if self.trainer_takes_names else expr


def probe() -> Flavour:
    """Observe the installed LibMTL in a fresh interpreter with the autoload hook off."""
    env = {**os.environ, "LIBMTL_REPMTL_AUTOLOAD": "0"}
    proc = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"probing the installed LibMTL failed:\n{proc.stderr[-4000:]}")
    data = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("JSON"))[4:])
    return Flavour(data["imports_without_shim"], data["trainer_takes_names"], tuple(data["bilevel"]),
                   tuple(data["weightings"]), tuple(data["architectures"]), data["available"])
