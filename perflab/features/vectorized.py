"""numpy/bottleneck over a whole panel at once: one 2-D array per field, a row per series.

Series of different lengths are padded with NaN at the end (windows only look back, so the
padding never reaches a real bar). Per statistic: window max/min by doubling (exact, log2(w) passes);
window counts of small integers with bottleneck or an integer cumsum (exact); window sums (efficiency
path, trend slope) and the volatility regime's rank count as ordered sums of ``w`` shifted slices (no
running sum, so one huge bar never leaves a rounding residue in later windows; the slope and path sums
add in the loop's order and match it bit for bit); standard deviations from blocked Welford statistics
(O(1) per bar, no cancellation). Rows are processed in blocks small enough for each pass to stay in
cache, and each series' frame is assembled from views into the block's arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import bottleneck as bn
import numpy as np
import pandas as pd
from pandas.api.internals import create_dataframe_from_blocks

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


def _window_extreme(x: np.ndarray, w: int, op: np.ufunc) -> np.ndarray:
    """Max (``np.maximum``) or min of each window of ``w`` by doubling: ``op`` over spans of 2, 4, .. p <= w,
    then two overlapping spans of ``p`` cover the window. Exact, NaN if any NaN in the window, and
    log2(w) passes instead of a moving-window loop per row."""
    span, p = x, 1
    while 2 * p <= w:
        span = op(span[:, :-p], span[:, p:])  # span[:, i] now covers bars i .. i + 2p - 1
        p *= 2
    m = x.shape[1] - w + 1
    return _place(op(span[:, :m], span[:, w - p:w - p + m]), w, x.shape)


def _any_in_window(mask: np.ndarray, w: int) -> np.ndarray:
    """Whether each full window of ``w`` (ending at bars ``w-1 ..``) holds a true value: exact integer counts."""
    counts = np.cumsum(mask, axis=1, dtype=np.int32)
    inside = counts[:, w - 1:].copy()
    inside[:, 1:] -= counts[:, :-w]
    return inside > 0


def _weighted_window_sum(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    w = len(weights)
    m = x.shape[1] - w + 1
    acc = weights[0] * x[:, 0:m]
    for k in range(1, w):
        acc += weights[k] * x[:, k:k + m]
    return _place(acc, w, x.shape)


def _welford(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Running Welford (mean, M2) along axis 0 of ``blocks``, and the block minima they are taken about.

    Means are taken about each block's minimum so that Welford sees values of the size of their
    spread, not of their level. ``blocks`` is (position in block, rows, blocks); a loop over the few
    positions of a block keeps every step a plain elementwise op on a (rows, blocks) slab, written
    in place, far cheaper than ufunc.accumulate.
    """
    shift = np.fmin.reduce(blocks, axis=0)
    means, m2s = np.empty_like(blocks), np.empty_like(blocks)
    np.subtract(blocks[0], shift, out=means[0])
    m2s[0] = 0.0
    x, delta = np.empty_like(shift), np.empty_like(shift)
    for k in range(1, len(blocks)):
        mean, m2 = means[k], m2s[k]
        np.subtract(blocks[k], shift, out=x)
        np.subtract(x, means[k - 1], out=delta)
        np.multiply(delta, 1.0 / (k + 1), out=mean)
        mean += means[k - 1]
        np.subtract(x, mean, out=m2)
        m2 *= delta
        m2 += m2s[k - 1]
    return means, m2s, shift


