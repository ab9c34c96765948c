"""``python -m qslab``: the same entry point as the ``qslab`` console script."""

import sys

from qslab.sequences.cli import main

sys.exit(main())
