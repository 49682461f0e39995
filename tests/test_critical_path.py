"""The critical path and the what-if replay: on known schedules, then against real runs (a stage made faster for
real, the prediction checked against the measured wall time)."""

import pytest

from perflab.measure.critical_path import (
    FREE,
    WAIT,
    compare_views,
    critical_path,
    replay,
    views_sentence,
    what_if,
    what_if_sentences,
)
from perflab.measure.results import JobRecord, RunResult
from perflab.pipeline.fixes import FixSet
from perflab.pipeline.measured import measured_backfill
from perflab.pipeline.presets import get_preset
from perflab.pipeline.scheduler import Workload
from perflab.simulator import SimulatorConfig, start_simulator


def span(stage, start, end, tid, *jobs, requests=0):
    return {"stage": stage, "start": start, "end": end, "thread": f"t{tid}", "tid": tid,
            "jobs": [list(j) for j in jobs], "requests": [[start, end, 200]] * requests}


def run(spans, wall, settings=None):
    jobs = list(dict.fromkeys(tuple(j) for s in spans for j in s["jobs"]))
    records = [JobRecord(*j, requests=sum(len(s["requests"]) for s in spans if s["jobs"] == [list(j)]))
               for j in jobs]
    return RunResult("r", "x", "2024-01-01T00:00:00+00:00", wall, {"workload": {}, "settings": settings or {}}, {},
                     records, intervals=[(s["stage"], s["start"], s["end"]) for s in spans], spans=spans)


A, B, C = ("AAPL", "1h"), ("MSFT", "1h"), ("GOOGL", "1h")


def test_a_sequential_run_waits_on_every_stage_and_replays_as_recorded():
    r = run([span("api", 0.0, 1.0, 1, A), span("db", 1.0, 3.0, 1, A), span("compute", 3.0, 3.5, 1, A),
             span("api", 3.6, 4.6, 1, B), span("db", 4.6, 6.6, 1, B), span("compute", 6.6, 7.1, 1, B)], wall=7.2)
    path = critical_path(r)
    assert len(path.spans) == 6
    assert path.seconds == pytest.approx({"api": 2.0, "db": 4.0, "compute": 1.0, WAIT: 0.2})
    assert replay(r) == pytest.approx(7.2)
    assert replay(r, "db", 2.0) == pytest.approx(7.2 - 2.0)
    assert replay(r, "api", FREE) == pytest.approx(7.2 - 2.0)
    assert replay(r, "compute", 4.0) == pytest.approx(7.2 - 0.75)


def test_parallel_work_the_wall_clock_did_not_wait_for_is_off_the_path_and_the_views_disagree():
    # three workers fetch at once (6 s of busy api), one job then writes for 3.5 s: busy says API, the wall waited on DB
    r = run([span("api", 0.0, 2.0, 1, A), span("db", 2.0, 5.5, 1, A),
             span("api", 0.0, 2.0, 2, B), span("api", 0.0, 2.0, 3, C)], wall=5.5, settings={"api_workers": 3})
    path = critical_path(r)
    assert [(s.stage, s.tid) for s in path.spans] == [("api", 1), ("db", 1)]
    table = compare_views(r)
    assert table.attrs == {"busy_path": "A", "critical_path": "B"}
    assert table.loc["api", "busy share"] == pytest.approx(6 / 9.5)
    assert table.loc["db", "critical-path share"] == pytest.approx(3.5 / 5.5)
    assert "disagree" in views_sentence(r)
    # making the fetches faster shortens the run only by what the path spent in api; the 3 workers stay 3
    assert replay(r, "api", 2.0) == pytest.approx(4.5)
    assert replay(r, "db", 2.0) == pytest.approx(3.75)


