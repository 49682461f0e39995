"""What is already stored: the days a backfill completed (``fetch_coverage``) and the bar times in ``market_data``.

Resume (``api.missing_only``) asks :func:`missing_ranges` which days still need fetching and
:func:`drop_stored` which fetched bars are already in the table, so a re-run after a kill (or a DB
outage) fetches only what is missing and never writes a bar twice, whatever the writer.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from perflab.timeframes import NY, ny_day_start


def day_start(day: date) -> datetime:
    """00:00 New York time on ``day``: bars belong to the New York day their window starts on."""
    return ny_day_start(day)


def _stored_count(conn: Connection, symbol: str, timeframe: str, first: date, last: date) -> int:
    return conn.execute(sa.text(
        "SELECT count(*) FROM market_data WHERE symbol = :s AND timeframe = :tf AND time >= :a AND time < :b"),
        {"s": symbol, "tf": timeframe, "a": day_start(first), "b": day_start(last + timedelta(1))}).scalar_one()


Series = tuple[str, str]


def covered_days_many(engine: Engine, series: list[Series]) -> dict[Series, set[date]]:
    """Per (symbol, timeframe): days recorded complete whose bars are all still stored (an emptied table
    invalidates its entries). One query for all the series, counts included."""
    days: dict[Series, set[date]] = {s: set() for s in series}
    if not series:
        return days
    with engine.connect() as conn:
        entries = conn.execute(sa.text(
            "SELECT c.symbol, c.timeframe, c.first_day, c.last_day, c.rows, (SELECT count(*) FROM market_data m "
            "WHERE m.symbol = c.symbol AND m.timeframe = c.timeframe "
            "AND m.time >= (c.first_day::timestamp AT TIME ZONE 'America/New_York') "
            "AND m.time < ((c.last_day + 1)::timestamp AT TIME ZONE 'America/New_York')) "
            "FROM fetch_coverage c WHERE c.symbol = ANY(:symbols) AND c.timeframe = ANY(:timeframes)"),
            {"symbols": sorted({s for s, _ in series}), "timeframes": sorted({t for _, t in series})}).all()
    for symbol, timeframe, first, last, rows, stored in entries:
        if (symbol, timeframe) in days and (rows == 0 or stored >= rows):
            days[symbol, timeframe].update(first + timedelta(d) for d in range((last - first).days + 1))
    return days


def covered_days(engine: Engine, symbol: str, timeframe: str) -> set[date]:
    """Days recorded complete for one series (see :func:`covered_days_many`)."""
    return covered_days_many(engine, [(symbol, timeframe)])[symbol, timeframe]


def _uncovered(covered: set[date], start: date, end: date) -> list[tuple[date, date]]:
    ranges: list[tuple[date, date]] = []
    for d in (start + timedelta(i) for i in range((end - start).days + 1)):
        if d in covered:
            continue
        if ranges and ranges[-1][1] == d - timedelta(1):
            ranges[-1] = (ranges[-1][0], d)
        else:
            ranges.append((d, d))
    return ranges


def missing_ranges(engine: Engine, symbol: str, timeframe: str, start: date, end: date) -> list[tuple[date, date]]:
    """The contiguous runs of days in [start, end] not yet covered, oldest first."""
    return _uncovered(covered_days(engine, symbol, timeframe), start, end)


def missing_ranges_many(engine: Engine, series: list[Series], start: date, end: date) -> dict[Series, list]:
    """:func:`missing_ranges` of many series in one query: what a whole backfill still has to fetch."""
    return {s: _uncovered(days, start, end) for s, days in covered_days_many(engine, series).items()}


def final_range(first: date, last: date, today: date | None = None) -> tuple[date, date] | None:
    """The part of [first, last] that can be recorded complete: days from today on are never final."""
    today = today or datetime.now(NY).date()
    last = min(last, today - timedelta(1))
    return None if last < first else (first, last)


def record_coverage(engine: Engine, symbol: str, timeframe: str, first: date, last: date,
                    today: date | None = None) -> None:
    """Mark [first, last] complete with the bars now stored there; days from today on are never final."""
    span = final_range(first, last, today)
    if span is None:
        return
    first, last = span
    with engine.begin() as conn:
        rows = _stored_count(conn, symbol, timeframe, first, last)
        conn.execute(sa.text(
            "INSERT INTO fetch_coverage (symbol, timeframe, first_day, last_day, rows) VALUES (:s, :tf, :a, :b, :n) "
            "ON CONFLICT (symbol, timeframe, first_day, last_day) DO UPDATE SET rows = EXCLUDED.rows, "
            "recorded_at = now()"),
            {"s": symbol, "tf": timeframe, "a": first, "b": last, "n": rows})


def drop_stored(engine: Engine, symbol: str, timeframe: str, bars: pd.DataFrame) -> pd.DataFrame:
    """``bars`` without the rows whose time is already stored for (symbol, timeframe)."""
    if bars.empty:
        return bars
    with engine.connect() as conn:
        stored = conn.execute(sa.text(
            "SELECT time FROM market_data WHERE symbol = :s AND timeframe = :tf AND time >= :a AND time <= :b"),
            {"s": symbol, "tf": timeframe, "a": bars["time"].min().to_pydatetime(),
             "b": bars["time"].max().to_pydatetime()}).scalars().all()
    if not stored:
        return bars
    keep = ~bars["time"].isin(pd.DatetimeIndex(stored).tz_convert("UTC"))
    return bars.loc[keep].reset_index(drop=True)


def stored_bars(engine: Engine, symbol: str, timeframe: str, start: date, end: date) -> pd.DataFrame:
    """The stored bars of [start, end] (New York days), oldest first, in the client's column layout."""
    frame = pd.read_sql_query(
        sa.text("SELECT time, open, high, low, close, volume, vwap, transactions FROM market_data "
                "WHERE symbol = :s AND timeframe = :tf AND time >= :a AND time < :b ORDER BY time"),
        engine, params={"s": symbol, "tf": timeframe, "a": day_start(start), "b": day_start(end + timedelta(1))})
    frame["time"] = pd.to_datetime(frame["time"], utc=True).astype("datetime64[ms, UTC]")
    frame["transactions"] = frame["transactions"].fillna(0).astype("int64")
    return frame
