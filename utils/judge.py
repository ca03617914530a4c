"""`python -m utils.judge build | check`: the frozen real-titles judge (the command line of `utils.core.judge`)."""

import sys

from utils.core.judge import main

if __name__ == "__main__":
    sys.exit(main())
