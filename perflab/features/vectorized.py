"""numpy/bottleneck over a whole panel at once: one 2-D array per field, a row per series.

Series of different lengths are padded with NaN at the end (windows only look back, so the
padding never reaches a real bar). Per statistic: running max/min/sum of small integers with
bottleneck (exact, O(1) per bar); window sums (efficiency path, trend slope) and the volatility
regime's rank count as ordered sums of ``w`` shifted slices (no running sum, so one huge bar never
leaves a rounding residue in later windows; the slope and path sums add in the loop's order and
match it bit for bit); standard deviations from blocked Welford statistics (O(1) per bar, no
cancellation). Rows are processed in blocks small enough for each pass to stay in cache.
"""

from __future__ import annotations

from collections.abc import Sequence

import bottleneck as bn
import numpy as np
import pandas as pd

from perflab.features import definitions as d
from perflab.features.definitions import DEFAULT_WINDOWS, FeatureWindows

BLOCK_ELEMENTS = 1 << 17
"""Elements (rows x bars) of one block of the panel: small enough for its temporaries to stay in cache."""


def _place(values: np.ndarray, w: int, shape: tuple[int, int]) -> np.ndarray:
    """Windows ending at bars ``w-1 ..`` into a full-width array, NaN for the warm-up."""
    out = np.full(shape, np.nan)
    out[:, w - 1:] = values
    return out


def _window_sum(x: np.ndarray, w: int) -> np.ndarray:
    """Sum of each window of ``w``, added in bar order (NaN if any NaN in it)."""
    m = x.shape[1] - w + 1
    acc = x[:, 0:m].astype(float)
    for k in range(1, w):
        acc += x[:, k:k + m]
    return _place(acc, w, x.shape)


