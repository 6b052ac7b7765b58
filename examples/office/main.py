#!/usr/bin/env python
"""Office-31 / Office-Home (domains as tasks, multi-input): ResNet-18 + MLP encoder.

Mirrors LibMTL's example; every LibMTL flag keeps its meaning. Example::

    python examples/office/main.py --dataset office-31 --multi_input --weighting RepMTL --arch RepHPS \
        --dataset_path /data/office31 --save_path runs/o31

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
    sys.exit(run_example("office", "examples/office/main.py"))
