"""Deterministic OHLCV bars: the same (seed, ticker, day) always yields the same minute bars.

Minute bars exist only in the extended session (04:00-20:00 America/New_York) on weekdays, and only
in minutes with at least one trade (thin pre/post-market minutes often have none). Every intraday
timespan (minutes, hours) is folded from those minute bars the way Polygon builds them (o first, h max,
l min, c last, v and n summed, vw the volume-weighted mean of the minute vwaps, unrounded), so a 5-minute
bar always agrees with its minutes and can be derived from them locally.

Daily bars are not the fold of the minute bars, as Polygon's are not (its daily bar is built from the day's
consolidated eligible trades): they come from their own model, around the same price level, drawn from a
counter-based hash of (seed, ticker, day) so one date's bars for a 10,000-ticker universe (the grouped daily
endpoint) cost a few vectorised array operations and equal, number for number, what a per-ticker request
returns. Week, month, quarter and year bars fold the daily bars. Timestamps are UTC milliseconds at the window
start; daily bars start at 00:00 New York time.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache

import numpy as np
import pandas as pd

from perflab.timeframes import NY, ny_date, ny_midnight_ms

SESSION_OPEN = time(4, 0)
SESSION_MINUTES = 16 * 60
REGULAR_START, REGULAR_END = 330, 720  # minutes after 04:00 -> 09:30 and 16:00

FIELDS = ("t", "o", "h", "l", "c", "v", "vw", "n")


@dataclass(frozen=True)
class BarArrays:
    """Columns of bars (t ms, o, h, l, c, v, vw, n), sorted by t ascending."""

    t: np.ndarray
    o: np.ndarray
    h: np.ndarray
    l: np.ndarray
    c: np.ndarray
    v: np.ndarray
    vw: np.ndarray
    n: np.ndarray

    def __len__(self) -> int:
        return len(self.t)

    def take(self, idx) -> BarArrays:
        return BarArrays(*(getattr(self, f)[idx] for f in FIELDS))

    @staticmethod
    def concat(parts: list[BarArrays]) -> BarArrays:
        if not parts:
            return EMPTY
        return BarArrays(*(np.concatenate([getattr(p, f) for p in parts]) for f in FIELDS))


EMPTY = BarArrays(
    np.empty(0, np.int64), *(np.empty(0) for _ in range(5)), np.empty(0), np.empty(0, np.int64)
)


def is_trading_day(day: date) -> bool:
    return day.weekday() < 5


def ticker_seed(seed: int, ticker: str) -> list[int]:
    return [seed, zlib.crc32(ticker.encode())]


@lru_cache(maxsize=4096)
def minute_bars(seed: int, ticker: str, day: date) -> BarArrays:
    """The minute bars of one trading day (empty on weekends)."""
    if not is_trading_day(day):
        return EMPTY
    rng = np.random.default_rng([*ticker_seed(seed, ticker), day.toordinal()])
    base = 20.0 + zlib.crc32(ticker.encode()) % 480
    level = base * float(np.exp(0.03 * rng.standard_normal()))
    minute = np.arange(SESSION_MINUTES)
    regular = (minute >= REGULAR_START) & (minute < REGULAR_END)
    sigma = np.where(regular, 0.0009, 0.0004)
    close = level * np.exp(np.cumsum(rng.normal(0.0, 1.0, SESSION_MINUTES) * sigma))
    open_ = np.concatenate(([level], close[:-1]))
    wick = np.abs(rng.normal(0.0, 1.0, (2, SESSION_MINUTES))) * sigma * 0.5
    high = np.maximum(open_, close) * (1 + wick[0])
    low = np.minimum(open_, close) * (1 - wick[1])
    trades = rng.poisson(np.where(regular, 60.0, 1.5))
    volume = trades * rng.integers(20, 200, SESSION_MINUTES)
    vwap = low + (high - low) * rng.uniform(0.25, 0.75, SESSION_MINUTES)
    open_ms = int(datetime.combine(day, SESSION_OPEN, NY).timestamp() * 1000)
    t = open_ms + minute.astype(np.int64) * 60_000
    keep = trades > 0

    def r(a: np.ndarray) -> np.ndarray:
        return np.round(a[keep], 4)

    return BarArrays(
        t[keep], r(open_), r(high), r(low), r(close), volume[keep].astype(float), r(vwap), trades[keep]
    )


def _aggregate(bars: BarArrays, keys: np.ndarray) -> BarArrays:
    """Fold consecutive bars that share a bucket key into one bar per key."""
    if len(bars) == 0:
        return EMPTY
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    if len(starts) == len(keys):  # one bar per bucket: the bar itself (vw * v / v could move vw by an ulp)
        return BarArrays(keys.astype(np.int64), *(getattr(bars, f) for f in FIELDS[1:]))
    ends = np.r_[starts[1:], len(keys)] - 1
    v = np.add.reduceat(bars.v, starts)
    pv = np.add.reduceat(bars.vw * bars.v, starts)
    return BarArrays(
        keys[starts].astype(np.int64),
        bars.o[starts],
        np.maximum.reduceat(bars.h, starts),
        np.minimum.reduceat(bars.l, starts),
        bars.c[ends],
        v,
        np.divide(pv, v, out=bars.c[ends].copy(), where=v > 0),
        np.add.reduceat(bars.n, starts),
    )


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a well-spread 64-bit value for each 64-bit input (arithmetic wraps)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _uniforms(seed: int, crcs: np.ndarray, ordinals: np.ndarray, k: int) -> np.ndarray:
    """``k`` uniform draws in [0, 1) per (ticker crc, day ordinal) pair, the same whatever else is drawn with them."""
    key = _mix(_mix(np.array([seed % 2**64], np.uint64) + _GOLDEN) ^ crcs.astype(np.uint64))
    key = _mix(key ^ (ordinals.astype(np.uint64) * _GOLDEN))
    x = _mix(key[..., None] + np.arange(1, k + 1, dtype=np.uint64) * _GOLDEN)
    return (x >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


def daily_bars(seed: int, tickers: tuple[str, ...], day: date) -> BarArrays:
    """The daily bar of each ticker on ``day``, in ``tickers`` order (empty on weekends): one grouped-daily date."""
    if not is_trading_day(day) or not tickers:
        return EMPTY
    crcs = np.array([zlib.crc32(t.encode()) for t in tickers], np.uint64)
    n = len(tickers)
    return _daily_model(seed, crcs, np.full(n, day.toordinal()), np.full(n, ny_midnight_ms(day), np.int64))


def ticker_daily_bars(seed: int, ticker: str, start: date, end: date) -> BarArrays:
    """One ticker's daily bars for each weekday from ``start`` to ``end`` inclusive."""
    days = [d for d in (start + timedelta(i) for i in range((end - start).days + 1)) if is_trading_day(d)]
    if not days:
        return EMPTY
    crcs = np.full(len(days), zlib.crc32(ticker.encode()), np.uint64)
    return _daily_model(seed, crcs, np.array([d.toordinal() for d in days]),
                        np.array([ny_midnight_ms(d) for d in days], np.int64))


