"""``python -m libmtl_repmtl.bench {bench,alpha,saliency} ...``: the harness and analysis commands
(the same as ``libmtl-repmtl bench|alpha|saliency``)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

COMMANDS = {
    "bench": "libmtl_repmtl.bench.harness:main",
    "alpha": "libmtl_repmtl.bench.powerlaw:main",
    "saliency": "libmtl_repmtl.bench.saliency_maps:main",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``argv[0]`` to its command's ``main(argv[1:])``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in COMMANDS:
        print(f"usage: python -m libmtl_repmtl.bench {{{','.join(COMMANDS)}}} ...", file=sys.stderr)
        return 2
    module, func = COMMANDS[args[0]].split(":")
    return int(getattr(importlib.import_module(module), func)(args[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
