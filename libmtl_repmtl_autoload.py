"""Autoload hook of libmtl_repmtl (imported at interpreter start by ``libmtl_repmtl.pth``).

Standard library only, and cheap: importing this module only puts one finder at the front of
``sys.meta_path``. Nothing else is imported until a program imports the top-level ``LibMTL`` package; then
the finder wraps LibMTL's loader so that

1. before ``LibMTL/__init__.py`` runs: ``libmtl_repmtl.libmtl.compat.apply_pre_import_patches()`` (e.g. the
   ``torchvision.models.utils`` shim LibMTL 1.1.5 needs to import at all);
2. after it has run: ``libmtl_repmtl.register()`` (post-import compatibility patches, plugin weightings and
   architectures from every installed distribution's entry points, ``LibMTL.config`` wrapping).

So ``import LibMTL`` (or ``from LibMTL.config import prepare_args``) in any script gives the patched,
plugin-aware LibMTL. Opt out with ``LIBMTL_REPMTL_AUTOLOAD=0`` (then call ``libmtl_repmtl.register()`` or use
``libmtl-repmtl run SCRIPT``). A failure inside the hook never passes silently: it is reported as a
``RuntimeWarning`` naming the step, the error and the opt-out, and ``import LibMTL`` carries on (a failure of
LibMTL's own import still raises, with a clearer message where a dependency such as scipy is missing).
"""

from __future__ import annotations

import os
import sys
import warnings

#: Environment variable: ``0`` / ``false`` / ``no`` / ``off`` disables the hook.
ENV = "LIBMTL_REPMTL_AUTOLOAD"
#: The package whose import triggers the hook.
TARGET = "LibMTL"


def enabled() -> bool:
    """False when ``$LIBMTL_REPMTL_AUTOLOAD`` is ``0``, ``false``, ``no`` or ``off``."""
    return os.environ.get(ENV, "1").strip().lower() not in {"0", "false", "no", "off"}


def _warn(step: str, exc: BaseException) -> None:
    warnings.warn(
        f"libmtl_repmtl autoload: {step} failed ({type(exc).__name__}: {exc}). LibMTL is imported without "
        f"it: plugins may be missing and LibMTL 1.1.5 may not work on this torch. Fix the installation of "
        f"libmtl_repmtl, or disable the hook with {ENV}=0 and call libmtl_repmtl.register() yourself.",
        RuntimeWarning, stacklevel=3)


class _HookedLoader:
    """Wraps LibMTL's loader: pre-import patches, LibMTL's own ``exec_module``, then registration."""

    def __init__(self, loader) -> None:  # noqa: ANN001
        self._loader = loader

    def __getattr__(self, name: str):  # delegate get_resource_reader, is_package, ...
        return getattr(self._loader, name)

    def create_module(self, spec):  # noqa: ANN001, ANN201
        create = getattr(self._loader, "create_module", None)
        return create(spec) if create is not None else None

    def exec_module(self, module) -> None:  # noqa: ANN001
        try:  # imported here: this module is stdlib only (it runs at interpreter start, from the .pth file)
            from libmtl_repmtl.libmtl import compat

            compat.apply_pre_import_patches()
        except Exception as exc:  # noqa: BLE001 - reported, never hidden
            compat = None
            _warn("the pre-import compatibility patches", exc)
        try:
            self._loader.exec_module(module)
        except ImportError as exc:
            clear = compat.explain_import_error(exc) if compat is not None else None
            if clear is not None:
                raise clear from exc
            raise
        try:  # imported here, as above, and only once LibMTL itself has loaded
            import libmtl_repmtl

            libmtl_repmtl.register()
        except Exception as exc:  # noqa: BLE001
            _warn("libmtl_repmtl.register() (compatibility patches and plugins)", exc)


class LibMTLFinder:
    """``sys.meta_path`` finder that hooks the import of the top-level ``LibMTL`` package."""

    libmtl_repmtl_autoload = True

    def find_spec(self, fullname: str, path=None, target=None):  # noqa: ANN001, ANN201
        if fullname != TARGET:
            return None
        for finder in sys.meta_path:
            if finder is self or getattr(finder, "libmtl_repmtl_autoload", False):
                continue
            find = getattr(finder, "find_spec", None)
            if find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _HookedLoader(spec.loader)
                return spec
        return None


def install() -> bool:
    """Put the finder first on ``sys.meta_path`` (once). Returns True when it was installed now."""
    if any(getattr(f, "libmtl_repmtl_autoload", False) for f in sys.meta_path):
        return False
    sys.meta_path.insert(0, LibMTLFinder())
    return True


def uninstall() -> bool:
    """Remove the finder. Returns True when one was removed."""
    before = len(sys.meta_path)
    sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "libmtl_repmtl_autoload", False)]
    return len(sys.meta_path) != before


if enabled():
    install()
