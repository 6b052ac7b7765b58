"""``python -m libmtl_repmtl COMMAND ...``: the same dispatcher as ``libmtl-repmtl`` (:mod:`libmtl_repmtl.cli`)."""

import sys

from libmtl_repmtl.cli import main

sys.exit(main())
