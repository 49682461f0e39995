"""What each feature means, in one place, so every implementation computes the same numbers.

Conventions held by every implementation (``loop`` is the reference, the others must match it):

- Bars are one (symbol, timeframe) series ordered by time; windows count **bars**, not clock time, so
  a gap in time (a missing minute) does not widen a window.
- A window of ``w`` at bar ``i`` covers the ``w`` bars ``i-w+1 .. i``: it includes the current bar
  (bar ``i`` is closed when its features are computed) and never looks ahead. (The plan's loop
  excluded the current bar and used ddof=0; we do not.)
- Warm-up and gaps: a window with fewer than ``w`` values, or with any NaN in it, yields NaN (text
  features: ``None``). NaN inputs therefore blank every window they fall in, and nothing else.
- Standard deviations are sample ones (``ddof = 1``). A flat window, whose spread ``max - min`` is at
  most ``FLAT_RTOL`` times its largest magnitude (all equal, or equal but for rounding, like the
  returns of a geometric series), has a standard deviation of exactly 0: below that spread the
  digits left are rounding noise that no two algorithms agree on.

Features (windows from :class:`FeatureWindows`; ``c``, ``h``, ``l`` are close, high, low):

- ``log_return[i] = ln(c[i] / c[i-1])``; NaN at ``i = 0`` and where either close is NaN or <= 0.
- ``vol_short`` / ``vol_long``: std of ``log_return`` over ``vol_short`` / ``vol_long`` bars (the
  first window is complete at ``i = w``, since ``log_return[0]`` is NaN).
- ``vol_ratio = vol_short / vol_long``; NaN where ``vol_long`` is 0 or NaN.
- ``range_high`` / ``range_low``: max of ``h`` / min of ``l`` over ``range`` bars.
- ``dist_high = (range_high - c) / c`` and ``dist_low = (c - range_low) / c``; NaN unless ``c > 0``.
- ``range_position = (c - range_low) / (range_high - range_low)``; NaN where the range is empty (0).
- ``higher_highs`` / ``lower_lows``: over ``range`` bars, how many bars ``j`` had ``h[j] > h[j-1]``
  / ``l[j] < l[j-1]`` (each comparison needs bar ``j-1``, so complete at ``i = range``).
- ``trend_slope``: OLS slope of ``ln(c)`` on the bar number over ``trend`` bars, in log units per bar.
  With ``r`` the log returns inside the window it equals ``sum_k W[k] * r[k]``,
  ``W[k] = 6 k (T - k) / (T (T^2 - 1))`` for ``k = 1 .. T-1`` (:func:`slope_weights`); every
  implementation uses that form, which needs no centring of ``ln(c)`` and so keeps flat windows exact.
- ``efficiency_ratio`` (Kaufman): ``|c[i] - c[i-E]| / sum_{j=i-E+1..i} |c[j] - c[j-1]|`` with
  ``E = efficiency`` (the window covers ``E + 1`` closes); 0 where the path is 0 (no movement).
- ``vol_regime``: where ``vol_short[i]`` ranks among the ``regime`` values of ``vol_short`` ending
  at ``i``: ``below`` counts the values lower than ``vol_short[i] * (1 - TIE_RTOL)`` (values within
  ``TIE_RTOL`` are ties, so float rounding cannot flip a regime); ``pct = below / (regime - 1)``;
  ``low`` if ``pct < VOL_LOW_PCT``, ``high`` if ``pct > VOL_HIGH_PCT``, else ``normal``.
- ``trend_regime``: ``trend_up`` / ``trend_down`` where ``efficiency_ratio >= TREND_ER`` and the slope
  is positive / negative, else ``range``; ``None`` where either is NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from perflab.errors import InputError


@dataclass(frozen=True)
class FeatureWindows:
    """Window lengths in bars."""

    vol_short: int = 10
    vol_long: int = 50
    range: int = 20
    trend: int = 20
    efficiency: int = 20
    regime: int = 100

    def __post_init__(self) -> None:
        short = {k: v for k, v in vars(self).items() if not isinstance(v, int) or v < 2}
        if short:
            raise InputError(f"feature windows must be whole numbers of at least 2 bars, got {short}")


DEFAULT_WINDOWS = FeatureWindows()

TIE_RTOL = 1e-9
FLAT_RTOL = 1e-10
VOL_LOW_PCT = 0.2
VOL_HIGH_PCT = 0.8
TREND_ER = 0.3

VOL_LOW, VOL_NORMAL, VOL_HIGH = "low", "normal", "high"
TREND_UP, TREND_DOWN, TREND_RANGE = "trend_up", "trend_down", "range"

NUMERIC_COLUMNS = (
    "log_return", "vol_short", "vol_long", "vol_ratio",
    "range_high", "range_low", "dist_high", "dist_low", "range_position", "higher_highs", "lower_lows",
    "trend_slope", "efficiency_ratio",
)
TEXT_COLUMNS = ("vol_regime", "trend_regime")
FEATURE_COLUMNS = NUMERIC_COLUMNS + TEXT_COLUMNS
"""The columns of ``quant_features`` (besides symbol, timeframe, time), in table order."""


def slope_weights(trend: int) -> np.ndarray:
    """``W[k-1]`` for ``k = 1 .. trend-1``: the OLS slope of ``ln(c)`` as a weighted sum of returns."""
    k = np.arange(1, trend, dtype=float)
    return 6.0 * k * (trend - k) / (trend * (trend * trend - 1.0))
