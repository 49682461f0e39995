"""perflab: measure where a market-data backfill spends its time, fix that, and prove the gain."""

__version__ = "0.1.0"
