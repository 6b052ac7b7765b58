"""Rep-MTL (ICCV 2025) for LibMTL. Importing this package is cheap: nothing below it is imported eagerly."""

from __future__ import annotations

__version__ = "0.1.0"


def register(*, strict: bool | None = None) -> dict[str, list[str]]:
    """Make LibMTL plugin-aware: compatibility patches, plugin classes from every installed distribution's
    ``libmtl.weighting`` / ``libmtl.architecture`` entry points, ``LibMTL.config`` flags and ``prepare_args``.

    Idempotent; runs automatically when ``LibMTL`` is imported (unless ``LIBMTL_REPMTL_AUTOLOAD=0``).
    Returns kind -> registered plugin names. See :func:`libmtl_repmtl.libmtl.host.register`.
    """
    # Here, not at the top: `import libmtl_repmtl` stays cheap and works where the LibMTL adapters cannot load
    # (the autoload hook imports it to report a broken compatibility layer; `libmtl-repmtl --help`).
    from libmtl_repmtl.libmtl.host import register as _register

    return _register(strict=strict)


__all__ = ["__version__", "register"]
