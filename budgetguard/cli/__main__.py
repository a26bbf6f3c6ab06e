"""``python -m budgetguard.cli``."""

import sys

from . import main

sys.exit(main())