def _daily_model(seed: int, crcs: np.ndarray, ordinals: np.ndarray, t: np.ndarray) -> BarArrays:
    """Daily bars, element by element: level around the ticker's base price, a ~2% day, wicks, trades and volume."""
    u = _uniforms(seed, crcs, ordinals, 7)
    r1, r2 = np.sqrt(-2 * np.log1p(-u[:, 0])), np.sqrt(-2 * np.log1p(-u[:, 2]))  # Box-Muller: four normals
    z = (r1 * np.cos(2 * np.pi * u[:, 1]), r1 * np.sin(2 * np.pi * u[:, 1]),
         r2 * np.cos(2 * np.pi * u[:, 3]), r2 * np.sin(2 * np.pi * u[:, 3]))
    base = 20.0 + (crcs % np.uint64(480)).astype(np.float64)
    open_ = base * np.exp(0.03 * z[0])
    close = open_ * np.exp(0.018 * z[1])
    high = np.maximum(open_, close) * (1 + 0.008 * np.abs(z[2]))
    low = np.minimum(open_, close) * (1 - 0.008 * np.abs(z[3]))
    trades = np.floor(18_000 + 12_000 * u[:, 4]).astype(np.int64)
    volume = np.floor(trades * (60 + 80 * u[:, 5]))
    vwap = low + (high - low) * (0.25 + 0.5 * u[:, 6])
    return BarArrays(t.astype(np.int64), *(np.round(a, 4) for a in (open_, high, low, close)), volume,
                     np.round(vwap, 4), trades)


