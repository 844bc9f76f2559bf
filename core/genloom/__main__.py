"""``python -m genloom ...`` is ``genloom ...``."""

import sys

from genloom.cli import main

sys.exit(main())
