"""``libmtl-repmtl``: a small dispatcher, ``libmtl-repmtl COMMAND [ARGS...]``.

Each command is one line of :data:`COMMANDS`: name -> (``"module:function"``, one-line help). The module is
imported only when its command runs; the function takes the remaining arguments (``list[str]``) and returns
the exit status (``int``; ``None`` means 0). To add a command, add a line.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from libmtl_repmtl import __version__

#: command -> ("module:function", help). The function is ``f(argv: list[str]) -> int | None``.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("libmtl_repmtl.libmtl.runner:main", "run a LibMTL script with the plugins registered"),
    "list": ("libmtl_repmtl.libmtl.runner:list_main", "list the available weightings and architectures"),
    "bench": ("libmtl_repmtl.harness.cli:main", "benchmark grid (methods x seeds), tables and plots"),
    "alpha": ("libmtl_repmtl.analysis.powerlaw:main", "power-law alpha of weight spectra"),
    "saliency": ("libmtl_repmtl.analysis.saliency_maps:main", "task-saliency pictures of a checkpoint"),
}


def usage() -> str:
    """The top-level help text."""
    width = max(len(c) for c in COMMANDS)
    lines = ["usage: libmtl-repmtl COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "libmtl-repmtl COMMAND -h shows a command's options."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``argv[0]`` (default ``sys.argv[1:]``) to its command; return the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(usage())
        return 0 if args else 2
    if args[0] == "--version":
        print(f"libmtl-repmtl {__version__}")
        return 0
    if args[0] not in COMMANDS:
        print(f"libmtl-repmtl: unknown command {args[0]!r}; choose from {', '.join(COMMANDS)}\n\n{usage()}",
              file=sys.stderr)
        return 2
    module, func = COMMANDS[args[0]][0].split(":")
    result = getattr(importlib.import_module(module), func)(args[1:])
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
