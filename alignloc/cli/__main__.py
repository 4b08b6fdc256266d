"""``python -m alignloc.cli ...``: the command line."""

import sys

from alignloc.cli import main

sys.exit(main())
