#!/usr/bin/env bash
# One-time set-up on a fresh machine: a virtual environment in .venv with torch, LibMTL and this package.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
# torch/torchvision first (pinned releases available on the project's machines; any torch>=2.1 works).
python -c "import torch, torchvision" 2>/dev/null || \
  python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
python -m pip install -q -e ".[test,bench]"
