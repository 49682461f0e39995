import sqlalchemy as sa

from perflab.api.client import PolygonClient
from perflab.backfill import Workload, run_backfill
from perflab.measure.results import RunResult
from perflab.presets import get_preset
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
        stored = conn.execute(sa.text("SELECT count(*), count(DISTINCT (symbol, timeframe, time)) FROM market_data")).one()
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
    run_backfill(workload, PolygonClient(sim.url), clean_db)
    again = run_backfill(workload, PolygonClient(sim.url), clean_db)  # orm_row is not idempotent
    assert again.failures == 2 and again.success_rate == 0.0
    assert all("\n" not in j.error for j in again.jobs)