@lru_cache(maxsize=8192)
def day_bars(seed: int, ticker: str, multiplier: int, timespan: str, day: date) -> BarArrays:
    """Bars of one day at ``multiplier`` x ``timespan`` (minute, hour or day)."""
    if timespan == "day":
        return ticker_daily_bars(seed, ticker, day, day)
    minutes = minute_bars(seed, ticker, day)
    if timespan == "second":
        return minutes
    width = {"minute": 60_000, "hour": 3_600_000}[timespan] * multiplier
    midnight = ny_midnight_ms(day)
    return _aggregate(minutes, midnight + (minutes.t - midnight) // width * width)


def bars_between(seed: int, ticker: str, multiplier: int, timespan: str, start: date, end: date) -> BarArrays:
    """All bars whose window starts on a New York day from ``start`` to ``end`` inclusive."""
    if timespan == "day":
        return ticker_daily_bars(seed, ticker, start, end)
    days = [start + timedelta(d) for d in range((end - start).days + 1)]
    return BarArrays.concat([day_bars(seed, ticker, multiplier, timespan, d) for d in days])


CALENDAR_SPANS = ("day", "week", "month", "quarter", "year")
_MONTHS_PER = {"month": 1, "quarter": 3, "year": 12}
_SUNDAY = date(2023, 1, 1).toordinal()  # a Sunday: week buckets start on Sundays, as Polygon's do


def period_start(day: date, timespan: str, multiplier: int) -> date:
    """The first calendar day of the ``multiplier`` x ``timespan`` bucket that holds ``day``."""
    if timespan == "day":
        return date.fromordinal(day.toordinal() // multiplier * multiplier)
    if timespan == "week":
        weeks = (day.toordinal() - _SUNDAY) // 7 // multiplier * multiplier
        return date.fromordinal(_SUNDAY + 7 * weeks)
    width = _MONTHS_PER[timespan] * multiplier
    month = (day.year * 12 + day.month - 1) // width * width
    return date(month // 12, month % 12 + 1, 1)


def calendar_bars(seed: int, ticker: str, multiplier: int, timespan: str, start_ms: int, end_ms: int) -> BarArrays:
    """Day/week/month/quarter/year bars folded from the daily bars whose day starts in [start_ms, end_ms]."""
    daily = bars_between(seed, ticker, 1, "day", ny_date(start_ms), ny_date(end_ms))
    daily = daily.take((daily.t >= start_ms) & (daily.t <= end_ms))
    days = [ny_date(t) for t in daily.t.tolist()]
    keys = np.array([ny_midnight_ms(period_start(d, timespan, multiplier)) for d in days], np.int64)
    return _aggregate(daily, keys)


def synthetic_bars(n: int, start: str = "2024-01-02", freq: str = "1min", seed: int = 0) -> pd.DataFrame:
    """``n`` plausible bars (random-walk prices) in the client's frame layout, one per ``freq`` step."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    open_ = np.concatenate([[close[0]], close[:-1]])
    spread = np.abs(rng.normal(0, 2e-3, n)) * close
    return pd.DataFrame({
        "time": pd.date_range(start, periods=n, freq=freq, tz="UTC"),
        "open": open_, "high": np.maximum(open_, close) + spread, "low": np.minimum(open_, close) - spread,
        "close": close, "volume": rng.integers(100, 100_000, n).astype("float64"),
        "vwap": (open_ + close) / 2, "transactions": rng.integers(1, 500, n),
    })
