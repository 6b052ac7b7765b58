#!/usr/bin/env bash
# The default test suite (slow tests excluded; run them with: bash scripts/test.sh -m slow).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f .venv/bin/activate ] && . .venv/bin/activate
exec python -m pytest -m "not slow" -q "$@"
