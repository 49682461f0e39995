"""On real runs (real simulator, real DB): the verdict finds a bottleneck we plant on purpose, and
``perflab compare`` does not mistake noise for a change."""

import subprocess
import sys
from datetime import date

import pytest

from perflab.api.client import PolygonClient
from perflab.db.migrate import reset_data
from perflab.measure.results import RunSet
from perflab.measure.verdict import classify
from perflab.pipeline.fixes import FixSet
from perflab.pipeline.scheduler import Workload, run_backfill
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


def test_compare_calls_a_real_no_op_change_not_significant(clean_db, sim, tmp_path):
    workload = Workload(("AAPL", "MSFT"), ("5m", "1h"), date(2024, 3, 4), date(2024, 3, 5))

    def run(label):
        reset_data(clean_db)
        return run_backfill(workload, PolygonClient(sim.url), clean_db, FixSet.parse("db.copy"), label=label)

    # Interleaved, so the machine's drift over the test falls on both sides alike (as in bench_end_to_end).
    pairs = [(run("before"), run("after")) for _ in range(5)]
    before = RunSet("before", [b for b, _ in pairs]).save(tmp_path / "before.json")
    after = RunSet("after", [a for _, a in pairs]).save(tmp_path / "after.json")
    proc = subprocess.run([sys.executable, "-m", "perflab.cli", "compare", str(before), str(after)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    wall = next(line for line in proc.stdout.splitlines() if line.startswith("wall_seconds"))
    assert wall.endswith("not significant"), proc.stdout
