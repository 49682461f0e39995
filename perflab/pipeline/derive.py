"""Intraday timeframes derived locally from 1-minute bars, as Polygon builds them, instead of fetched.

A 5m/15m/30m/1h/4h bar is the fold of the minute bars whose start falls in its window: o the first open, h the
highest high, l the lowest low, c the last close, v and n summed, vwap the volume-weighted mean of the minute
vwaps. Windows are aligned on the New York day (a 1h bar starts on the New York hour), as the simulator aligns
them. Daily bars are not derivable (Polygon's daily bar is not the fold of the minute bars): fetch them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from perflab.errors import InputError
from perflab.timeframes import NY, parse_timeframe

BAR_COLUMNS = ["time", "open", "high", "low", "close", "volume", "vwap", "transactions"]
_WIDTH_MS = {"minute": 60_000, "hour": 3_600_000}


def derive_bars(minutes: pd.DataFrame, timeframe: str) -> pd.DataFrame:
    """The ``timeframe`` bars folded from 1-minute bars (the client's frame layout), sorted by time."""
    tf = parse_timeframe(timeframe)
    if tf.timespan not in _WIDTH_MS:
        raise InputError(f"timeframe {timeframe!r} cannot be derived from minute bars: only minute and hour "
                         "timeframes can (fetch daily and longer bars: Polygon's are not the fold of its minutes)")
    width = _WIDTH_MS[tf.timespan] * tf.multiplier
    if minutes.empty:
        return minutes[BAR_COLUMNS].copy()
    bars = minutes.sort_values("time", kind="stable", ignore_index=True)
    t = bars["time"].dt.as_unit("ms").astype("int64").to_numpy()
    midnight = bars["time"].dt.tz_convert(NY).dt.normalize().dt.as_unit("ms").astype("int64").to_numpy()
    keys = midnight + (t - midnight) // width * width
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    ends = np.r_[starts[1:], len(keys)] - 1
    col = {c: bars[c].to_numpy() for c in BAR_COLUMNS[1:]}
    volume = np.add.reduceat(col["volume"].astype(np.float64), starts)
    pv = np.add.reduceat(col["vwap"] * col["volume"], starts)
    close = col["close"][ends]
    return pd.DataFrame({
        "time": pd.to_datetime(keys[starts], unit="ms", utc=True),
        "open": col["open"][starts],
        "high": np.maximum.reduceat(col["high"], starts),
        "low": np.minimum.reduceat(col["low"], starts),
        "close": close,
        "volume": volume,
        "vwap": np.divide(pv, volume, out=close.astype(np.float64), where=volume > 0),
        "transactions": np.add.reduceat(col["transactions"].astype(np.int64), starts),
    })


def derive_timeframes(minutes: pd.DataFrame, timeframes: list[str] | tuple[str, ...]) -> dict[str, pd.DataFrame]:
    """Each of ``timeframes`` derived from the same minute bars ("1m" is the minute bars themselves)."""
    return {tf: minutes[BAR_COLUMNS].reset_index(drop=True) if tf == "1m" else derive_bars(minutes, tf)
            for tf in timeframes}


__all__ = ["derive_bars", "derive_timeframes"]
