"""`python -m utils.kaggle`: build Kaggle kernel folders (the command line of `utils.run.kaggle`)."""

import sys

from utils.run.kaggle import main

if __name__ == "__main__":
    sys.exit(main())
