import sqlalchemy as sa

from perflab.api.client import PolygonClient
from perflab.measure.results import RunResult
from perflab.pipeline.presets import get_preset
from perflab.pipeline.scheduler import Workload, run_backfill
from perflab.simulator.bars import bars_between
from perflab.timeframes import parse_timeframe


def test_baseline_writes_every_bar_once_and_times_each_stage(clean_db, sim, tmp_path):
    workload = Workload.from_preset(get_preset("smoke"))
    result = run_backfill(workload, PolygonClient(sim.url), clean_db, label="baseline")
    assert result.failures == 0 and len(result.jobs) == 9
    expected = sum(
        len(bars_between(sim.config.seed, s, parse_timeframe(tf).multiplier, parse_timeframe(tf).timespan,
                         workload.start, workload.end))
        for s, tf in workload.jobs())
    with clean_db.connect() as conn:
        stored = conn.execute(sa.text(
            "SELECT count(*), count(DISTINCT (symbol, timeframe, time)) FROM market_data")).one()
    assert result.rows_written == expected == stored[0] == stored[1]
    busy = result.stage_seconds
    assert all(busy[s] > 0 for s in ("api", "db", "compute"))
    assert abs(sum(result.stage_shares.values()) - 1) < 1e-9
    assert sum(busy.values()) <= result.wall_seconds
    assert result.environment["db"]["server_version"] and result.environment["cpu_count"]
    loaded = RunResult.load(result.save(tmp_path / "baseline.json"))
    assert loaded.stage_seconds == result.stage_seconds and loaded.metrics() == result.metrics()


def test_failed_job_is_recorded_not_fatal(clean_db, sim):
    workload = Workload(("AAPL",), ("1h", "1d"), *(get_preset("smoke").start, get_preset("smoke").end))
    with clean_db.begin() as conn:  # a real, non-transient database error for the 1d job only
        conn.exec_driver_sql("ALTER TABLE market_data ADD CONSTRAINT no_daily CHECK (timeframe <> '1d') NOT VALID")
    try:
        failed = run_backfill(workload, PolygonClient(sim.url), clean_db)
    finally:
        with clean_db.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE market_data DROP CONSTRAINT no_daily")
    assert failed.failures == 1 and failed.success_rate == 0.5
    assert all("\n" not in j.error for j in failed.jobs if j.error) and "no_daily" in failed.jobs[1].error


def test_rerunning_a_backfill_is_idempotent(clean_db, sim):
    workload = Workload(("AAPL",), ("1h", "1d"), *(get_preset("smoke").start, get_preset("smoke").end))
    first = run_backfill(workload, PolygonClient(sim.url), clean_db)
    again = run_backfill(workload, PolygonClient(sim.url), clean_db)  # every writer skips stored rows
    assert again.failures == 0 and again.rows_written == first.rows_written
    with clean_db.connect() as conn:
        rows, keys = conn.execute(sa.text("SELECT count(*), count(DISTINCT (symbol, timeframe, time)) "
                                          "FROM market_data")).one()
    assert rows == keys == first.rows_written
