"""Start an example script (``examples/<family>/main.py``), standard library only.

Run with a Python that lacks the project's dependencies (e.g. the system ``python`` instead of
``.venv/bin/python``), an example stops with one clear line naming what is missing and the command to use,
instead of a chained traceback from deep inside an import.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence

#: What the examples import before they can even parse their flags.
REQUIRED = ("torch", "torchvision", "numpy", "scipy", "LibMTL")


def missing_requirements() -> list[str]:
    """The modules of :data:`REQUIRED` this interpreter cannot find."""
    return [name for name in REQUIRED if importlib.util.find_spec(name) is None]


def environment_message(script: str, missing: Sequence[str]) -> str:
    """The one-line error for ``script`` run by an interpreter that lacks ``missing``."""
    return (f"{script}: this Python ({sys.executable}) has no {', '.join(missing)}; run the examples inside the "
            f"project's environment: .venv/bin/python {script} ... (or `. .venv/bin/activate` first; create it "
            f"with `bash scripts/setup.sh`)")


def run_example(family: str, script: str, argv: Sequence[str] | None = None) -> int:
    """Check the environment, then run ``libmtl_repmtl.training.example_cli.main(family, argv)``.

    Returns the exit status: 2 (with the message on stderr) when a requirement is missing.
    """
    missing = missing_requirements()
    if missing:
        print(environment_message(script, missing), file=sys.stderr)
        return 2
    # Imported here, after the check: example_cli imports torch and LibMTL at module level.
    from libmtl_repmtl.training.example_cli import main

    return main(family, argv)


__all__ = ["REQUIRED", "environment_message", "missing_requirements", "run_example"]
