"""What each feature means, in one place, so every implementation computes the same numbers.

Conventions held by every implementation:
- ``log_return[i] = ln(close[i] / close[i-1])``; NaN at i = 0.
- A window of ``w`` covers the ``w`` values ending at and including bar ``i`` (no look-ahead: bar
  ``i`` is closed when its features are computed).
- Standard deviations use ``ddof = 1`` (sample); a window with any NaN, or fewer than ``w`` values
  (the warm-up), yields NaN.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FeatureWindows:
    """Window lengths in bars."""

    vol_short: int = 10
    vol_long: int = 50


DEFAULT_WINDOWS = FeatureWindows()

FEATURE_COLUMNS = ("log_return", "vol_short", "vol_long", "vol_ratio")
