"""`python -m lmforge.cli`: the `lmforge` command."""

import sys

from lmforge.cli import main

sys.exit(main())
