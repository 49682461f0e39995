"""``python -m perflab``: the ``perflab`` command, for when the script is not on PATH."""

import sys

from perflab.cli import main

sys.exit(main())
