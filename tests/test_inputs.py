from datetime import date

import pytest

from perflab.errors import InputError, PerflabError
from perflab.pipeline.presets import PRESETS, get_preset
from perflab.pipeline.scheduler import Workload
from perflab.timeframes import parse_timeframe


def test_presets_are_valid():
    for name in PRESETS:
        p = get_preset(name)
        assert p.start <= p.end and p.jobs == len(p.symbols) * len(p.timeframes)
    assert get_preset("standard").jobs == 125


@pytest.mark.parametrize("bad, match", [
    (dict(timeframes=["7m"]), "unknown timeframe '7m'"),
    (dict(start="2024-03-05", end="2024-03-01"), "after"),
    (dict(start="2024-13-01"), "not a date"),
    (dict(start="2030-01-01", end="2030-01-02"), "future"),
    (dict(symbols=[]), "no symbols"),
])
def test_workload_rejects_bad_input_with_a_named_fix(bad, match):
    args = dict(symbols=["AAPL"], timeframes=["1h"], start="2024-03-01", end="2024-03-05", today=date(2026, 1, 1))
    args.update(bad)
    with pytest.raises(PerflabError, match=match):
        Workload.parse(**args)


def test_unknown_preset_lists_known():
    with pytest.raises(InputError, match="smoke"):
        get_preset("huge")


def test_timeframe_mapping():
    tf = parse_timeframe("15m")
    assert (tf.multiplier, tf.timespan) == (15, "minute")


@pytest.mark.parametrize("ticker", ["AAPL", "brk.b", "BF-B", "GOOGL", "ABCDEFGHIJKL", "X:BTCUSD", "X:1INCHUSD",
                                    "C:EURUSD", "I:SPX", "I:VIX1D", "O:SPY251219C00650000"])
def test_real_polygon_ticker_forms_are_accepted(ticker):
    w = Workload.parse([ticker], ["1d"], "2024-03-04", "2024-03-05", today=date(2026, 1, 1))
    assert w.symbols == (ticker.upper(),)


@pytest.mark.parametrize("ticker, match", [
    ("AAPL;DROP TABLE market_data", r"has ';'"), ("AAPL MSFT", "has ' '"), ("ABCDEFGHIJKLM", "longer than 12"),
    ("X:ABCDEFGHIJKLM", "longer than 12"), ("ÄPPL", "has 'Ä'"), ("1AAPL", "starts with a letter"),
    (".A", "not a Polygon ticker"), ("A..B", "not a Polygon ticker"), ("Z:ABC", "not a Polygon ticker"),
    ("X:", "not a Polygon ticker"), ("O:SPY", "not a Polygon ticker"),
])
def test_malformed_tickers_are_rejected_with_the_rule(ticker, match):
    with pytest.raises(InputError, match=match):
        Workload.parse(["MSFT", ticker], ["1d"], "2024-03-04", "2024-03-05", today=date(2026, 1, 1))


def test_an_empty_symbol_in_the_list_is_rejected():
    with pytest.raises(InputError, match="empty symbol"):
        Workload.parse(["AAPL", "", "MSFT"], ["1d"], "2024-03-04", "2024-03-05", today=date(2026, 1, 1))
