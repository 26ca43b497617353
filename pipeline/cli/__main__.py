"""`python -m pipeline.cli`: `nst` without the console script (Ray job entrypoints)."""

import sys

from .main import main

if __name__ == "__main__":  # importing it (as tests that walk the package do) runs nothing
    sys.exit(main())
