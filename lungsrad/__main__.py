"""`python -m lungsrad` runs the CLI."""

import sys

from lungsrad.cli import main

sys.exit(main())