def _weighted_window_sum(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    w = len(weights)
    m = x.shape[1] - w + 1
    acc = weights[0] * x[:, 0:m]
    for k in range(1, w):
        acc += weights[k] * x[:, k:k + m]
    return _place(acc, w, x.shape)


def _running(blocks: np.ndarray) -> tuple[np.ndarray, ...]:
    """Running max, min and Welford (mean, M2) along axis 0 of ``blocks``, plus the block minima.

    Means are taken about each block's minimum (returned last), so that Welford sees values of the
    size of their spread, not of their level.

    ``blocks`` is (position in block, rows, blocks); a loop over the few positions of a block keeps
    every step a plain elementwise op on a (rows, blocks) slab, far cheaper than ufunc.accumulate.
    """
    shift = np.fmin.reduce(blocks, axis=0)
    out = tuple(np.empty_like(blocks) for _ in range(4))
    hi, lo, means, m2s = out
    hi[0] = lo[0] = blocks[0]
    mean, m2 = blocks[0] - shift, np.zeros_like(shift)
    means[0], m2s[0] = mean, m2
    for k in range(1, len(blocks)):
        np.maximum(hi[k - 1], blocks[k], out=hi[k])
        np.minimum(lo[k - 1], blocks[k], out=lo[k])
        x = blocks[k] - shift
        delta = x - mean
        mean = mean + delta / (k + 1)
        m2 = m2 + delta * (x - mean)
        means[k], m2s[k] = mean, m2
    return hi, lo, means, m2s, shift


def _window_std(x: np.ndarray, w: int) -> np.ndarray:
    """Sample std of each window of ``w``, O(1) per bar and without any running sum across windows.

    Bars are cut into blocks of ``w``; a window is the tail of one block plus the head of the next.
    Welford statistics of every block head (forwards) and tail (backwards), taken about the block's
    minimum, are combined with Chan's formula, whose terms are all non-negative: no cancellation, so
    the result is as accurate as a two-pass std of the window, whatever came before it. Window
    max/min come from the same blocks (running max/min of heads and tails) for the flat-window rule.
    """
    rows, n = x.shape
    nb = -(-n // w)
    padded = np.full((rows, nb * w), np.nan)
    padded[:, :n] = x
    blocks = np.ascontiguousarray(padded.reshape(rows, nb, w).transpose(2, 0, 1))

    def flat(a: np.ndarray) -> np.ndarray:
        return a.transpose(1, 2, 0).reshape(rows, nb * w)

    *head_stats, shift = _running(blocks)
    *tail_stats, _ = _running(blocks[::-1])
    head_max, head_min, head_mean, head_m2 = (flat(a) for a in head_stats)
    tail_max, tail_min, tail_mean, tail_m2 = (flat(a[::-1]) for a in tail_stats)
    shift = np.repeat(shift, w, axis=1)
    m = n - w + 1
    head, tail = slice(w - 1, n), slice(0, m)
    n_head = (np.arange(m) % w).astype(float)
    delta = (head_mean[:, head] - tail_mean[:, tail]) + (shift[:, head] - shift[:, tail])
    m2 = np.where(n_head == 0, tail_m2[:, tail],
                  tail_m2[:, tail] + head_m2[:, head] + delta * delta * (n_head * (w - n_head) / w))
    std = np.sqrt(m2 / (w - 1))
    hi = np.where(n_head == 0, tail_max[:, tail], np.maximum(tail_max[:, tail], head_max[:, head]))
    lo = np.where(n_head == 0, tail_min[:, tail], np.minimum(tail_min[:, tail], head_min[:, head]))
    std[hi - lo <= d.FLAT_RTOL * np.maximum(np.abs(hi), np.abs(lo))] = 0.0
    return _place(std, w, x.shape)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den != 0, num / den, np.nan)


def _step_flags(x: np.ndarray, better) -> np.ndarray:
    flags = np.full(x.shape, np.nan)
    flags[:, 1:] = better(x[:, 1:], x[:, :-1])
    flags[:, 1:][np.isnan(x[:, 1:]) | np.isnan(x[:, :-1])] = np.nan
    return flags


VOL_LABELS = np.array([None, d.VOL_LOW, d.VOL_NORMAL, d.VOL_HIGH], dtype=object)
TREND_LABELS = np.array([None, d.TREND_RANGE, d.TREND_UP, d.TREND_DOWN], dtype=object)


def _vol_regime(vol: np.ndarray, w: int) -> np.ndarray:
    """Regime codes from the rank count; bars-major copy so every shifted slice is one contiguous run."""
    by_bar = np.ascontiguousarray(vol.T)
    m = by_bar.shape[0] - w + 1
    threshold = by_bar[w - 1:] * (1 - d.TIE_RTOL)
    below = np.zeros(threshold.shape, np.uint8 if w < 256 else np.int32)
    lower = np.empty(threshold.shape, bool)
    for k in range(w):
        np.less(by_bar[k:k + m], threshold, out=lower)
        np.add(below, lower.view(np.uint8), out=below, casting="unsafe")
    pct = below.T / (w - 1)
    code = np.where(pct < d.VOL_LOW_PCT, 1, np.where(pct > d.VOL_HIGH_PCT, 3, 2))
    code[_window_sum(np.isnan(vol), w)[:, w - 1:] > 0] = 0
    out = np.zeros(vol.shape, np.int8)
    out[:, w - 1:] = code
    return VOL_LABELS[out]


def _trend_regime(er: np.ndarray, slope: np.ndarray) -> np.ndarray:
    trending = er >= d.TREND_ER
    code = np.select([trending & (slope > 0), trending & (slope < 0)], [2, 3], 1)
    code[np.isnan(er) | np.isnan(slope)] = 0
    return TREND_LABELS[code]


def _block(close: np.ndarray, high: np.ndarray, low: np.ndarray, win: FeatureWindows) -> dict[str, np.ndarray]:
    """Every feature of a block of rows (each row a series, NaN-padded to the same width)."""
    shape = close.shape
    returns = np.full(shape, np.nan)
    prev, cur = close[:, :-1], close[:, 1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        returns[:, 1:] = np.where((prev > 0) & (cur > 0), np.log(cur / prev), np.nan)
    vol_short = _window_std(returns, win.vol_short)
    vol_long = _window_std(returns, win.vol_long)

    range_high = bn.move_max(high, win.range, axis=1)
    range_low = bn.move_min(low, win.range, axis=1)
    positive = close > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        dist_high = np.where(positive, (range_high - close) / close, np.nan)
        dist_low = np.where(positive, (close - range_low) / close, np.nan)

    moves = np.full(shape, np.nan)
    moves[:, 1:] = np.abs(close[:, 1:] - close[:, :-1])
    path = _window_sum(moves, win.efficiency)
    net = np.full(shape, np.nan)
    net[:, win.efficiency:] = np.abs(close[:, win.efficiency:] - close[:, :-win.efficiency])
    with np.errstate(divide="ignore", invalid="ignore"):
        efficiency = np.where(path == 0, 0.0, net / path)
    efficiency[np.isnan(net) | np.isnan(path)] = np.nan
    slope = _weighted_window_sum(returns, d.slope_weights(win.trend))
    return {
        "log_return": returns, "vol_short": vol_short, "vol_long": vol_long,
        "vol_ratio": _ratio(vol_short, vol_long),
        "range_high": range_high, "range_low": range_low, "dist_high": dist_high, "dist_low": dist_low,
        "range_position": _ratio(close - range_low, range_high - range_low),
        "higher_highs": bn.move_sum(_step_flags(high, np.greater), win.range, axis=1),
        "lower_lows": bn.move_sum(_step_flags(low, np.less), win.range, axis=1),
        "trend_slope": slope, "efficiency_ratio": efficiency,
        "vol_regime": _vol_regime(vol_short, win.regime),
        "trend_regime": _trend_regime(efficiency, slope),
    }


SeriesFields = tuple[np.ndarray, np.ndarray, np.ndarray]
"""(close, high, low) of one series, as float arrays of equal length."""


def fields(bars: pd.DataFrame) -> SeriesFields:
    """The three price fields the features read."""
    return tuple(bars[f].to_numpy(dtype=float) for f in ("close", "high", "low"))  # type: ignore[return-value]


def _pad(series: Sequence[SeriesFields], field: int, width: int) -> np.ndarray:
    out = np.full((len(series), width), np.nan)
    for row, arrays in enumerate(series):
        out[row, :len(arrays[field])] = arrays[field]
    return out


def panel_columns(series: Sequence[SeriesFields], windows: FeatureWindows = DEFAULT_WINDOWS) -> list[dict]:
    """Every feature column of every series, computed a block of rows at a time."""
    if not series:
        return []
    width = max(max(len(f[0]) for f in series), max(vars(windows).values()) + 1)
    rows = max(1, BLOCK_ELEMENTS // width)
    out: list[dict] = []
    for start in range(0, len(series), rows):
        part = series[start:start + rows]
        cols = _block(_pad(part, 0, width), _pad(part, 1, width), _pad(part, 2, width), windows)
        out.extend({name: cols[name][row, :len(f[0])] for name in d.FEATURE_COLUMNS} for row, f in enumerate(part))
    return out


def frame(bars: pd.DataFrame, columns: dict) -> pd.DataFrame:
    """One series' feature frame: its bar times and the computed columns."""
    data = {"time": bars["time"].array}
    data.update({c: columns[c] for c in d.NUMERIC_COLUMNS})
    data.update({c: pd.Series(columns[c], dtype=object, copy=False) for c in d.TEXT_COLUMNS})
    return pd.DataFrame(data, copy=False)


def compute_panel(series: Sequence[pd.DataFrame], windows: FeatureWindows = DEFAULT_WINDOWS) -> list[pd.DataFrame]:
    """Features of several series at once, one frame per series in the same order."""
    columns = panel_columns([fields(bars) for bars in series], windows)
    return [frame(bars, cols) for bars, cols in zip(series, columns)]


def compute(bars: pd.DataFrame, windows: FeatureWindows = DEFAULT_WINDOWS) -> pd.DataFrame:
    """Features of one (symbol, timeframe) series of bars, one row per bar."""
    return compute_panel([bars], windows)[0]