def _window_std(x: np.ndarray, w: int) -> np.ndarray:
    """Sample std of each window of ``w``, O(1) per bar and without any running sum across windows.

    Bars are cut into blocks of ``w``; the window ending at position ``j`` of block ``b`` is the head
    of block ``b`` (positions ``0 .. j``) plus the tail of block ``b - 1`` (positions ``j+1 ..``).
    Welford statistics of every block head (forwards) and tail (backwards), taken about the block's
    minimum, are combined with Chan's formula, whose terms are all non-negative: no cancellation, so
    the result is as accurate as a two-pass std of the window, whatever came before it. Everything
    stays in the (position, rows, blocks) layout until the one transpose at the end.
    """
    rows, n = x.shape
    nb = -(-n // w)
    padded = np.full((rows, nb * w), np.nan)
    padded[:, :n] = x
    blocks = np.ascontiguousarray(padded.reshape(rows, nb, w).transpose(2, 0, 1))
    head_mean, head_m2, shift = _welford(blocks)
    tail_mean, tail_m2, _ = _welford(blocks[::-1])
    tail_mean, tail_m2 = tail_mean[::-1], tail_m2[::-1]
    var = np.empty_like(blocks)
    var[w - 1] = head_m2[w - 1]
    var[:w - 1, :, 0] = np.nan
    n_head = np.arange(1, w, dtype=float)[:, None, None]
    delta = (head_mean[:w - 1, :, 1:] - tail_mean[1:, :, :-1]) + (shift[:, 1:] - shift[:, :-1])
    delta *= delta
    delta *= n_head * (w - n_head) / w
    delta += tail_m2[1:, :, :-1]
    delta += head_m2[:w - 1, :, 1:]
    var[:w - 1, :, 1:] = delta
    var *= 1.0 / (w - 1)
    std = np.sqrt(var, out=var)
    _zero_flat_windows(std, blocks, shift, x)
    return std.transpose(1, 2, 0).reshape(rows, nb * w)[:, :n]


def _zero_flat_windows(std: np.ndarray, blocks: np.ndarray, low: np.ndarray, x: np.ndarray) -> None:
    """Set the std of flat windows to 0 (the rule in :mod:`definitions`), in the blocks layout of ``std``.

    A sample std never exceeds the window's spread ``max - min``, so a flat window has a std of at most
    ``FLAT_RTOL`` times its largest magnitude, itself at most the largest magnitude of the two blocks
    it spans. Windows under twice that bound (rounding margin) are the few candidates whose exact
    max and min are then gathered from ``x``; everything else is cheaper than a moving max/min.
    """
    w = len(blocks)
    size = np.fmax(np.abs(np.fmax.reduce(blocks, axis=0)), np.abs(low))
    bound = np.empty_like(std)
    bound[:] = size
    np.fmax(bound[:w - 1, :, 1:], size[:, :-1], out=bound[:w - 1, :, 1:])
    pos, row, blk = np.nonzero(std <= 2 * d.FLAT_RTOL * bound)
    if not len(pos):
        return
    end = blk * w + pos
    window = x[row[:, None], end[:, None] + np.arange(1 - w, 1)]
    hi, lo = window.max(axis=1), window.min(axis=1)
    flat = hi - lo <= d.FLAT_RTOL * np.maximum(np.abs(hi), np.abs(lo))
    std[pos[flat], row[flat], blk[flat]] = 0.0


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den != 0, num / den, np.nan)


def _step_flags(x: np.ndarray, better) -> np.ndarray:
    flags = np.full(x.shape, np.nan)
    flags[:, 1:] = better(x[:, 1:], x[:, :-1])
    flags[:, 1:][np.isnan(x[:, 1:]) | np.isnan(x[:, :-1])] = np.nan
    return flags


LABELS = np.array([None, d.VOL_LOW, d.VOL_NORMAL, d.VOL_HIGH, d.TREND_RANGE, d.TREND_UP, d.TREND_DOWN], dtype=object)
"""Text feature values by code; 0 is None (warm-up or NaN)."""


def _vol_regime(vol: np.ndarray, w: int) -> np.ndarray:
    """Codes 1-3 of :data:`LABELS` from the rank count; bars-major copy so every shifted slice is one contiguous run."""
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
    code[_any_in_window(np.isnan(vol), w)] = 0
    out = np.zeros(vol.shape, np.int8)
    out[:, w - 1:] = code
    return out


def _trend_regime(er: np.ndarray, slope: np.ndarray) -> np.ndarray:
    """Codes 4-6 of :data:`LABELS`."""
    trending = er >= d.TREND_ER
    code = np.select([trending & (slope > 0), trending & (slope < 0)], [5, 6], 4).astype(np.int8)
    code[np.isnan(er) | np.isnan(slope)] = 0
    return code


