#!/usr/bin/env bash
# The default test suite (slow tests excluded; run them with: bash scripts/test.sh -m slow).
# LIBMTL_REPMTL_VENV=/path/to/venv runs it in another environment (e.g. one with LibMTL's git version; see
# docs/compat.md), default .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${LIBMTL_REPMTL_VENV:-.venv}"
if [ -n "${LIBMTL_REPMTL_VENV:-}" ] && [ ! -f "$venv/bin/activate" ]; then
    echo "scripts/test.sh: LIBMTL_REPMTL_VENV=$venv has no bin/activate (create it as docs/compat.md shows)" >&2
    exit 2
fi
[ -f "$venv/bin/activate" ] && . "$venv/bin/activate"
exec python -m pytest -m "not slow" -q "$@"
