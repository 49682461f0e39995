"""perflab: measure where a market-data backfill spends its time, fix that, and prove the gain."""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())  # a library: the application decides what is shown
