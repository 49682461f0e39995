"""Group commit (db.group_commit): many jobs per transaction, the same rows as the per-job path, exactly once."""

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from perflab.api.client import PolygonClient
from perflab.db import binary_copy as bc
from perflab.db import driver
from perflab.db.coverage import missing_ranges, missing_ranges_many
from perflab.db.group_store import SeriesWrite, write_group
from perflab.db.writers import prepare
from perflab.features import compute_panel
from perflab.pipeline.fixes import FixSet
from perflab.pipeline.presets import get_preset
from perflab.pipeline.scheduler import Workload, run_backfill

SMOKE = get_preset("smoke")


def _table(engine, name: str, order: str = "symbol, timeframe, time") -> pd.DataFrame:
    drop = {"created_at", "computed_at"}
    frame = pd.read_sql_query(f"SELECT * FROM {name} ORDER BY {order}", engine)
    return frame.drop(columns=[c for c in frame.columns if c in drop])


def test_binary_copy_round_trips_nulls_texts_and_empty_strings(driver_db):
    rows = pd.DataFrame({
        "time": pd.date_range("2024-03-04 14:30", periods=5, freq="min", tz="UTC"),
        "x": [1.5, np.nan, -0.0, 1e300, np.nan],
        "label": ["low", None, "", "trend_up", "low"],
        "n": pd.array([1, None, 3, 4, 2**62], dtype="Int64"),
    })
    payload = bc.encode([bc.text("AAPL"), bc.timestamptz(rows["time"]), bc.float8(rows["x"]),
                         bc.text(rows["label"].to_numpy(dtype=object)), bc.int8(rows["n"])], len(rows))
    raw = driver_db.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("CREATE TEMP TABLE t (s text, time timestamptz, x float8, label text, n int8)")
        driver.copy_in(cur, "COPY t FROM STDIN (FORMAT binary)", payload)
        cur.execute("SELECT s, time, x, label, n FROM t ORDER BY time")
        got = cur.fetchall()
    finally:
        raw.rollback()
        raw.close()
    assert [g[0] for g in got] == ["AAPL"] * 5
    assert [pd.Timestamp(g[1]) for g in got] == list(rows["time"])
    assert got[0][2] == 1.5 and got[1][2] is None and got[3][2] == 1e300 and got[4][2] is None
    assert [g[3] for g in got] == ["low", None, "", "trend_up", "low"]
    assert [g[4] for g in got] == [1, None, 3, 4, 2**62]


def _fetch(sim, jobs):
    client = PolygonClient(sim.url)
    out = []
    for symbol, tf in jobs:
        mult, span = {"5m": (5, "minute"), "1h": (1, "hour"), "1d": (1, "day")}[tf]
        out.append((symbol, tf, client.get_aggregates(symbol, mult, span, SMOKE.start, SMOKE.end).bars))
    return out


def test_a_group_writes_what_the_per_job_path_writes_and_twice_is_once(driver_db, sim):
    fetched = _fetch(sim, [("AAPL", "5m"), ("MSFT", "1h"), ("NVDA", "1d")])
    items = []
    for symbol, tf, bars in fetched:
        prepared = prepare(bars)
        items.append(SeriesWrite(symbol, tf, prepared, compute_panel([prepared], "vectorized")[0],
                                 [(SMOKE.start, SMOKE.end)]))
    write_group(driver_db, items)
    bars_once, feats_once = _table(driver_db, "market_data"), _table(driver_db, "quant_features")
    write_group(driver_db, items)  # a retried or repeated group: stored bars kept, features replaced
    pd.testing.assert_frame_equal(_table(driver_db, "market_data"), bars_once)
    pd.testing.assert_frame_equal(_table(driver_db, "quant_features"), feats_once)
    assert len(bars_once) == sum(len(b) for _, _, b in fetched) == len(feats_once)
    assert missing_ranges(driver_db, "AAPL", "5m", SMOKE.start, SMOKE.end) == []


def test_new_features_are_copied_straight_in_and_stored_ones_merged(clean_db, sim, monkeypatch):
    from perflab.db import group_store

    fetched = _fetch(sim, [("AAPL", "5m"), ("MSFT", "1h")])
    items = [SeriesWrite(s, tf, prepare(b), compute_panel([prepare(b)], "vectorized")[0]) for s, tf, b in fetched]
    paths = []
    monkeypatch.setattr(group_store, "features_copy_payload",
                        lambda i, real=group_store.features_copy_payload: paths.append("copy") or real(i))
    monkeypatch.setattr(group_store, "features_payload",
                        lambda i, real=group_store.features_payload: paths.append("merge") or real(i))
    write_group(clean_db, items[:1])
    once = _table(clean_db, "quant_features")
    write_group(clean_db, items)  # AAPL's features are stored now: the whole group merges
    assert paths == ["copy", "merge"]
    pd.testing.assert_frame_equal(_table(clean_db, "quant_features").iloc[:len(once)], once)  # copied = merged
    feats = _table(clean_db, "quant_features")
    assert feats.isna().any().any() and len(feats) == sum(len(i.features) for i in items)


def test_group_commit_backfill_stores_the_same_rows_as_the_per_job_path(clean_db, sim):
    workload = Workload.from_preset(SMOKE)
    per_job = run_backfill(workload, PolygonClient(sim.url), clean_db, FixSet.parse("db.copy,compute.vectorized"))
    bars, feats = _table(clean_db, "market_data"), _table(clean_db, "quant_features")
    with clean_db.begin() as conn:
        conn.exec_driver_sql("TRUNCATE market_data, quant_features, fetch_coverage")
    grouped = run_backfill(workload, PolygonClient(sim.url), clean_db,
                           FixSet.parse("db.copy,compute.vectorized,db.group_commit,api.missing_only,api.parallel"))
    assert grouped.failures == 0 and grouped.rows_written == per_job.rows_written == len(bars)
    assert sum(j.feature_rows for j in grouped.jobs) == len(feats)
    pd.testing.assert_frame_equal(_table(clean_db, "market_data"), bars)
    pd.testing.assert_frame_equal(_table(clean_db, "quant_features"), feats)
    busy = grouped.stage_seconds
    assert all(busy[s] > 0 for s in ("api", "db", "compute"))
    per_stage = {s: sum(j.stages.get(s, 0.0) for j in grouped.jobs) for s in ("compute",)}
    assert per_stage["compute"] == pytest.approx(busy["compute"])
    resumed = run_backfill(workload, PolygonClient(sim.url), clean_db, FixSet.parse("db.group_commit,api.missing_only"))
    assert resumed.requests == 0 and resumed.failures == 0  # coverage was committed with the bars
    assert all(not r for r in missing_ranges_many(clean_db, workload.jobs(), workload.start, workload.end).values())


def test_a_failing_group_fails_its_jobs_not_the_run(clean_db, sim):
    workload = Workload(("AAPL",), ("1h", "1d"), SMOKE.start, SMOKE.end)
    with clean_db.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE market_data ADD CONSTRAINT no_daily CHECK (timeframe <> '1d') NOT VALID")
    try:
        result = run_backfill(workload, PolygonClient(sim.url), clean_db, FixSet.parse("db.group_commit"))
    finally:
        with clean_db.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE market_data DROP CONSTRAINT no_daily")
    assert len(result.jobs) == 2 and result.failures >= 1
    assert all("no_daily" in j.error and "\n" not in j.error for j in result.jobs if j.error)
    with clean_db.connect() as conn:
        daily = conn.execute(sa.text("SELECT count(*) FROM market_data WHERE timeframe = '1d'")).scalar_one()
    assert daily == 0
