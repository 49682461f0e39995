"""Every run's timeline as Chrome trace-event JSON: spans know their thread and job, the trace has the run's
intervals as they were recorded, in the shape ui.perfetto.dev and chrome://tracing read."""

import json
import os
import subprocess
import sys
import threading
import time

import jsonschema
import pytest

from perflab.db import pool
from perflab.db.pool import connection_meter
from perflab.measure.results import JSON_SCHEMA, RunResult
from perflab.measure.timing import Interval, StageTimer, busy_seconds, note_request
from perflab.measure.trace import to_trace_events, write_trace
from perflab.pipeline.fixes import FixSet
from perflab.pipeline.measured import measured_backfill
from perflab.pipeline.presets import get_preset
from perflab.pipeline.scheduler import Workload
from perflab.simulator import SimulatorConfig, start_simulator

# The trace-event format (Trace Event Format doc): required keys and their types for each phase used.
PHASE_KEYS = {
    "X": {"name": str, "ph": str, "ts": (int, float), "dur": (int, float), "pid": int, "tid": int},
    "M": {"name": str, "ph": str, "pid": int, "tid": int, "args": dict},
    "C": {"name": str, "ph": str, "ts": (int, float), "pid": int, "args": dict},
}


def check_trace_shape(trace: dict) -> None:
    """Fail on anything the viewers would not read: an unknown phase, a missing or mistyped key, a negative
    duration, a counter that is not numeric, a thread or process name without ``args.name``."""
    assert isinstance(trace, dict) and isinstance(trace["traceEvents"], list)
    for event in trace["traceEvents"]:
        keys = PHASE_KEYS[event["ph"]]
        for key, kind in keys.items():
            assert isinstance(event[key], kind) and not isinstance(event[key], bool), (key, event)
        if event["ph"] == "X":
            assert event["dur"] >= 0 and event["ts"] >= 0
        if event["ph"] == "M":
            assert event["name"] in ("thread_name", "process_name") and isinstance(event["args"]["name"], str)
        if event["ph"] == "C":
            assert event["args"] and all(isinstance(v, (int, float)) for v in event["args"].values()), event


def stage_spans(trace: dict) -> list[tuple[str, float, float]]:
    return [(e["name"], e["ts"] / 1e6, (e["ts"] + e["dur"]) / 1e6)
            for e in trace["traceEvents"] if e["ph"] == "X" and e["cat"] == "stage"]


def same_spans(trace: dict, intervals: list) -> bool:
    """The trace's stage spans are ``intervals``, in order, to a microsecond."""
    spans = stage_spans(trace)
    return len(spans) == len(intervals) and all(
        a[0] == b[0] and abs(a[1] - b[1]) < 1e-6 and abs(a[2] - b[2]) < 1e-6 for a, b in zip(spans, intervals))


def counter(trace: dict, name: str) -> list[float]:
    return [next(iter(e["args"].values())) for e in trace["traceEvents"] if e["ph"] == "C" and e["name"] == name]


def test_intervals_stay_stage_start_end_tuples_and_know_their_thread_job_and_requests():
    timer = StageTimer()
    job = timer.child(job=("AAPL", "1d"))
    note_request(timer.origin, timer.origin + 1, 200)  # outside any stage: goes nowhere

    def work():
        with job.stage("api"):
            note_request(timer.origin + 0.5, timer.origin + 0.75, 429)
        with job.stage("db"):
            pass

    thread = threading.Thread(target=work, name="api-worker_7")
    thread.start()
    thread.join()
    timer.intervals.extend(job.intervals)
    api, db = timer.intervals
    assert api[0] == "api" and len(api) == 3 and tuple(api) == (api[0], api[1], api[2])
    assert isinstance(api, Interval) and api.thread == "api-worker_7" and api.tid == thread.native_id
    assert api.jobs == (("AAPL", "1d"),) and api.requests == ((0.5, 0.75, 429),) and db.requests == ()
    assert busy_seconds(timer.intervals)["api"] == api[2] - api[1]
    group = timer.child(jobs=[("AAPL", "1d"), ("MSFT", "1d")])
    with group.stage("compute"):
        pass
    assert group.intervals[0].jobs == (("AAPL", "1d"), ("MSFT", "1d"))
    assert group.intervals[0].span()["jobs"] == [["AAPL", "1d"], ["MSFT", "1d"]]


