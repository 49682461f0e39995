"""Resume (api.missing_only): fetch only uncovered days, never write a bar twice, survive a SIGKILL."""

from datetime import date

import sqlalchemy as sa

from perflab.api.client import PolygonClient
from perflab.db.coverage import missing_ranges, record_coverage
from perflab.pipeline.fixes import FixSet
from perflab.pipeline.scheduler import Workload, run_backfill
from perflab.simulator import SimulatorConfig, start_simulator
from perflab.studies.resilience import audit_bars, kill_backfill

RESUME = FixSet.parse("api.missing_only,db.retry")


def test_missing_ranges_skip_covered_days_and_distrust_emptied_tables(clean_db, sim):
    w = Workload(("AAPL",), ("1d",), date(2024, 3, 4), date(2024, 3, 8))
    assert missing_ranges(clean_db, "AAPL", "1d", w.start, w.end) == [(w.start, w.end)]
    run_backfill(Workload(("AAPL",), ("1d",), date(2024, 3, 5), date(2024, 3, 6)), PolygonClient(sim.url),
                 clean_db, RESUME)
    assert missing_ranges(clean_db, "AAPL", "1d", w.start, w.end) == [
        (date(2024, 3, 4), date(2024, 3, 4)), (date(2024, 3, 7), date(2024, 3, 8))]
    record_coverage(clean_db, "AAPL", "1d", date(2024, 3, 20), date(2030, 1, 1), today=date(2024, 3, 22))
    assert missing_ranges(clean_db, "AAPL", "1d", date(2024, 3, 20), date(2024, 3, 22)) == [
        (date(2024, 3, 22), date(2024, 3, 22))], "today is never final"
    with clean_db.begin() as conn:
        conn.exec_driver_sql("TRUNCATE market_data")
    assert missing_ranges(clean_db, "AAPL", "1d", w.start, w.end)[0][0] == w.start


def test_rerun_fetches_only_what_is_missing(clean_db, sim):
    w = Workload(("AAPL", "MSFT"), ("1h", "1d"), date(2024, 3, 4), date(2024, 3, 5))
    first = run_backfill(w, PolygonClient(sim.url), clean_db, RESUME)
    with clean_db.begin() as conn:  # lose one job's second day, as a crash before its coverage would
        conn.execute(sa.text("DELETE FROM market_data WHERE symbol = 'MSFT' AND timeframe = '1h' "
                             "AND time >= '2024-03-05 05:00+00'"))
    again = run_backfill(w, PolygonClient(sim.url), clean_db, RESUME)
    assert first.failures == again.failures == 0
    assert {(j.symbol, j.timeframe): j.requests for j in again.jobs} == {
        ("AAPL", "1h"): 0, ("AAPL", "1d"): 0, ("MSFT", "1h"): 1, ("MSFT", "1d"): 0}
    assert 0 < again.rows_written < first.rows_written
    assert audit_bars(clean_db, w, sim.config.seed).exact


def test_sigkill_at_a_random_point_then_resume_matches_the_simulator_bar_for_bar(clean_db):
    w = Workload(("AAPL", "MSFT", "NVDA"), ("5m", "1h", "1d"), date(2024, 3, 4), date(2024, 3, 5))
    with start_simulator(SimulatorConfig(time_scale=0.05)) as sim:
        killed = kill_backfill(sim.url, w, clean_db, max_delay_s=1.0)
        assert killed.rows_at_kill > 0
        partial = audit_bars(clean_db, w, sim.config.seed)
        resumed = run_backfill(w, PolygonClient(sim.url), clean_db, RESUME)
        audit = audit_bars(clean_db, w, sim.config.seed)
        assert resumed.failures == 0
        assert audit.exact, (killed, partial, audit)
        if not killed.finished_before_kill:
            assert resumed.requests < len(w.jobs()) or partial.missing > 0
        assert run_backfill(w, PolygonClient(sim.url), clean_db, RESUME).requests == 0
