"""`python -m pipeline.cli`: `nst` without the console script (Ray job entrypoints)."""

import sys

from .main import main

sys.exit(main())
