"""Shared fetches (api.grouped_daily, api.derived_timeframes): the per-ticker run's rows from fewer requests."""

from datetime import date

import pandas as pd
import pytest

from perflab.api.client import PolygonClient
from perflab.errors import InputError
from perflab.measure.results import RequestStats
from perflab.pipeline.cluster import check_fixes
from perflab.pipeline.fixes import FixSet
from perflab.pipeline.presets import SYMBOLS_25
from perflab.pipeline.scheduler import Workload, run_backfill
from perflab.pipeline.shared_fetch import SharedFetch, share_fetches, weekdays

BASE = "db.copy,compute.vectorized"
START, END = date(2024, 3, 8), date(2024, 3, 11)  # Friday to Monday: 2 weekdays, a weekend and a DST change
WORKLOAD = Workload(("AAPL", "MSFT", "SPY"), ("1m", "5m", "1h", "1d"), START, END)
DERIVED_GROUP = ("1m", "5m", "1h")


def _table(engine, name: str) -> pd.DataFrame:
    frame = pd.read_sql_query(f"SELECT * FROM {name} ORDER BY symbol, timeframe, time", engine)
    return frame.drop(columns=[c for c in ("created_at", "computed_at") if c in frame.columns])


def _requests(result, timeframes) -> dict[str, int]:
    out: dict[str, int] = {}
    for job in result.jobs:
        if job.timeframe in timeframes:
            out[job.symbol] = out.get(job.symbol, 0) + job.requests
    return out


@pytest.mark.parametrize("fix", ["api.grouped_daily", "api.derived_timeframes",
                                 "api.grouped_daily,api.derived_timeframes"])
def test_shared_fetches_store_the_per_ticker_rows_with_fewer_requests(clean_db, sim, fix):
    per_ticker = run_backfill(WORKLOAD, PolygonClient(sim.url), clean_db, FixSet.parse(BASE))
    bars, feats = _table(clean_db, "market_data"), _table(clean_db, "quant_features")
    with clean_db.begin() as conn:
        conn.exec_driver_sql("TRUNCATE market_data, quant_features, fetch_coverage")
    shared = run_backfill(WORKLOAD, PolygonClient(sim.url), clean_db, FixSet.parse(f"{BASE},{fix},api.parallel"))
    assert per_ticker.failures == 0 and shared.failures == 0
    assert len(bars) > 0 and set(bars["timeframe"]) == set(WORKLOAD.timeframes)
    pd.testing.assert_frame_equal(_table(clean_db, "market_data"), bars)
    pd.testing.assert_frame_equal(_table(clean_db, "quant_features"), feats)
    daily = sum(_requests(shared, ("1d",)).values())
    if "api.grouped_daily" in fix:
        assert daily == len(weekdays(START, END)) == 2  # for all three symbols' 1d jobs, not one each
    else:
        assert daily == sum(_requests(per_ticker, ("1d",)).values()) == 3
    intraday = _requests(shared, DERIVED_GROUP)
    if "api.derived_timeframes" in fix:
        assert intraday == _requests(per_ticker, ("1m",))  # one 1m fetch per symbol serves 1m, 5m and 1h
    else:
        assert intraday == _requests(per_ticker, DERIVED_GROUP)
    assert shared.requests < per_ticker.requests
    assert shared.params["run_wide"] == [n for n in ("api.parallel", "api.grouped_daily", "api.derived_timeframes")
                                         if n in fix or n == "api.parallel"]


def test_only_the_runs_whole_range_is_shared_and_the_minutes_are_dropped_after_the_last_job(sim):
    client = PolygonClient(sim.url)
    shared = SharedFetch(client, ("AAPL", "MSFT", "SPY"), ("1m", "5m", "1h", "1d"), START, END, grouped_daily=True,
                         derived=True)
    assert shared.grouped_daily and shared.derived
    first, later = RequestStats(), RequestStats()
    five = shared.get_aggregates("AAPL", 5, "minute", START, END, stats=first).bars
    assert first.requests == 1 and "AAPL" in shared._minutes
    pd.testing.assert_frame_equal(five, client.get_aggregates("AAPL", 5, "minute", START, END).bars)
    hour = shared.get_aggregates("AAPL", 1, "hour", START, END, stats=later).bars
    minute = shared.get_aggregates("AAPL", 1, "minute", START, END, stats=later).bars
    assert later.requests == 0 and "AAPL" not in shared._minutes  # its three sharing jobs took their bars
    pd.testing.assert_frame_equal(hour, client.get_aggregates("AAPL", 1, "hour", START, END).bars)
    pd.testing.assert_frame_equal(minute, client.get_aggregates("AAPL", 1, "minute", START, END).bars)
    part = RequestStats()
    shared.get_aggregates("AAPL", 5, "minute", END, END, stats=part)  # a resume's or a window's range: fetched
    shared.get_aggregates("AAPL", 1, "day", END, END, stats=part)
    assert part.requests == 2 and shared._daily is None
    assert share_fetches(client, ("AAPL",), ("1d",), START, END, grouped_daily=False, derived=False) is client


def test_a_symbol_the_grouped_bars_do_not_name_fetches_its_own_daily_bars(sim):
    shared = SharedFetch(PolygonClient(sim.url), ("AAPL", "MSFT", "NOPE"), ("1d",), START, END, grouped_daily=True,
                         derived=False)
    stats = RequestStats()
    assert len(shared.get_aggregates("AAPL", 1, "day", START, END, stats=stats).bars) == 2 and stats.requests == 2
    own = shared.get_aggregates("NOPE", 1, "day", START, END, stats=stats).bars
    assert stats.requests == 3  # its own per-ticker request, after the shared ones
    pd.testing.assert_frame_equal(own, PolygonClient(sim.url).get_aggregates("NOPE", 1, "day", START, END).bars)


