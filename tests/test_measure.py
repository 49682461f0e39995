"""Measurement as data: stage attribution, run sets, comparison noise, criteria, verdict rules, history."""

import json
import time

import pytest

from perflab.errors import InputError
from perflab.measure.compare import compare
from perflab.measure.criteria import evaluate
from perflab.measure.history import history, store_run
from perflab.measure.resources import ResourceSampler
from perflab.measure.results import SCHEMA_VERSION, JobRecord, RunResult, RunSet
from perflab.measure.timing import StageTimer, wall_attribution
from perflab.measure.verdict import classify


def fake_run(api: float, db: float, compute: float, *, label="x", wall=None, workload="w", ok=True) -> RunResult:
    """A result with given busy seconds (sequential intervals), for the pure-logic tests."""
    t, intervals = 0.0, []
    for stage, secs in (("api", api), ("db", db), ("compute", compute)):
        intervals.append((stage, t, t + secs))
        t += secs
    job = JobRecord("AAPL", "1m", {"api": api, "db": db, "compute": compute}, rows=1000, requests=2,
                    latencies=[0.1, 0.2], error=None if ok else "ServerError: 503")
    return RunResult("id" + label + str(api), label, "2024-01-01T00:00:00+00:00", wall or t,
                     {"workload": workload, "preset": "smoke"}, {"cpu_model": "cpu", "cpu_count": 2, "python": "3"},
                     [job], intervals)


def test_wall_attribution_splits_overlap_and_counts_idle():
    intervals = [("api", 0.0, 2.0), ("api", 1.0, 3.0), ("db", 1.0, 2.0)]
    attributed = wall_attribution(intervals, wall=4.0)
    assert attributed["api"] == pytest.approx(1.0 + 0.5 + 1.0)  # 1-2 s: api and db share the instant
    assert attributed["db"] == pytest.approx(0.5)
    assert attributed["idle"] == pytest.approx(1.0)
    assert sum(attributed.values()) == pytest.approx(4.0)


def test_disabled_timer_records_nothing():
    timer = StageTimer(enabled=False)
    with timer.stage("api"):
        pass
    assert timer.intervals == [] and timer.child().enabled is False


@pytest.mark.parametrize("api, db, compute, path", [(7, 2, 1, "A"), (2, 7, 1, "B"), (4, 4, 2, "C"), (1, 1, 8, "C")])
def test_plan_rules(api, db, compute, path):
    verdict = classify(fake_run(api, db, compute))
    assert verdict.path == path
    assert sum(verdict.shares.values()) == pytest.approx(1.0)
    assert verdict.fixes and str(verdict).startswith(f"Path {path}")


def test_compare_labels_noise_as_not_significant():
    # Five runs a side: with three, even the most lopsided order happens by chance 1 time in 10 (see test_statistics).
    before = RunSet("before", [fake_run(1.0, db, 1.0) for db in (5.0, 5.3, 4.9, 5.2, 5.05)])
    same = RunSet("after", [fake_run(1.0, db, 1.0) for db in (5.1, 5.25, 5.0, 4.95, 5.15)])
    faster = RunSet("after", [fake_run(1.0, db, 1.0) for db in (1.0, 1.1, 0.9, 1.05, 0.95)])
    assert compare(before, same).table().loc["wall_seconds", "verdict"] == "not significant"
    fast = compare(before, faster)
    assert fast.total.significant and fast.table().loc["db", "verdict"] == "faster"
    assert fast.total.improvement == pytest.approx((7.05 - 3.0) / 7.05)  # medians of the wall times


def test_compare_refuses_different_workloads_unless_forced():
    a, b = RunSet("a", [fake_run(1, 1, 1)]), RunSet("b", [fake_run(1, 1, 1, workload="other")])
    with pytest.raises(InputError, match="workload differs.*--force"):
        compare(a, b)
    assert compare(a, b, force=True).n_after == 1


