"""`python -m tfcompress` runs the `tfcompress` command."""

import sys

from tfcompress.cli import main

sys.exit(main())
