"""`python -m utils.bench`: benchmarks (the command line of `utils.run.bench`)."""

import sys

from utils.run.bench import main

if __name__ == "__main__":
    sys.exit(main())
