"""Every feature implementation equals the loop reference (1e-9 relative, NaN positions and regimes exact)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from perflab.errors import InputError
from perflab.features import (
    FEATURE_COLUMNS,
    IMPLEMENTATIONS,
    compute_features,
    compute_panel,
    get_impl,
    parallel,
)
from perflab.features.definitions import DEFAULT_WINDOWS, FeatureWindows
from perflab.features.equality import compare, compare_panels

FAST = [name for name in IMPLEMENTATIONS if name != "loop"]


def bars_from_close(close, high=None, low=None, freq: str = "min") -> pd.DataFrame:
    close = np.asarray(close, dtype=float)
    n = len(close)
    return pd.DataFrame({
        "time": pd.date_range("2024-03-04 09:30", periods=n, freq=freq, tz="UTC"),
        "open": close, "high": close if high is None else np.asarray(high, float),
        "low": close if low is None else np.asarray(low, float), "close": close,
        "volume": np.ones(n), "vwap": close, "transactions": np.ones(n, dtype="int64"),
    })


def random_bars(rng: np.random.Generator, n: int, sigma: float = 0.002, start: float = 100.0) -> pd.DataFrame:
    close = start * np.exp(np.cumsum(rng.normal(0.0, sigma, n)))
    wick = np.abs(rng.normal(0.0, sigma / 2, (2, n)))
    return bars_from_close(np.round(close, 4), np.round(close * (1 + wick[0]), 4), np.round(close * (1 - wick[1]), 4))


def adversarial() -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(7)
    cases = {
        "empty": bars_from_close([]),
        "one bar": bars_from_close([101.5]),
        "fewer than the shortest window": random_bars(rng, 6),
        "fewer than the long window": random_bars(rng, 40),
        "fewer than the regime window": random_bars(rng, 105),
        "constant": bars_from_close(np.full(300, 42.0)),
        "constant, jump, constant": bars_from_close(np.r_[np.full(120, 10.0), np.full(180, 10_000.0)]),
        "integer ticks": bars_from_close(100 + np.cumsum(rng.integers(-1, 2, 400)).astype(float)),
        "alternating": bars_from_close(np.tile([100.0, 101.0], 200)),
        "geometric": bars_from_close(2.0 ** (np.arange(300) / 64)),
        "zero and negative prices": bars_from_close(np.r_[np.full(60, 5.0), 0.0, -1.0, np.full(200, 5.0)]
                                                    + np.r_[np.zeros(62), rng.normal(0, 0.01, 200)]),
    }
    gaps = random_bars(rng, 600)
    gaps = gaps.drop(index=rng.choice(600, 150, replace=False)).reset_index(drop=True)
    jump = gaps["close"].to_numpy().copy()
    jump[200:] *= 1e4
    cases["time gaps and a 1e4 price gap"] = bars_from_close(jump, jump * 1.001, jump * 0.999)
    nans = random_bars(rng, 500)
    for col in ("close", "high", "low"):
        nans.loc[rng.choice(500, 8, replace=False), col] = np.nan
    cases["NaNs in close, high and low"] = nans
    cases["leading NaN"] = bars_from_close(np.r_[np.nan, 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 200)))])
    return cases


ADVERSARIAL = adversarial()


@pytest.fixture(scope="module")
def random_panel():
    rng = np.random.default_rng(2024)
    return [random_bars(rng, n, sigma=s) for n, s in [(1500, 0.002), (800, 0.02), (1200, 0.0005), (130, 0.01)]]


@pytest.fixture(scope="module")
def loop_panel(random_panel):
    return compute_panel(random_panel, "loop")


@pytest.mark.parametrize("impl", FAST)
def test_random_series_equal_the_loop(impl, random_panel, loop_panel):
    diff = compare_panels(loop_panel, [compute_features(b, impl) for b in random_panel])
    assert diff.ok(), diff


@pytest.mark.parametrize("impl", FAST)
def test_a_panel_of_unequal_lengths_equals_the_loop(impl, random_panel, loop_panel):
    diff = compare_panels(loop_panel, compute_panel(random_panel, impl))
    assert diff.ok(), diff


@pytest.mark.parametrize("case", ADVERSARIAL, ids=list(ADVERSARIAL))
@pytest.mark.parametrize("impl", FAST)
def test_adversarial_inputs_equal_the_loop(impl, case):
    bars = ADVERSARIAL[case]
    diff = compare(compute_features(bars, "loop"), compute_features(bars, impl))
    assert diff.ok(), diff


def test_adversarial_panel_in_one_call_equals_the_loop():
    series = list(ADVERSARIAL.values())
    assert compare_panels(compute_panel(series, "loop"), compute_panel(series, "vectorized")).ok()


def test_parallel_through_the_pool_equals_the_loop(random_panel, loop_panel):
    policy = parallel.ParallelPolicy(workers=2, min_rows=1, min_cpus=1)
    assert len(policy.chunks([len(b) for b in random_panel])) == 2
    try:
        diff = compare_panels(loop_panel, parallel.compute_panel(random_panel, policy=policy))
    finally:
        parallel.shutdown()
    assert diff.ok(), diff


def test_output_is_the_quant_features_columns_one_row_per_bar(random_panel):
    bars = random_panel[0]
    for impl in IMPLEMENTATIONS:
        out = compute_features(bars, impl)
        assert list(out.columns) == ["time", *FEATURE_COLUMNS]
        assert len(out) == len(bars) and out["time"].equals(bars["time"])
        assert out["vol_regime"].dropna().isin(["low", "normal", "high"]).all()
        assert out["trend_regime"].dropna().isin(["trend_up", "trend_down", "range"]).all()


def test_definitions_match_their_textbook_forms(random_panel):
    bars = random_panel[0]
    out = compute_features(bars, "vectorized")
    w = DEFAULT_WINDOWS
    log_close = np.log(bars["close"])
    returns = log_close.diff()
    pd.testing.assert_series_equal(out["vol_short"], returns.rolling(w.vol_short).std(ddof=1),
                                   check_names=False, rtol=1e-9)
    pd.testing.assert_series_equal(out["range_high"], bars["high"].rolling(w.range).max(), check_names=False)
    i = 700
    window = log_close.to_numpy()[i + 1 - w.trend:i + 1]
    assert out["trend_slope"][i] == pytest.approx(np.polyfit(np.arange(w.trend), window, 1)[0], rel=1e-7)
    close = bars["close"].to_numpy()
    path = np.abs(np.diff(close[i - w.efficiency:i + 1])).sum()
    assert out["efficiency_ratio"][i] == pytest.approx(abs(close[i] - close[i - w.efficiency]) / path)
    assert out["vol_regime"][:w.regime + w.vol_short - 1].isna().all()
    assert out["vol_regime"][w.regime + w.vol_short - 1:].notna().all()


def test_window_includes_the_current_bar():
    close = np.r_[np.full(30, 10.0), 20.0]
    out = compute_features(bars_from_close(close, close, close), "loop")
    assert out["range_high"].iloc[-1] == 20.0 and out["range_high"].iloc[-2] == 10.0
    assert out["vol_short"].iloc[-2] == 0.0 and out["vol_short"].iloc[-1] > 0


def test_constant_prices_have_zero_vol_no_ratio_and_a_range_regime():
    out = compute_features(ADVERSARIAL["constant"], "vectorized")
    assert (out["vol_long"].dropna() == 0).all() and out["vol_ratio"].isna().all()
    assert (out["trend_regime"].dropna() == "range").all() and (out["vol_regime"].dropna() == "low").all()


def test_unknown_implementation_and_bad_windows_name_the_fix():
    with pytest.raises(InputError, match="use one of loop, vectorized, parallel"):
        get_impl("numba")
    with pytest.raises(InputError, match="at least 2 bars"):
        FeatureWindows(trend=1)


def test_policy_keeps_small_work_in_process():
    policy = parallel.ParallelPolicy(workers=2, min_rows=10_000, min_cpus=1)
    assert policy.chunks([500] * 10) == []
    assert parallel.ParallelPolicy(workers=1, min_rows=1, min_cpus=1).chunks([500] * 10) == []
    assert parallel.ParallelPolicy(workers=2, min_rows=1, min_cpus=10_000).chunks([500] * 10) == []
    chunks = parallel.ParallelPolicy(workers=3, min_rows=1, min_cpus=1).chunks([100, 100, 100, 100, 100, 100])
    assert [(c.start, c.stop) for c in chunks] == [(0, 2), (2, 4), (4, 6)]


def test_features_round_trip_through_quant_features(clean_db, random_panel):
    from perflab.db.feature_store import read_features, write_features

    out = compute_features(random_panel[3], "vectorized")
    assert write_features(clean_db, "TEST", "1m", out) == len(out)
    stored = read_features(clean_db, "TEST", "1m")
    assert compare(out, stored[["time", *FEATURE_COLUMNS]]).ok()
