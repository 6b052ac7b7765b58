#!/usr/bin/env bash
# Download into .whl/ (git-ignored) the wheels that benchmarks/gpu_check.sh needs on the GPU machine and that its
# image lacks: Python 3.12, manylinux x86-64. The image already has torch, torchvision, numpy, scipy, pillow,
# pytest, hypothesis, tqdm and matplotlib (see docs/gpu.md); of the check's imports only LibMTL is missing.
#   bash benchmarks/gpu_wheels.sh            # then carry .whl in the device run (docs/gpu.md)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=("LibMTL==1.1.5")
rm -rf .whl
mkdir -p .whl
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
"$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" \
  -d .whl "${WHEELS[@]}"
ls -l .whl
