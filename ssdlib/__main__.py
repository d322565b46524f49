"""``python -m ssdlib ...``: see :mod:`ssdlib.cli`."""

import sys

from .cli import main

sys.exit(main())
