from datetime import date

import pytest

from perflab.backfill import Workload
from perflab.errors import InputError, PerflabError
from perflab.presets import PRESETS, get_preset
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
