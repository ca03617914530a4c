"""`python -m utils.score`: score a submission (the command line of `utils.core.score`)."""

import sys

from utils.core.score import main

if __name__ == "__main__":
    sys.exit(main())