def test_a_cluster_refuses_the_shared_fetches_by_name():
    for name in ("api.grouped_daily", "api.derived_timeframes"):
        with pytest.raises(InputError, match=name.replace(".", r"\.") + " is not supported on a cluster"):
            check_fixes(FixSet.parse(name))


def test_each_fix_acts_only_where_it_saves_requests(sim):
    client = PolygonClient(sim.url)
    march = (date(2024, 3, 1), date(2024, 3, 31))  # 21 weekdays
    one_day = (date(2024, 3, 4), date(2024, 3, 4))
    assert share_fetches(client, ("AAPL", "MSFT"), ("1d",), *march, grouped_daily=True, derived=False) is client
    many = tuple(f"S{i}" for i in range(25))
    assert share_fetches(client, many, ("1d",), *march, grouped_daily=True, derived=False).grouped_daily
    intraday = ("5m", "15m", "30m", "1h")
    year = (date(2023, 1, 1), date(2023, 12, 31))  # 1m: 106 pages of 5000; the four fetched alone: 36
    assert share_fetches(client, ("AAPL",), intraday, *year, grouped_daily=False, derived=True) is client
    assert share_fetches(client, ("AAPL",), ("1m", *intraday), *year, grouped_daily=False, derived=True).derived
    assert share_fetches(client, ("AAPL",), intraday, *one_day, grouped_daily=False, derived=True).derived
    assert share_fetches(client, ("AAPL",), ("5m",), *one_day, grouped_daily=False, derived=True) is client


def test_grouped_days_are_fetched_at_once_and_noted_into_the_fetching_jobs_stage():
    from perflab.measure.timing import StageTimer
    from perflab.simulator import SimulatorConfig, start_simulator

    start, end = date(2024, 3, 4), date(2024, 3, 15)  # two weeks: ten grouped requests
    with start_simulator(SimulatorConfig(time_scale=0.1)) as slow:
        shared = SharedFetch(PolygonClient(slow.url), SYMBOLS_25[:11], ("1d",), start, end, grouped_daily=True,
                             derived=False)
        timer, stats = StageTimer(), RequestStats()
        with timer.stage("api"):
            bars = shared.get_aggregates("AAPL", 1, "day", start, end, stats=stats).bars
    requests = sorted(timer.intervals[0].requests)
    assert len(bars) == 10 and stats.requests == len(stats.latencies) == len(requests) == 10
    assert requests[1][0] < requests[0][1]  # the second day went before the first came back


def test_only_jobs_that_ask_for_the_whole_range_count_as_takers_of_the_shared_minutes():
    from perflab.pipeline.scheduler import whole_range_timeframes

    year = Workload(("AAPL",), ("1m", "5m", "15m", "1h", "1d"), date(2023, 1, 1), date(2023, 12, 31))
    month = Workload(("AAPL",), ("1m", "5m", "15m", "1h", "1d"), date(2024, 3, 4), date(2024, 3, 29))
    assert whole_range_timeframes(year, stream=False) == year.timeframes
    assert whole_range_timeframes(year, stream=True) == ("1h", "1d")  # 1m, 5m, 15m: windows of 13, 69, 208 days
    assert whole_range_timeframes(month, stream=True) == ("5m", "15m", "1h", "1d")
    # A streamed year: only the 1h job would take derived bars, for which a year of minutes (six pages against one)
    # is no saving, so nothing is shared and no symbol's year of minutes is held for jobs that never take it.
    streamed = SharedFetch(PolygonClient("http://127.0.0.1:1"), year.symbols, whole_range_timeframes(year, True),
                           year.start, year.end, grouped_daily=True, derived=True, page_limit=50_000)
    assert not streamed.derived and not streamed.grouped_daily
    shared = SharedFetch(PolygonClient("http://127.0.0.1:1"), month.symbols, whole_range_timeframes(month, True),
                         month.start, month.end, grouped_daily=False, derived=True, page_limit=50_000)
    assert shared.derived and shared._takers == {"AAPL": 3}  # 5m, 15m and 1h: freed once those three took theirs


def test_a_streamed_minute_job_takes_its_windows_from_the_shared_minutes(sim):
    from perflab.pipeline.scheduler import day_windows, window_days
    from perflab.timeframes import parse_timeframe

    start, end = date(2024, 3, 4), date(2024, 3, 29)  # the plan's month: 1m streams in two windows
    windows = day_windows(start, end, window_days(parse_timeframe("1m")))
    shared = SharedFetch(PolygonClient(sim.url), ("AAPL",), ("5m", "1h"), start, end, grouped_daily=False,
                         derived=True, page_limit=50_000, minute_windows=len(windows))
    stats, direct = RequestStats(), PolygonClient(sim.url)
    for first, last in windows:
        got = shared.get_aggregates("AAPL", 1, "minute", first, last, limit=50_000, stats=stats).bars
        pd.testing.assert_frame_equal(got, direct.get_aggregates("AAPL", 1, "minute", first, last, limit=50_000).bars)
    assert stats.requests == 1 and "AAPL" in shared._minutes  # one fetch of the month; 5m and 1h still to come
    for mult, span in ((5, "minute"), (1, "hour")):
        shared.get_aggregates("AAPL", mult, span, start, end, limit=50_000, stats=stats)
    assert stats.requests == 1 and "AAPL" not in shared._minutes  # every taker served: the minutes are freed
    shared.get_aggregates("AAPL", 1, "minute", *windows[0], limit=50_000, stats=stats)
    assert stats.requests == 2  # a window asked for again (a retry, a resume) goes to the API as without the fix