def test_a_group_commit_waits_for_its_hand_overs_and_its_committer():
    r = run([span("api", 0.0, 1.0, 1, A), span("api", 1.0, 2.0, 1, B),
             span("compute", 2.0, 2.5, 9, A, B), span("db", 2.5, 4.0, 9, A, B),
             span("api", 2.0, 3.0, 1, C), span("compute", 4.0, 4.2, 9, C), span("db", 4.2, 5.0, 9, C)],
            wall=5.0, settings={"group_commit": True})
    path = critical_path(r)
    assert [(s.stage, s.jobs) for s in path.spans] == [
        ("api", (A,)), ("api", (B,)), ("compute", (A, B)), ("db", (A, B)), ("compute", (C,)), ("db", (C,))]
    # api 2x faster: hand-overs at 0.5 and 1.0, so the committer starts at 1.0 and runs 3.0 s
    assert replay(r, "api", 2.0) == pytest.approx(4.0)
    assert replay(r, "db", FREE) == pytest.approx(3.2)  # then C's hand-over at 3.0 is what the committer waits for


def test_no_speed_up_beats_the_rate_limit():
    r = run([span("api", 0.0, 2.0, 1, A, requests=20), span("db", 2.0, 2.5, 1, A)], wall=2.5)
    assert replay(r, "api", FREE) == pytest.approx(0.5)
    limited = replay(r, "api", FREE, rate_limit_per_s=10.0, burst=1.0)
    assert limited == pytest.approx(19 / 10 + 0.5)
    predictions = what_if(r, rate_limit_per_s=10.0, burst=1.0)
    by = {(p.stage, p.k): p for p in predictions}
    # 1 s of fetching at 2x, but the 20th request cannot go before 1.9 s; it then takes its own 0.05 s
    assert by[("api", 2.0)].wall_seconds == pytest.approx(1.9 + 0.05 + 0.5)
    assert by[("api", 4.0)].wall_seconds == pytest.approx(1.9 + 0.025 + 0.5)
    assert by[("api", FREE)].wall_seconds == pytest.approx(limited)
    assert by[("api", 2.0)].baseline_seconds == pytest.approx(2.5)
    assert "same 20 requests" in by[("api", 2.0)].note and by[("db", 2.0)].note == ""
    sentences = what_if_sentences(predictions)
    assert sentences[1] == "If db were 2x faster the backfill would take 2.25 s (-10%)."


def test_a_run_without_spans_is_refused_with_the_reason():
    old = RunResult("r", "x", "2024-01-01T00:00:00+00:00", 1.0, {"workload": {}}, {}, [], [("api", 0.0, 1.0)])
    with pytest.raises(ValueError, match="recorded no spans"):
        critical_path(old)


# --- checked against reality: make a stage faster for real and compare the prediction with the measured wall ---

TOLERANCE = 0.15
SCALE = 0.05  # 25-40 ms per request: the run takes a second or two, most of it writing and computing
API_SCALE = 0.2  # 100-160 ms per request: the API about half of the run, so halving it is a change to predict
REPEATS = 5
QUIET = "db.copy,compute.vectorized"
"""The other stages fast, so the noise of a loaded machine in them does not drown the stage under test."""


def _workload() -> Workload:
    smoke = get_preset("smoke")
    return Workload(("AAPL", "MSFT", "GOOGL"), ("5m", "1h", "1d"), smoke.start, smoke.end)


def _pairs(engine, before: tuple[str, str], after: tuple[str, str]) -> list[tuple[RunResult, RunResult]]:
    """``REPEATS`` pairs of runs of two (base URL, fixes) configurations, one right after the other, so a machine
    that gets busier or quieter weighs on both runs of a pair alike."""
    pairs = []
    for _ in range(REPEATS):
        pair = tuple(measured_backfill(_workload(), FixSet.parse(fixes), engine, preset=get_preset("smoke"),
                                       base_url=url, store=False, fresh=True) for url, fixes in (before, after))
        assert all(r.failures == 0 for r in pair)
        pairs.append(pair)
    return pairs