def test_criteria_table_measures_and_marks_unmeasurable():
    base = RunSet("base", [fake_run(1.0, 9.0, 1.0)])
    after = RunSet("after", [fake_run(1.0, 2.0, 1.0, ok=False)])
    table = evaluate(base, after)
    assert table.loc["improvement", "passed"] and table.loc["improvement", "measured"] == "63.6%"
    assert table.loc["success rate", "passed"] is False or not table.loc["success rate", "passed"]
    assert not table.loc["error-rate increase", "passed"]
    assert table.loc["backfill 25x5 at plan scale", "passed"] is None
    assert table.loc["DB insert rate", "measured"] == "500 records/s"


def test_run_set_roundtrip_and_single_result_loads_as_set(tmp_path):
    runs = RunSet("b", [fake_run(1, 2, 3), fake_run(2, 2, 3)])
    loaded = RunSet.load(runs.save(tmp_path / "set.json"))
    assert loaded.median("api") == 1.5 and loaded.spread("api") == (1, 2)
    single = RunSet.load(fake_run(1, 2, 3).save(tmp_path / "one.json"))
    assert len(single.runs) == 1


@pytest.mark.parametrize("content, match", [
    ({"label": "x"}, "no schema_version"),
    ({"schema_version": SCHEMA_VERSION + 1}, "re-run it"),
    ({"schema_version": SCHEMA_VERSION, "label": "x"}, "lacks"),
])
def test_old_or_foreign_files_fail_clearly(tmp_path, content, match):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(content))
    with pytest.raises(InputError, match=match):
        RunResult.load(path)
    path.write_text("not json")
    with pytest.raises(InputError, match="invalid JSON"):
        RunSet.load(path)


def test_history_stores_each_run_once(engine):
    run = fake_run(1, 2, 3, label="history-test")
    store_run(engine, run)
    store_run(engine, run)
    rows = history(engine, preset="smoke")
    mine = rows[rows.run_id == run.run_id]
    assert len(mine) == 1 and mine.iloc[0]["db"] == 2


def test_sampler_sees_cpu_memory_and_connections(engine):
    with engine.connect():
        with ResourceSampler(engine, interval_s=0.05) as sampler:
            deadline = time.monotonic() + 10  # busy until two samples are in (the probe connects first)
            while sampler.summary.samples < 2 and time.monotonic() < deadline:
                sum(i * i for i in range(200_000))
    s = sampler.summary
    assert s.samples >= 2 and s.rss_peak_mb > 10 and s.cpu_peak_pct > 0
    assert s.db_connections_peak >= 1


def test_saved_results_follow_the_published_json_schema(tmp_path, clean_db, sim):
    import jsonschema

    from perflab.api.client import PolygonClient
    from perflab.measure.results import JSON_SCHEMA
    from perflab.pipeline.presets import get_preset
    from perflab.pipeline.scheduler import Workload, run_backfill

    schema = json.loads(JSON_SCHEMA.read_text())
    run = run_backfill(Workload.from_preset(get_preset("smoke")), PolygonClient(sim.url), clean_db)
    jsonschema.validate(json.loads(run.save(tmp_path / "r.json").read_text()), schema)
    jsonschema.validate(json.loads(RunSet("s", [run, run]).save(tmp_path / "s.json").read_text()), schema)


def test_benchmark_records_are_kept_not_overwritten(tmp_path, monkeypatch):
    from perflab.measure import benchrecord

    monkeypatch.setattr(benchrecord, "bench_dir", lambda: tmp_path)
    first = benchrecord.save_bench("demo", {"x": 1.0})
    second = benchrecord.save_bench("demo", {"x": 2.0})
    assert first != second and first.exists() and second.exists()
    records = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("demo-*.json"))]
    assert [r["results"]["x"] for r in records] == [1.0, 2.0]
    assert all("git_commit" in r["environment"] and r["created_at"] for r in records)
