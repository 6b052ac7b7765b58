#!/usr/bin/env python
"""NYUv2 (segmentation, depth, normal): dilated ResNet-50 + DeepLabV3 heads.

Mirrors LibMTL's example; every LibMTL flag keeps its meaning. Example::

    python examples/nyuv2/main.py --weighting RepMTL --arch RepHPS --dataset_path /data/nyuv2 --save_path runs/nyu

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
    sys.exit(run_example("nyuv2", "examples/nyuv2/main.py"))
