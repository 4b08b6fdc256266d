"""``python -m alignloc.cli ...``: the command line."""

import sys

from alignloc.cli import entry

sys.exit(entry())
