"""`python -m glmv ...`: the same command line as the `glmv` script (for where the script is not on PATH)."""

import sys

from glmv.cli import main

if __name__ == "__main__":  # not when a tool merely imports the package's modules
    sys.exit(main())
