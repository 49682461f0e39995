"""The timeframes a backfill can ask for, how each maps to Polygon's (multiplier, timespan), and New York days.

A bar belongs to the New York session date its window starts on. A New York day is 23 or 25 hours long
across a daylight-saving change, so day boundaries are always computed with the time zone, never as
midnight plus a fixed 24 hours or a fixed UTC offset.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from perflab.errors import InputError

NY = ZoneInfo("America/New_York")
TIMESPANS = ("second", "minute", "hour", "day", "week", "month", "quarter", "year")


@dataclass(frozen=True)
class Timeframe:
    """A bar size: our short name ("5m") and Polygon's multiplier/timespan pair."""

    name: str
    multiplier: int
    timespan: str


TIMEFRAMES: dict[str, Timeframe] = {
    tf.name: tf
    for tf in (
        Timeframe("1m", 1, "minute"),
        Timeframe("5m", 5, "minute"),
        Timeframe("15m", 15, "minute"),
        Timeframe("30m", 30, "minute"),
        Timeframe("1h", 1, "hour"),
        Timeframe("4h", 4, "hour"),
        Timeframe("1d", 1, "day"),
        Timeframe("1w", 1, "week"),
    )
}


def parse_timeframe(name: str) -> Timeframe:
    """Look up a timeframe by name; an unknown one raises :class:`InputError` listing the known ones."""
    try:
        return TIMEFRAMES[name]
    except KeyError:
        known = ", ".join(TIMEFRAMES)
        raise InputError(f"unknown timeframe {name!r}: use one of {known}") from None


def ny_day_start(day: date) -> datetime:
    """00:00 New York time on ``day``, where that session date begins (aware, in the New York zone)."""
    return datetime.combine(day, time(0), NY)


def ny_midnight_ms(day: date) -> int:
    """UTC milliseconds of 00:00 New York time on ``day``."""
    return int(ny_day_start(day).timestamp() * 1000)


def ny_day_end_ms(day: date) -> int:
    """UTC milliseconds of the last millisecond of New York day ``day`` (one before the next day's midnight)."""
    return ny_midnight_ms(day + timedelta(days=1)) - 1


def ny_date(ms: int) -> date:
    """The New York session date of UTC milliseconds ``ms``."""
    return datetime.fromtimestamp(ms // 1000, NY).date()
