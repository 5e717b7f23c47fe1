"""``python -m rdzv`` runs the command line."""

import sys

from rdzv.cli import main

sys.exit(main())
