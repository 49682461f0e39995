"""Per-bar Python loops: the plan's slow version, kept as the reference for correctness.

Every feature is computed bar by bar from the window ending at that bar, exactly as
:mod:`perflab.features.definitions` words it; no trick, no shared state between bars.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import pairwise

import numpy as np
import pandas as pd

from perflab.features import definitions as d
from perflab.features.definitions import DEFAULT_WINDOWS, FeatureWindows

NAN = math.nan


def _windows(values: list[float], w: int, stat: Callable[[list[float]], object], empty: object = NAN) -> list:
    """``stat`` of each complete, NaN-free window of ``w`` values ending at each bar; ``empty`` elsewhere."""
    out = []
    for i in range(len(values)):
        chunk = values[i + 1 - w:i + 1] if i + 1 >= w else None
        out.append(empty if chunk is None or any(math.isnan(x) for x in chunk) else stat(chunk))
    return out


def _std(chunk: list[float]) -> float:
    hi, lo = max(chunk), min(chunk)
    return 0.0 if hi - lo <= d.FLAT_RTOL * max(abs(hi), abs(lo)) else float(np.std(chunk, ddof=1))


def _log_return(prev: float, cur: float) -> float:
    return math.log(cur / prev) if prev > 0 and cur > 0 else NAN


def _step_flags(values: list[float], better: Callable[[float, float], bool]) -> list[float]:
    flags = [NAN][:len(values)]
    for prev, cur in pairwise(values):
        flags.append(NAN if math.isnan(prev) or math.isnan(cur) else float(better(cur, prev)))
    return flags


def _ratio(num: float, den: float) -> float:
    return num / den if den != 0 and not math.isnan(den) else NAN


def _vol_regime(chunk: list[float]) -> str:
    current = chunk[-1]
    below = sum(1 for v in chunk if v < current * (1 - d.TIE_RTOL))
    pct = below / (len(chunk) - 1)
    return d.VOL_LOW if pct < d.VOL_LOW_PCT else d.VOL_HIGH if pct > d.VOL_HIGH_PCT else d.VOL_NORMAL


def _trend_regime(er: float, slope: float) -> str | None:
    if math.isnan(er) or math.isnan(slope):
        return None
    if er >= d.TREND_ER and slope > 0:
        return d.TREND_UP
    if er >= d.TREND_ER and slope < 0:
        return d.TREND_DOWN
    return d.TREND_RANGE


def compute(bars: pd.DataFrame, windows: FeatureWindows = DEFAULT_WINDOWS) -> pd.DataFrame:
    """Features of one (symbol, timeframe) series of bars, one row per bar."""
    close = [float(x) for x in bars["close"]]
    high = [float(x) for x in bars["high"]]
    low = [float(x) for x in bars["low"]]
    n = len(close)
    returns = [NAN][:n] + [_log_return(close[i - 1], close[i]) for i in range(1, n)]
    vol_short = _windows(returns, windows.vol_short, _std)
    vol_long = _windows(returns, windows.vol_long, _std)
    vol_ratio = [_ratio(s, lg) for s, lg in zip(vol_short, vol_long)]

    range_high = _windows(high, windows.range, max)
    range_low = _windows(low, windows.range, min)
    dist_high, dist_low, position = [], [], []
    for c, hi, lo in zip(close, range_high, range_low):
        dist_high.append((hi - c) / c if c > 0 else NAN)
        dist_low.append((c - lo) / c if c > 0 else NAN)
        position.append(_ratio(c - lo, hi - lo))
    higher_highs = _windows(_step_flags(high, lambda a, b: a > b), windows.range, sum)
    lower_lows = _windows(_step_flags(low, lambda a, b: a < b), windows.range, sum)

    weights = [float(w) for w in d.slope_weights(windows.trend)]
    slope = _windows(returns, windows.trend - 1, lambda rs: sum(w * r for w, r in zip(weights, rs)))
    moves = [NAN][:n] + [abs(close[i] - close[i - 1]) for i in range(1, n)]
    path = _windows(moves, windows.efficiency, sum)
    efficiency = []
    for i, p in enumerate(path):
        net = abs(close[i] - close[i - windows.efficiency]) if i >= windows.efficiency else NAN
        efficiency.append(NAN if math.isnan(p) or math.isnan(net) else 0.0 if p == 0 else net / p)

    vol_regime = _windows(vol_short, windows.regime, _vol_regime, empty=None)
    trend_regime = [_trend_regime(er, s) for er, s in zip(efficiency, slope)]
    return _frame(bars, [returns, vol_short, vol_long, vol_ratio, range_high, range_low, dist_high, dist_low,
                         position, higher_highs, lower_lows, slope, efficiency], [vol_regime, trend_regime])


def _frame(bars: pd.DataFrame, numeric: Sequence[list[float]], text: Sequence[list]) -> pd.DataFrame:
    data: dict = {"time": bars["time"].array}
    data.update({name: np.asarray(col, dtype=float) for name, col in zip(d.NUMERIC_COLUMNS, numeric)})
    data.update({name: pd.Series(col, dtype=object) for name, col in zip(d.TEXT_COLUMNS, text)})
    return pd.DataFrame(data)


def compute_panel(series: Sequence[pd.DataFrame], windows: FeatureWindows = DEFAULT_WINDOWS) -> list[pd.DataFrame]:
    """Features of several series, one after the other."""
    return [compute(bars, windows) for bars in series]
