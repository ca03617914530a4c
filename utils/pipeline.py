"""`python -m utils.pipeline`: run the notebook chain (the command line of `utils.run.pipeline`)."""

import sys

from utils.run.pipeline import main

if __name__ == "__main__":
    sys.exit(main())
