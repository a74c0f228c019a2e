"""`python -m tfcompress` runs the `tfcompress` command."""

import sys

from tfcompress.cli import main

if __name__ == "__main__":
    sys.exit(main())
