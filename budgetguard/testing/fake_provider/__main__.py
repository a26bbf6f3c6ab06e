"""``python -m budgetguard.testing.fake_provider --port 8765``."""

from . import main

main()
