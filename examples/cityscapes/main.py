#!/usr/bin/env python
"""Cityscapes (7-class segmentation, depth): dilated ResNet-50 + DeepLabV3 heads.

Mirrors LibMTL's example; every LibMTL flag keeps its meaning. Example::

    python examples/cityscapes/main.py --weighting EW --arch HPS --dataset_path /data/cityscapes --save_path runs/cs

Flags: ``--help`` (or :mod:`libmtl_repmtl.training.example_cli`). Runs from any directory.
"""

import sys
from pathlib import Path

try:
    from libmtl_repmtl.launch import run_example
except ImportError:  # not installed: use the checkout this file lives in
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from libmtl_repmtl.launch import run_example

if __name__ == "__main__":
    sys.exit(run_example("cityscapes", "examples/cityscapes/main.py"))
