"""``python -m lbclient demo``: the same as the ``lbclient`` console script."""

import sys

from lbclient.cli import main

if __name__ == "__main__":
    sys.exit(main())
