"""The verdict must find a bottleneck we plant on purpose, on real runs (real simulator, real DB)."""

from datetime import date

import pytest

from perflab.api.client import PolygonClient
from perflab.backfill import Workload, run_backfill
from perflab.fixes import FixSet
from perflab.measure.verdict import classify
from perflab.simulator import SimulatorConfig, start_simulator


def backfill(engine, latency_s, workload, fixes="none"):
    with start_simulator(SimulatorConfig(latency_s=(latency_s, latency_s), time_scale=1.0)) as sim:
        return run_backfill(workload, PolygonClient(sim.url), engine, FixSet.parse(fixes))


def test_slow_api_gives_path_a(clean_db):
    few_rows = Workload(("AAPL", "MSFT"), ("1d",), date(2024, 3, 4), date(2024, 3, 8))
    verdict = classify(backfill(clean_db, 0.25, few_rows))
    assert verdict.path == "A", verdict


def test_row_by_row_writer_on_many_rows_gives_path_b(clean_db):
    many_rows = Workload(("AAPL",), ("1m",), date(2024, 3, 4), date(2024, 3, 5))
    verdict = classify(backfill(clean_db, 0.0, many_rows))
    assert verdict.path == "B", verdict


@pytest.mark.parametrize("fixes", ["db.copy"])
def test_loop_features_with_a_fast_writer_gives_path_c(clean_db, fixes):
    many_bars = Workload(("AAPL", "MSFT"), ("1m",), date(2024, 3, 4), date(2024, 3, 6))
    verdict = classify(backfill(clean_db, 0.0, many_bars, fixes))
    assert verdict.path == "C", verdict
