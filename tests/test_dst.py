"""Dates across the 2024 daylight-saving changes: a [from, to] range means exactly the bars whose New York
session date lies in it, in the simulator's answers, in coverage and in resume alike.

The New York clock here is the test's own (zoneinfo), not perflab's, so a perflab day boundary computed as
midnight + 24 h or with a fixed UTC offset fails: 2024-03-10 is 23 hours long and 2024-11-03 is 25.
"""

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
import requests
import sqlalchemy as sa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from perflab.api.client import PolygonClient
from perflab.db.coverage import covered_days, drop_stored, missing_ranges, stored_bars
from perflab.db.writers import get_writer
from perflab.pipeline.resume import fetch_missing, mark_done
from perflab.simulator import LOCAL_API_KEY
from perflab.simulator.bars import bars_between
from perflab.timeframes import parse_timeframe

NY = ZoneInfo("America/New_York")
SPRING, FALL = date(2024, 3, 10), date(2024, 11, 3)  # both Sundays: the weekends of the changes
SPANS = [(1, "minute"), (5, "minute"), (1, "hour"), (4, "hour"), (1, "day")]
STORE_SYMBOL = "DIA"  # no other test stores it, so its coverage rows are this module's alone
AUTH = {"Authorization": f"Bearer {LOCAL_API_KEY}"}
SETTINGS = settings(max_examples=20, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


def ny_midnight(day: date) -> pd.Timestamp:
    return pd.Timestamp(datetime.combine(day, time(0), NY)).tz_convert("UTC")


def ny_dates(times: pd.Series) -> pd.Series:
    return times.dt.tz_convert(NY).dt.date


def days(first: date, last: date) -> list[date]:
    return [first + timedelta(i) for i in range((last - first).days + 1)]


def weekdays(first: date, last: date) -> set[date]:
    return {d for d in days(first, last) if d.weekday() < 5}


@st.composite
def near_a_change(draw, max_len: int = 8) -> tuple[date, date]:
    """A range starting within 9 days of a DST change, so it often starts, ends or straddles its weekend."""
    change = draw(st.sampled_from([SPRING, FALL]))
    first = change + timedelta(draw(st.integers(-9, 9)))
    return first, first + timedelta(draw(st.integers(0, max_len)))


def _raw(sim, span: str, first: str, last: str) -> dict:
    resp = requests.get(f"{sim.url}/v2/aggs/ticker/MSFT/range/1/{span}/{first}/{last}", headers=AUTH, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()


@pytest.mark.parametrize("span", ["minute", "hour", "day", "week"])
@pytest.mark.parametrize(("first", "last"), [("2024-03-09", "2024-03-10"), ("2024-11-02", "2024-11-03")])
def test_weekend_of_a_change_has_no_bars(sim, span, first, last):
    body = _raw(sim, span, first, last)
    assert body["resultsCount"] == 0 and "results" not in body, body.get("results", [])[:1]


def test_reported_case_msft_day_weekend_of_spring_change_is_empty(sim):
    assert _raw(sim, "day", "2024-03-09", "2024-03-10")["resultsCount"] == 0
    monday = _raw(sim, "day", "2024-03-09", "2024-03-11")["results"]
    assert [b["t"] for b in monday] == [ny_midnight(date(2024, 3, 11)).value // 1_000_000]


@SETTINGS
@given(span=st.lists(st.sampled_from(SPANS), min_size=1, max_size=3, unique=True), rng=near_a_change(),
       sort=st.sampled_from(["asc", "desc"]))
@example(span=SPANS, rng=(date(2024, 3, 8), date(2024, 3, 10)), sort="asc")
@example(span=SPANS, rng=(date(2024, 3, 10), date(2024, 3, 11)), sort="desc")
@example(span=SPANS, rng=(date(2024, 11, 1), date(2024, 11, 3)), sort="desc")
@example(span=SPANS, rng=(date(2024, 11, 3), date(2024, 11, 4)), sort="asc")
def test_simulator_serves_exactly_the_new_york_dates_asked_for(sim, span, rng, sort):
    first, last = rng
    client = PolygonClient(sim.url)
    for mult, timespan in span:
        got = client.get_aggregates("MSFT", mult, timespan, first, last, limit=2000, sort=sort).bars
        wider = bars_between(sim.config.seed, "MSFT", mult, timespan, first - timedelta(3), last + timedelta(3))
        in_range = ny_dates(pd.Series(pd.to_datetime(wider.t, unit="ms", utc=True))).between(first, last)
        got_ms = got["time"].dt.as_unit("ms").astype("int64").to_numpy()
        assert np.array_equal(got_ms, wider.t[in_range.to_numpy()]), (mult, timespan, first, last)
        assert np.array_equal(got["volume"].to_numpy(), wider.v[in_range.to_numpy()])
        assert set(ny_dates(got["time"])) == weekdays(first, last), "every weekday has bars, no other day does"
        local = got["time"].dt.tz_convert(NY)
        if timespan == "day":
            assert list(got["time"]) == [ny_midnight(d) for d in sorted(weekdays(first, last))]
        else:
            assert ((local.dt.hour >= 4) & (local.dt.hour < 20)).all(), "bars stay in the 04:00-20:00 session"


@SETTINGS
@given(rng=near_a_change(max_len=16))
@example(rng=(date(2024, 3, 9), date(2024, 3, 10)))
@example(rng=(date(2024, 3, 3), date(2024, 3, 16)))
@example(rng=(date(2024, 10, 27), date(2024, 11, 9)))
def test_week_bars_fold_the_day_bars_of_the_range_into_sunday_weeks(sim, rng):
    first, last = rng
    client = PolygonClient(sim.url)
    daily = client.get_aggregates("MSFT", 1, "day", first, last).bars
    weekly = client.get_aggregates("MSFT", 1, "week", first, last).bars
    assert set(ny_dates(daily["time"])) == weekdays(first, last)
    sunday = ny_dates(daily["time"]).map(lambda d: d - timedelta((d.weekday() + 1) % 7))
    folded = daily.groupby(sunday.to_numpy()).agg(volume=("volume", "sum"), high=("high", "max"),
                                                  low=("low", "min"), open=("open", "first"))
    assert list(weekly["time"]) == [ny_midnight(d) for d in folded.index]
    assert np.allclose(weekly["volume"], folded["volume"]) and np.allclose(weekly["high"], folded["high"])
    assert np.allclose(weekly["low"], folded["low"]) and np.allclose(weekly["open"], folded["open"])


@pytest.fixture(scope="module")
def store(engine):
    """The engine, with STORE_SYMBOL's bars and coverage emptied before each use and after the module."""

    def empty() -> None:
        with engine.begin() as conn:
            for table in ("market_data", "fetch_coverage"):
                conn.execute(sa.text(f"DELETE FROM {table} WHERE symbol = :s"), {"s": STORE_SYMBOL})

    yield engine, empty
    empty()


def _gaps(outer: tuple[date, date], inner: tuple[date, date]) -> list[tuple[date, date]]:
    (a, b), (c, d) = outer, inner
    return [g for g in ((a, c - timedelta(1)), (d + timedelta(1), b)) if g[0] <= g[1]]


@SETTINGS
@given(tf=st.sampled_from(["1m", "1h", "1d", "1d"]), rng=near_a_change(),
       pad=st.tuples(st.integers(0, 4), st.integers(0, 4)), inset=st.tuples(st.integers(0, 3), st.integers(0, 3)))
@example(tf="1d", rng=(date(2024, 3, 9), date(2024, 3, 10)), pad=(1, 1), inset=(0, 0))
@example(tf="1h", rng=(date(2024, 3, 10), date(2024, 3, 11)), pad=(2, 2), inset=(1, 0))
@example(tf="1d", rng=(date(2024, 11, 4), date(2024, 11, 8)), pad=(2, 0), inset=(0, 0))
@example(tf="1d", rng=(date(2024, 3, 11), date(2024, 3, 15)), pad=(0, 2), inset=(0, 1))
@example(tf="1d", rng=(date(2024, 10, 28), date(2024, 11, 1)), pad=(1, 3), inset=(2, 0))
@example(tf="1m", rng=(date(2024, 11, 1), date(2024, 11, 3)), pad=(0, 3), inset=(0, 2))
def test_coverage_and_resume_agree_with_the_simulator(sim, store, tf, rng, pad, inset):
    engine, empty = store
    empty()
    timeframe, client = parse_timeframe(tf), PolygonClient(sim.url)
    first, last = rng
    wide = (first - timedelta(pad[0]), last + timedelta(pad[1]))

    fetched, ranges = fetch_missing(client, engine, STORE_SYMBOL, timeframe, first, last)
    assert ranges == [(first, last)]
    assert set(ny_dates(fetched.bars["time"])) == weekdays(first, last)
    get_writer("orm_bulk").write(engine, STORE_SYMBOL, tf, fetched.bars)
    mark_done(engine, STORE_SYMBOL, timeframe, ranges)

    with engine.connect() as conn:
        recorded = conn.execute(sa.text("SELECT rows FROM fetch_coverage WHERE symbol = :s AND timeframe = :tf"),
                                {"s": STORE_SYMBOL, "tf": tf}).scalars().all()
    assert recorded == [len(fetched.bars)], "coverage's day bounds count exactly the bars of its New York dates"
    assert covered_days(engine, STORE_SYMBOL, tf) == set(days(first, last))
    assert missing_ranges(engine, STORE_SYMBOL, tf, *wide) == _gaps(wide, rng)
    narrow = (min(first + timedelta(inset[0]), last), max(last - timedelta(inset[1]), first))
    assert missing_ranges(engine, STORE_SYMBOL, tf, *narrow) == []

    stored = stored_bars(engine, STORE_SYMBOL, tf, *narrow)
    in_narrow = fetched.bars[ny_dates(fetched.bars["time"]).between(*narrow)]
    assert list(stored["time"]) == list(in_narrow["time"])

    everything = client.get_aggregates(STORE_SYMBOL, timeframe.multiplier, timeframe.timespan, *wide).bars
    resumed, todo = fetch_missing(client, engine, STORE_SYMBOL, timeframe, *wide)
    assert todo == _gaps(wide, rng)
    resumed_days = set(ny_dates(resumed.bars["time"]))
    assert resumed_days == {d for g in todo for d in weekdays(*g)}
    assert sorted([*fetched.bars["time"], *resumed.bars["time"]]) == list(everything["time"])
    assert list(drop_stored(engine, STORE_SYMBOL, tf, everything)["time"]) == list(resumed.bars["time"])
