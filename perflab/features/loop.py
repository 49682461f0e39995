"""Per-bar Python loops: the plan's slow version, kept as the reference for correctness."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from perflab.features.definitions import DEFAULT_WINDOWS, FeatureWindows


def _rolling_std(values: list[float], window: int) -> list[float]:
    out = []
    for i in range(len(values)):
        if i + 1 < window:
            out.append(math.nan)
            continue
        chunk = values[i + 1 - window:i + 1]
        if any(math.isnan(x) for x in chunk):
            out.append(math.nan)
            continue
        out.append(float(np.std(chunk, ddof=1)))
    return out


def compute(bars: pd.DataFrame, windows: FeatureWindows = DEFAULT_WINDOWS) -> pd.DataFrame:
    """Features of one (symbol, timeframe) series of bars, one row per bar."""
    close = [float(x) for x in bars["close"]]
    returns = [math.nan] + [math.log(close[i] / close[i - 1]) for i in range(1, len(close))]
    vol_short = _rolling_std(returns, windows.vol_short)
    vol_long = _rolling_std(returns, windows.vol_long)
    ratio = [s / lg if lg and not math.isnan(lg) else math.nan for s, lg in zip(vol_short, vol_long)]
    return pd.DataFrame({
        "time": bars["time"].to_numpy(), "log_return": returns, "vol_short": vol_short,
        "vol_long": vol_long, "vol_ratio": ratio,
    })