def _block(close: np.ndarray, high: np.ndarray, low: np.ndarray, win: FeatureWindows) -> tuple[np.ndarray, np.ndarray]:
    """Every feature of a block of rows (each row a series, NaN-padded to the same width).

    Returns the numeric features as one (13, rows, width) array and the text ones as one
    (2, rows, width) object array, both in :data:`definitions.FEATURE_COLUMNS` order.
    """
    shape = close.shape
    returns = np.full(shape, np.nan)
    prev, cur = close[:, :-1], close[:, 1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        returns[:, 1:] = np.where((prev > 0) & (cur > 0), np.log(cur / prev), np.nan)
    vol_short = _window_std(returns, win.vol_short)
    vol_long = _window_std(returns, win.vol_long)

    range_high = _window_extreme(high, win.range, np.maximum)
    range_low = _window_extreme(low, win.range, np.minimum)
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
    numeric = np.stack([
        returns, vol_short, vol_long, _ratio(vol_short, vol_long),
        range_high, range_low, dist_high, dist_low, _ratio(close - range_low, range_high - range_low),
        bn.move_sum(_step_flags(high, np.greater), win.range, axis=1),
        bn.move_sum(_step_flags(low, np.less), win.range, axis=1),
        slope, efficiency,
    ])
    text = LABELS[np.stack([_vol_regime(vol_short, win.regime), _trend_regime(efficiency, slope)])]
    return numeric, text


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


@dataclass(frozen=True)
class SeriesColumns:
    """One series' features: ``numeric`` (13, bars) and ``text`` (2, bars), in ``FEATURE_COLUMNS`` order."""

    numeric: np.ndarray
    text: np.ndarray


def panel_columns(series: Sequence[SeriesFields], windows: FeatureWindows = DEFAULT_WINDOWS) -> list[SeriesColumns]:
    """Every feature of every series, computed a block of rows at a time (views into the blocks)."""
    if not series:
        return []
    width = max(max(len(f[0]) for f in series), max(vars(windows).values()) + 1)
    rows = max(1, BLOCK_ELEMENTS // width)
    out: list[SeriesColumns] = []
    for start in range(0, len(series), rows):
        part = series[start:start + rows]
        numeric, text = _block(_pad(part, 0, width), _pad(part, 1, width), _pad(part, 2, width), windows)
        out.extend(SeriesColumns(numeric[:, row, :len(f[0])], text[:, row, :len(f[0])]) for row, f in enumerate(part))
    return out


COLUMNS = pd.Index(["time", *d.FEATURE_COLUMNS])
_NUMERIC_END = 1 + len(d.NUMERIC_COLUMNS)
_PLACEMENT = (np.array([0]), np.arange(1, _NUMERIC_END), np.arange(_NUMERIC_END, len(COLUMNS)))


def frame(bars: pd.DataFrame, columns: SeriesColumns) -> pd.DataFrame:
    """One series' feature frame: its bar times and the computed columns.

    Built from three ready-made blocks (times, numeric, text) without per-column copies or type
    inference: per-column construction cost more than computing the features.
    """
    times = bars["time"].array
    if isinstance(times, pd.arrays.NumpyExtensionArray):
        times = times.to_numpy().reshape(1, -1)
    blocks = list(zip((times, columns.numeric, columns.text), _PLACEMENT))
    return create_dataframe_from_blocks(blocks, index=pd.RangeIndex(len(bars)), columns=COLUMNS)


def compute_panel(series: Sequence[pd.DataFrame], windows: FeatureWindows = DEFAULT_WINDOWS) -> list[pd.DataFrame]:
    """Features of several series at once, one frame per series in the same order."""
    columns = panel_columns([fields(bars) for bars in series], windows)
    return [frame(bars, cols) for bars, cols in zip(series, columns)]


def compute(bars: pd.DataFrame, windows: FeatureWindows = DEFAULT_WINDOWS) -> pd.DataFrame:
    """Features of one (symbol, timeframe) series of bars, one row per bar."""
    return compute_panel([bars], windows)[0]