def test_a_run_saved_before_spans_still_loads(tmp_path):
    timer = StageTimer()
    with timer.child(job=("AAPL", "1d")).stage("api"):
        pass
    run = RunResult("r", "x", "2024-01-01T00:00:00+00:00", 1.0, {"workload": {}}, {}, [], intervals=[
        Interval(("api", 0.0, 0.5), thread="w", tid=3, jobs=[("AAPL", "1d")])])
    assert run.spans == [{"stage": "api", "start": 0.0, "end": 0.5, "thread": "w", "tid": 3,
                          "jobs": [["AAPL", "1d"]], "requests": []}]
    saved = json.loads(run.save(tmp_path / "r.json").read_text())
    assert RunResult.from_dict(saved).spans == run.spans
    del saved["spans"]
    old = RunResult.from_dict(saved)
    assert old.spans == [] and old.intervals == [("api", 0.0, 0.5)]


def _workload(symbols=("AAPL", "MSFT"), timeframes=("1h", "1d")) -> Workload:
    smoke = get_preset("smoke")
    return Workload(symbols, timeframes, smoke.start, smoke.end)


@pytest.mark.parametrize("fixes", ["none", "all"])
def test_the_trace_holds_the_runs_intervals_threads_and_counters(clean_db, sim, tmp_path, fixes):
    result = measured_backfill(_workload(), FixSet.parse(fixes), clean_db, preset=get_preset("smoke"),
                               base_url=sim.url, store=False, trace=tmp_path / "run.json")
    assert result.failures == 0
    trace = json.loads((tmp_path / "run.json").read_text())
    check_trace_shape(trace)
    assert same_spans(trace, result.intervals) and len(result.intervals) >= 3 * len(result.jobs)
    named = {e["tid"]: e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "thread_name"}
    spans = [e for e in trace["traceEvents"] if e["ph"] == "X" and e["cat"] == "stage"]
    assert {e["tid"] for e in spans} <= set(named)
    jobs = {(e["args"]["symbol"], e["args"]["timeframe"]) for e in spans if "symbol" in e["args"]}
    assert jobs == set(_workload().jobs())
    requests = [e for e in trace["traceEvents"] if e["ph"] == "X" and e["cat"] == "request"]
    assert len(requests) == result.requests and all(e["args"]["status"] == 200 for e in requests)
    in_flight = counter(trace, "requests in flight")
    assert max(in_flight) >= 1 and in_flight[-1] == 0
    assert counter(trace, "429s")[-1] == 0
    jsonschema.validate(json.loads(result.save(tmp_path / "result.json").read_text()),
                        json.loads(JSON_SCHEMA.read_text()))
    if fixes == "all":  # parallel workers and group commit: the committers' spans name every job they stored
        assert any(n.startswith("api-worker") for n in named.values())
        committed = [e for e in spans if named[e["tid"]].startswith("group-commit")]
        assert committed and counter(trace, "committer queue")[-1] == 0
        assert {tuple(j.split("/")) for e in committed
                for j in (e["args"].get("symbols", "").split(", ") if "jobs" in e["args"]
                          else [f"{e['args']['symbol']}/{e['args']['timeframe']}"])} == set(_workload().jobs())
    else:
        assert set(named.values()) == {"MainThread"} and not counter(trace, "committer queue")


def test_the_trace_counts_the_connections_checked_out_of_the_pools_over_the_run(clean_db, sim, tmp_path):
    result = measured_backfill(_workload(("AAPL", "MSFT", "GOOGL"), ("1h", "1d")),
                               FixSet.parse("api.parallel,db.group_commit"), clean_db, preset=get_preset("smoke"),
                               base_url=sim.url, store=False)
    assert result.failures == 0
    loaded = RunResult.load(result.save(tmp_path / "run.json"))
    assert loaded.resources["pool_checkouts"] == result.resources["pool_checkouts"]
    trace = to_trace_events(loaded)
    check_trace_shape(trace)
    events = [e for e in trace["traceEvents"] if e["ph"] == "C" and e["name"] == "DB connections checked out"]
    times = [e["ts"] / 1e6 for e in events]
    checked_out = counter(trace, "DB connections checked out")
    peak = result.resources["pool_checkouts_peak"]
    assert peak >= 2  # parallel workers and the group committer held connections at the same time
    assert checked_out[0] == 0 and checked_out[-1] == 0 and min(checked_out) >= 0 and max(checked_out) == peak
    assert times == sorted(times) and 0 <= times[0] and times[-1] <= result.wall_seconds
    assert all(abs(b - a) == 1 for a, b in zip(checked_out, checked_out[1:]) if a != b)  # one checkout or checkin


