"""Clear errors for LibMTL's undeclared dependencies (scipy; the git version's cvxpy, qpsolvers, torch_geometric)."""

from __future__ import annotations

from libmtl_repmtl.libmtl.compat._common import MissingDependencyError

#: Top-level module -> (what in LibMTL imports it when ``import LibMTL`` runs, the ``pip install`` arguments).
#: LibMTL declares none of them (its git version's requirements.txt lists them, its setup.py does not).
UNDECLARED_DEPENDENCIES: dict[str, tuple[str, str]] = {
    "scipy": ("its CAGrad (and the git version's FairGrad) weighting imports scipy.optimize",
              "'scipy>=1.8'  (libmtl_repmtl declares it; a --no-deps install skips it)"),
    "cvxpy": ("the git version's Trainer and Nash_MTL weighting import cvxpy",
              "'libmtl_repmtl[libmtl-git]'  (or: pip install cvxpy ecos)"),
    "qpsolvers": ("the git version's UPGrad weighting imports qpsolvers",
                  "'libmtl_repmtl[libmtl-git]'  (or: pip install qpsolvers quadprog)"),
    "torch_geometric": ("the git version's Trainer imports torch_geometric",
                        "'libmtl_repmtl[libmtl-git]'  (or: pip install torch-geometric)"),
}


def explain_import_error(exc: BaseException) -> MissingDependencyError | None:
    """A clear :class:`MissingDependencyError` for ``import LibMTL`` failing on a missing dependency, else None.

    Symptom: ``import LibMTL`` fails with ``No module named 'scipy'`` (1.1.5 and the git version) or
    ``'cvxpy'``, ``'qpsolvers'``, ``'torch_geometric'`` (the git version). Cause: LibMTL imports them at
    package import but does not declare them. Cure: this package declares scipy, and its extra
    ``libmtl_repmtl[libmtl-git]`` installs the git version's; where one is missing anyway, say which, why and
    the ``pip install`` command (:data:`UNDECLARED_DEPENDENCIES`).
    """
    if not (isinstance(exc, ModuleNotFoundError) and exc.name):
        return None
    top = exc.name.split(".")[0]
    if top not in UNDECLARED_DEPENDENCIES:
        return None
    why, install = UNDECLARED_DEPENDENCIES[top]
    return MissingDependencyError(
        f"LibMTL needs {top} ({why} when LibMTL is imported), but {exc.name!r} is not installed. "
        f"Install it: pip install {install}.", name=exc.name)
