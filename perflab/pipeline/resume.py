"""Resume (the ``api.missing_only`` fix): fetch only the days a (symbol, timeframe) does not have yet.

A job records its days in ``fetch_coverage`` after its bars and features are stored, so a backfill
killed at any point (SIGKILL included) and run again fetches the unfinished jobs' days only, drops
bars already committed, and recomputes features over the whole stored range (rolling windows need it).
"""

from __future__ import annotations

from datetime import date

import pandas as pd
from sqlalchemy.engine import Engine

from perflab.api.client import AggregatesSource, FetchResult, empty_bars
from perflab.db.coverage import missing_ranges, record_coverage, stored_bars
from perflab.measure.results import RequestStats
from perflab.timeframes import Timeframe

Ranges = list[tuple[date, date]]


def fetch_missing(client: AggregatesSource, engine: Engine, symbol: str, tf: Timeframe, start: date, end: date, *,
                  limit: int = 5000, ranges: Ranges | None = None,
                  stats: RequestStats | None = None) -> tuple[FetchResult, Ranges]:
    """Fetch the uncovered day ranges of [start, end] (``ranges`` when the caller already asked the
    database for a whole backfill); returns the bars and the ranges fetched. Every range's requests count
    into ``stats`` (as :meth:`~perflab.api.client.PolygonClient.get_aggregates` counts), failed ones too."""
    if ranges is None:
        ranges = missing_ranges(engine, symbol, tf.name, start, end)
    stats = RequestStats() if stats is None else stats
    parts = [client.get_aggregates(symbol, tf.multiplier, tf.timespan, first, last, limit=limit, stats=stats).bars
             for first, last in ranges]
    bars = pd.concat(parts, ignore_index=True) if any(len(p) for p in parts) else empty_bars()
    return FetchResult(bars, stats), ranges


def feature_input(engine: Engine, symbol: str, tf: Timeframe, start: date, end: date, ranges: Ranges) -> pd.DataFrame:
    """The bars to compute features from: all stored bars of the range if anything was fetched, else none."""
    return stored_bars(engine, symbol, tf.name, start, end) if ranges else empty_bars()


def mark_done(engine: Engine, symbol: str, tf: Timeframe, ranges: Ranges) -> None:
    """Record the fetched ranges as complete (the job's last step)."""
    for first, last in ranges:
        record_coverage(engine, symbol, tf.name, first, last)