def test_a_run_saved_before_checkouts_were_recorded_still_gives_a_trace():
    run = RunResult.from_dict({
        "schema_version": 1, "run_id": "r", "label": "old", "started_at": "2024-01-01T00:00:00+00:00",
        "wall_seconds": 1.0, "params": {"workload": {}}, "environment": {}, "jobs": [],
        "intervals": [["db", 0.1, 0.4]], "spans": [{"stage": "db", "start": 0.1, "end": 0.4, "thread": "MainThread",
                                                     "tid": 1, "jobs": [["AAPL", "1d"]], "requests": []}],
        "resources": {"pool_checkouts_peak": 1, "timeline": [[0.5, 12.0, 80.0, 3]]}})
    trace = to_trace_events(run)
    check_trace_shape(trace)
    assert not counter(trace, "DB connections checked out")
    assert counter(trace, "threads in a db stage") == [1, 0] and counter(trace, "DB connections open (server)") == [3]


def test_the_checkout_timeline_stays_bounded_keeps_its_start_peak_and_end_and_counts_detached_connections(
        clean_db, monkeypatch):
    monkeypatch.setattr(pool, "MAX_TIMELINE_POINTS", 40)
    for conn in [clean_db.connect() for _ in range(3)]:
        conn.close()  # three connections open in the pool: the burst below takes well under a bucket
    origin = time.perf_counter()
    connection_meter.reset()
    for round_ in range(60):  # the burst of three comes first, so every compaction has to keep it
        held = [clean_db.connect() for _ in range(3 if round_ == 1 else 1)]
        for conn in held:
            conn.close()
    raw = clean_db.raw_connection()
    raw.detach()  # as the shared pacer does: its connection leaves the pool and is never checked in
    raw.close()
    timeline = connection_meter.timeline(origin)
    assert len(timeline) < pool.MAX_TIMELINE_POINTS  # 127 changes kept in fewer points
    assert timeline[0][0] >= 0 and timeline[0][1] == 0 and timeline[-1][1] == 0 and max(n for _, n in timeline) == 3
    assert connection_meter.snapshot().current == 0 and connection_meter.peak == 3
    assert [t for t, _ in timeline] == sorted(t for t, _ in timeline)


def test_429s_are_counted_when_they_happen(clean_db, tmp_path):
    config = SimulatorConfig(time_scale=0.0005, rate_limit_per_s=4, rate_limit_burst=1)
    with start_simulator(config) as limited:
        result = measured_backfill(_workload(("AAPL", "MSFT", "GOOGL"), ("1h", "1d")), FixSet(), clean_db,
                                   preset=get_preset("smoke"), base_url=limited.url, store=False)
    trace = to_trace_events(result)
    check_trace_shape(trace)
    limited_count = sum(j.rate_limited for j in result.jobs)
    assert limited_count > 0 and counter(trace, "429s")[-1] == limited_count
    statuses = [e["args"]["status"] for e in trace["traceEvents"] if e.get("cat") == "request"]
    assert statuses.count(429) == limited_count


def test_perflab_backfill_writes_the_trace_it_is_asked_for(clean_db, tmp_path):
    out = tmp_path / "sub" / "backfill.trace.json"
    cmd = [sys.executable, "-m", "perflab", "backfill", "--simulator", "--preset", "smoke", "--symbols", "AAPL",
           "--timeframes", "1d", "--fresh", "--trace", str(out), "--out", str(tmp_path / "run.json")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=os.environ.copy())
    assert done.returncode == 0, done.stderr
    trace = json.loads(out.read_text())
    check_trace_shape(trace)
    run = RunResult.load(tmp_path / "run.json")
    assert same_spans(trace, run.intervals) and run.intervals
    assert write_trace(run, tmp_path / "folder").name == f"{run.label}-{run.run_id}.trace.json"