def _check(pairs: list[tuple[RunResult, RunResult]], stage: str, k, what: str) -> None:
    """The prediction from each pair's first run (``stage`` ``k(before, after)`` times faster) against the pair's
    second run: the median error within the tolerance."""
    rows = [(replay(b, stage, k(b, a)), a.wall_seconds, k(b, a)) for b, a in pairs]
    errors = sorted(p / m - 1 for p, m, _ in rows)
    for p, m, kk in rows:
        print(f"{what} k={kk:.2f}: predicted {p:.3f} s, measured {m:.3f} s ({p / m - 1:+.1%})")
    error = errors[len(errors) // 2]
    assert abs(error) <= TOLERANCE, f"{what}: median error {error:+.1%} ({rows})"


def test_api_twice_as_fast_predicted_from_the_run_matches_a_simulator_at_half_the_latency(clean_db):
    with start_simulator(SimulatorConfig(time_scale=API_SCALE)) as slow, \
            start_simulator(SimulatorConfig(time_scale=API_SCALE / 2)) as fast:
        pairs = _pairs(clean_db, (slow.url, QUIET), (fast.url, QUIET))
    assert all(b.stage_shares["api"] > 0.2 for b, _ in pairs)  # the API a real part of the run, or this proves nothing
    _check(pairs, "api", lambda b, a: 2.0, "api 2x (simulator latency halved)")


def _measured_speed_up(stage: str):
    return lambda before, after: before.stage_seconds[stage] / after.stage_seconds[stage]


@pytest.mark.parametrize(("stage", "before", "after"), [("db", "none", "db.copy"),
                                                     ("compute", "db.copy", "db.copy,compute.vectorized")])
def test_a_faster_writer_or_feature_code_predicted_from_its_measured_speed_up(clean_db, stage, before, after):
    with start_simulator(SimulatorConfig(time_scale=SCALE)) as sim:
        pairs = _pairs(clean_db, (sim.url, before), (sim.url, after))
    k = _measured_speed_up(stage)
    assert all(k(b, a) > 1.2 for b, a in pairs), f"{after} did not make {stage} faster: nothing to predict"
    _check(pairs, stage, k, f"{stage} ({before} -> {after})")


def test_the_studies_and_the_timeline_read_the_same_spans():
    from perflab.measure.results import RunSet
    from perflab.report.plots import timeline
    from perflab.studies import baseline, before_after

    r = run([span("api", 0.0, 2.0, 1, A, requests=20), span("db", 2.0, 5.5, 1, A),
             span("api", 0.0, 2.0, 2, B), span("api", 0.0, 2.0, 3, C)], wall=5.5, settings={"api_workers": 3})
    views = baseline.views(r)
    assert not views.agree and views.table.loc["db", "critical-path s"] == pytest.approx(3.5)
    standard = get_preset("standard")  # 100 requests/s: 20 requests cannot take less than 0.19 s (10 burst)
    free_api = next(p for p in baseline.what_if(r, standard).predictions if p.stage == "api" and p.k == FREE)
    assert free_api.wall_seconds == pytest.approx(0.1 + 3.5)
    fig = timeline(r)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["t1", "t2", "t3"]
    outlined = [p for p in ax.patches if not p.get_fill()]
    assert [(p.get_x(), p.get_width()) for p in outlined] == [(0.0, 2.0), (2.0, 3.5)]  # the critical path
    slow, fast = (run([span("api", 0.0, w, 1, A)], wall=w) for w in (3.0, 1.0))
    middle = run([span("api", 0.0, 2.0, 1, A)], wall=2.0)
    old = RunResult("o", "x", "2024-01-01T00:00:00+00:00", 0.5, {"workload": {}}, {}, [], [("api", 0.0, 0.5)])
    assert before_after.typical(RunSet("s", [slow, old, fast, middle])) is middle
    with pytest.raises(ValueError, match="recorded spans"):
        before_after.typical(RunSet("s", [old]))


def test_the_report_index_shows_both_views_and_the_timelines_after_the_verdict(tmp_path):
    from perflab.report.index import timeline_section

    assert timeline_section(tmp_path) == ""  # nothing measured: nothing to show
    r = run([span("api", 0.0, 2.0, 1, A), span("db", 2.0, 5.5, 1, A),
             span("api", 0.0, 2.0, 2, B), span("api", 0.0, 2.0, 3, C)], wall=5.5, settings={"api_workers": 3})
    r.save(tmp_path / "baseline.json")
    page = timeline_section(tmp_path)
    assert "picks Path A" in page and "picks Path B" in page and "disagree" in page
    assert "<td>db</td><td>37%</td><td>3.50s</td><td>64%</td>" in page
    assert "<tr><td>db</td><td>3.75s (-32%)</td><td>2.00s (-64%)</td></tr>" in page  # the what-if: db 2x, db free
    assert "<tr><td>api</td><td>4.50s (-18%)</td>" in page and page.count("What if,") == 1
    assert page.count("<img") == 1
    r.save(tmp_path / "after_all.json")
    both = timeline_section(tmp_path)
    assert both.count("<img") == 2 and both.count("What if,") == 2


def test_the_notebooks_check_makes_each_stage_faster_for_real_and_sets_the_replay_beside_it(clean_db, tmp_path,
                                                                                              monkeypatch):
    from contextlib import contextmanager

    from perflab.simulator.process import fetch_stats
    from perflab.studies import baseline as study
    from perflab.studies.lab import open_lab

    fast, real_start = {}, study.start_simulator

    @contextmanager
    def recording(config):  # the check's own simulator: its time scale, and what it served before it closes
        with real_start(config) as sim:
            yield sim
            fast.update(time_scale=config.time_scale, requests=fetch_stats(sim.url)["requests"])

    monkeypatch.setattr(study, "start_simulator", recording)
    lab = open_lab("smoke", out_dir=str(tmp_path))
    try:
        checks = study.check_what_if(lab, pairs=1)
    finally:
        lab.close()
    runs = list(lab.results.values())
    assert [r.params["fixes"] for r in runs] == ["none", "none", "db.copy", "db.copy,compute.vectorized"]
    assert all(r.params["workload"]["symbols"] == list(lab.preset.symbols[:3]) and r.failures == 0 for r in runs)
    slow, halved, copy, vectorized = runs
    assert fast == {"time_scale": lab.preset.time_scale / 2, "requests": halved.requests}  # all of them, at half
    assert halved.requests == slow.requests
    by_stage = {c.stage: c for c in checks}
    assert list(by_stage) == ["api", "db", "compute"] and by_stage["api"].k == 2.0
    assert by_stage["db"].k == pytest.approx(slow.stage_seconds["db"] / copy.stage_seconds["db"])
    assert by_stage["db"].measured_s == copy.wall_seconds and by_stage["compute"].measured_s == vectorized.wall_seconds
    assert by_stage["api"].predicted_s == pytest.approx(replay(slow, "api", 2.0, *_rate(lab)))


def _rate(lab):
    config = lab.preset.simulator_config()
    return config.rate_limit_per_s, config.burst


def test_check_table_reports_medians_and_the_spread_of_the_errors():
    from perflab.studies.baseline import Check, check_symbols, check_table

    assert [check_symbols(get_preset(p)) for p in ("smoke", "standard", "plan")] == [3, 25, 3]  # plan: a slice

    table = check_table([Check("api", "half latency", 2.0, 1.1, 1.0), Check("api", "half latency", 2.0, 0.8, 1.0),
                         Check("api", "half latency", 2.0, 1.0, 1.0), Check("db", "copy", 4.0, 2.0, 1.0)])
    assert table.loc["api", "error (median)"] == pytest.approx(0.0)
    assert (table.loc["api", "error min"], table.loc["api", "error max"]) == pytest.approx((-0.2, 0.1))
    assert table.loc["api", "within 15%"] and not table.loc["db", "within 15%"] and table.loc["db", "rounds"] == 1
