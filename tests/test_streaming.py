"""Streaming (db.stream): a job in windows of days stores exactly what the whole-range path stores, window by window."""

from datetime import date

import pandas as pd
import pytest
import sqlalchemy as sa

from perflab.api.client import PolygonClient
from perflab.db.coverage import missing_ranges_many
from perflab.pipeline import scheduler
from perflab.pipeline.fixes import FixSet
from perflab.pipeline.scheduler import Workload, day_windows, history_bars, run_backfill, window_days
from perflab.studies.resilience import audit_bars
from perflab.timeframes import parse_timeframe

SMALL = Workload(("AAPL", "MSFT"), ("1h", "1d"), date(2024, 2, 26), date(2024, 3, 16))  # 3-day windows: 7 of them
WINDOW = 3


def _table(engine, name: str) -> pd.DataFrame:
    frame = pd.read_sql_query(f"SELECT * FROM {name} ORDER BY symbol, timeframe, time", engine)
    return frame.drop(columns=[c for c in ("created_at", "computed_at") if c in frame.columns])


def _empty(engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE market_data, quant_features, fetch_coverage")


def _reference(engine, sim, workload: Workload, spec: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Bars and features of the whole-range path, then the tables emptied."""
    result = run_backfill(workload, PolygonClient(sim.url), engine, FixSet.parse(spec))
    assert result.failures == 0, [j.error for j in result.jobs]
    tables = _table(engine, "market_data"), _table(engine, "quant_features")
    _empty(engine)
    return tables


class Recorder:
    """A client that notes each fetch's days and how many bars were stored when it was asked for them."""

    def __init__(self, client: PolygonClient, engine):
        self.client, self.engine, self.calls = client, engine, []

    @property
    def base_url(self) -> str:
        return self.client.base_url

    def get_aggregates(self, ticker, multiplier, timespan, start, end, **kw):
        with self.engine.connect() as conn:
            stored = conn.execute(sa.text("SELECT count(*) FROM market_data WHERE symbol = :s"),
                                  {"s": ticker}).scalar_one()
        result = self.client.get_aggregates(ticker, multiplier, timespan, start, end, **kw)
        self.calls.append((ticker, timespan, start, end, stored, len(result.bars)))
        return result

    def close(self) -> None:
        self.client.close()


def test_window_sizes_and_the_history_features_read():
    assert [window_days(parse_timeframe(t)) for t in ("1m", "5m", "15m", "1h", "1d")] == [13, 69, 208, 833, 20_000]
    assert day_windows(date(2024, 1, 1), date(2024, 1, 7), 3) == [(date(2024, 1, a), date(2024, 1, b))
                                                                  for a, b in ((1, 3), (4, 6), (7, 7))]
    assert day_windows(date(2024, 1, 1), date(2024, 1, 1), 13) == [(date(2024, 1, 1), date(2024, 1, 1))]
    assert history_bars() == 109  # vol_regime: 100 values of vol_short, each 10 returns, each one close back


GROUPED = "db.copy,compute.vectorized,db.group_commit,api.missing_only,api.parallel"


@pytest.mark.parametrize("spec", ["db.copy", GROUPED])
def test_windows_store_the_same_bars_and_features_as_the_whole_range(clean_db, sim, monkeypatch, spec):
    bars, features = _reference(clean_db, sim, SMALL, spec)
    monkeypatch.setattr(scheduler, "window_days", lambda tf: WINDOW)
    client = Recorder(PolygonClient(sim.url), clean_db)
    streamed = run_backfill(SMALL, client, clean_db, FixSet.parse(f"{spec},db.stream"))
    assert streamed.failures == 0 and streamed.rows_written == len(bars)
    assert sum(j.feature_rows for j in streamed.jobs) == len(features)
    assert {j.code_path["window_days"] for j in streamed.jobs} == {WINDOW}
    pd.testing.assert_frame_equal(_table(clean_db, "market_data"), bars)
    pd.testing.assert_frame_equal(_table(clean_db, "quant_features"), features)
    windows = day_windows(SMALL.start, SMALL.end, WINDOW)
    for symbol in SMALL.symbols:
        for timespan in ("hour", "day"):
            asked = [(c[2], c[3]) for c in client.calls if c[:2] == (symbol, timespan)]
            assert asked == windows  # one fetch per window, oldest first
    if "group_commit" not in spec:  # one job at a time, each window stored before the next is fetched
        hourly = [c for c in client.calls if c[:2] == ("AAPL", "hour")]
        assert [c[4] for c in hourly] == [sum(c[5] for c in hourly[:k]) for k in range(len(hourly))]
    if "missing_only" in spec:  # coverage recorded per window, with the window's bars
        with clean_db.connect() as conn:
            entries = conn.execute(sa.text("SELECT count(*) FROM fetch_coverage")).scalar_one()
        assert entries == len(SMALL.jobs()) * len(windows)


def test_history_shorter_than_the_features_read_changes_them(clean_db, sim, monkeypatch):
    workload = Workload(("AAPL",), ("1h",), SMALL.start, SMALL.end)
    _, features = _reference(clean_db, sim, workload, "compute.vectorized")
    monkeypatch.setattr(scheduler, "window_days", lambda tf: WINDOW)
    monkeypatch.setattr(scheduler, "history_bars", lambda: 108)
    run_backfill(workload, PolygonClient(sim.url), clean_db, FixSet.parse("compute.vectorized,db.stream"))
    short = _table(clean_db, "quant_features")
    assert len(short) == len(features)
    assert not short["vol_regime"].equals(features["vol_regime"])


def test_minute_bars_in_real_windows_equal_the_whole_range(clean_db, sim):
    workload = Workload(("NVDA",), ("1m",), date(2024, 2, 5), date(2024, 3, 1))  # 26 days: two 13-day windows
    spec = "db.copy,compute.vectorized,db.group_commit,api.big_pages"
    bars, features = _reference(clean_db, sim, workload, spec)
    streamed = run_backfill(workload, PolygonClient(sim.url), clean_db, FixSet.parse(f"{spec},db.stream"))
    assert streamed.failures == 0 and streamed.requests == 2 and len(bars) > 15_000
    pd.testing.assert_frame_equal(_table(clean_db, "market_data"), bars)
    pd.testing.assert_frame_equal(_table(clean_db, "quant_features"), features)


def test_group_commit_backlog_bounds_what_fetching_runs_ahead(clean_db, sim, monkeypatch):
    monkeypatch.setattr(scheduler, "window_days", lambda tf: WINDOW)
    monkeypatch.setattr(scheduler, "MAX_BACKLOG_ROWS", 1)  # room for one hand-over at a time
    workload = Workload(("AAPL",), ("1h",), SMALL.start, SMALL.end)
    client = Recorder(PolygonClient(sim.url), clean_db)
    result = run_backfill(workload, client, clean_db, FixSet.parse("db.group_commit,compute.vectorized,db.stream"))
    assert result.failures == 0
    fetched, window = 0, max(c[5] for c in client.calls)
    for _, _, _, _, stored, got in client.calls:
        assert fetched - stored <= window  # handed over, not yet committed: one window at most
        fetched += got
    assert fetched == result.rows_written > 3 * window


def test_streamed_resume_fetches_only_missing_windows_and_ends_exact(clean_db, sim, monkeypatch):
    spec = "api.missing_only,compute.vectorized,db.copy"
    bars, features = _reference(clean_db, sim, SMALL, spec)
    monkeypatch.setattr(scheduler, "window_days", lambda tf: WINDOW)
    first = run_backfill(SMALL, PolygonClient(sim.url), clean_db, FixSet.parse(f"{spec},db.stream"))
    assert first.failures == 0
    with clean_db.begin() as conn:  # a crash mid-job: MSFT 1h lost its windows from Mar 6 (bars, coverage)
        conn.execute(sa.text("DELETE FROM market_data WHERE symbol = 'MSFT' AND timeframe = '1h' "
                             "AND time >= '2024-03-06 05:00+00'"))
        conn.execute(sa.text("DELETE FROM fetch_coverage WHERE symbol = 'MSFT' AND timeframe = '1h' "
                             "AND first_day >= '2024-03-06'"))
        conn.execute(sa.text("UPDATE quant_features SET vol_short = NULL WHERE symbol = 'MSFT' AND timeframe = '1h'"))
    client = Recorder(PolygonClient(sim.url), clean_db)
    again = run_backfill(SMALL, client, clean_db, FixSet.parse(f"{spec},db.stream"))
    assert again.failures == 0
    assert [(c[0], c[1], c[2]) for c in client.calls] == [
        ("MSFT", "hour", date(2024, 3, d)) for d in (6, 9, 12, 15)]  # the missing days, in windows
    pd.testing.assert_frame_equal(_table(clean_db, "market_data"), bars)
    msft = features["symbol"].eq("MSFT") & features["timeframe"].eq("1h")
    pd.testing.assert_frame_equal(_table(clean_db, "quant_features")[msft.to_numpy()].reset_index(drop=True),
                                  features[msft].reset_index(drop=True))
    assert audit_bars(clean_db, SMALL, sim.config.seed).exact
    assert all(not r for r in missing_ranges_many(clean_db, SMALL.jobs(), SMALL.start, SMALL.end).values())
