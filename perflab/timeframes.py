"""The timeframes a backfill can ask for, and how each maps to Polygon's (multiplier, timespan)."""

from __future__ import annotations

from dataclasses import dataclass

from perflab.errors import InputError

TIMESPAN_MS = {
    "second": 1_000,
    "minute": 60_000,
    "hour": 3_600_000,
    "day": 86_400_000,
    "week": 7 * 86_400_000,
}
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
