"""The significance test knows its error rate: exact p-values, "not enough repeats", calibration, regression gate."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import sqlalchemy as sa

from perflab import cli
from perflab.errors import ConfigError
from perflab.measure import calibration
from perflab.measure.compare import compare, enough_repeats, judge, mann_whitney, smallest_p
from perflab.measure.environment import collect_environment
from perflab.measure.history import store_run, stored_runs
from perflab.measure.results import JobRecord, RunResult, RunSet

ENV = {"cpu_model": "test cpu", "cpu_count": 2, "python": "3.11", "db": {"server_version": "16"}}


def timed_run(wall: float, workload: dict, *, label: str = "run", minutes_ago: int = 0) -> RunResult:
    """A run of ``workload`` that took ``wall`` seconds (api 30%, db 50%, compute 20% of it)."""
    t, intervals = 0.0, []
    for stage, share in (("api", 0.3), ("db", 0.5), ("compute", 0.2)):
        intervals.append((stage, t, t + wall * share))
        t += wall * share
    started = (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat()
    job = JobRecord("AAPL", "1d", {"api": wall * 0.3, "db": wall * 0.5, "compute": wall * 0.2}, rows=10, requests=1,
                    latencies=[wall * 0.3])
    return RunResult(uuid.uuid4().hex[:12], label, started, wall, {"workload": workload, "fixes": "db.copy",
                     "rollout": 1.0, "preset": "smoke"}, ENV, [job], intervals)


def run_set(walls, workload=None, label="runs") -> RunSet:
    workload = workload or {"symbols": ["AAPL"]}
    return RunSet(label, [timed_run(w, workload, label=label) for w in walls])


# --- The test itself, on samples whose answer is known ---

def test_exact_p_values_match_counting_the_orderings():
    assert mann_whitney([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]) == pytest.approx(2 / 252)  # 2 of C(10, 5) orderings
    assert mann_whitney([1, 2, 3, 4, 5], [6, 7, 8, 9, 10], "slower") == pytest.approx(1 / 252)
    assert mann_whitney([6, 7, 8, 9, 10], [1, 2, 3, 4, 5], "slower") == pytest.approx(1.0)
    assert mann_whitney([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    assert mann_whitney([5, 5, 5], [5, 5, 5, 5]) == pytest.approx(1.0)  # all tied: nothing to tell apart
    assert mann_whitney(range(30), [99], "slower") == pytest.approx(1 / 31)  # slowest of 31 runs


def test_large_samples_use_a_normal_approximation_close_to_the_exact_test(monkeypatch):
    from perflab.measure import compare as compare_module

    rng = np.random.default_rng(7)
    samples = [(rng.normal(10, 1, 30), rng.normal(10.4, 1, 30)) for _ in range(6)]
    exact = [(mann_whitney(b, a), mann_whitney(b, a, "slower")) for b, a in samples]
    monkeypatch.setattr(compare_module, "_EXACT_WORK", 0)
    approx = [(mann_whitney(b, a), mann_whitney(b, a, "slower")) for b, a in samples]
    assert np.allclose(approx, exact, atol=0.005) and min(min(p) for p in exact) < 0.01 < max(max(p) for p in exact)


def test_identical_distributions_are_called_significant_at_most_5pct_of_the_time():
    rng = np.random.default_rng(12)
    trials = 600
    false = sum(judge(list(rng.lognormal(0, 0.05, 5)), list(rng.lognormal(0, 0.05, 5)))[0] for _ in range(trials))
    assert false / trials <= 0.05


def test_a_20pct_slowdown_with_5_runs_a_side_is_significant():
    rng = np.random.default_rng(3)
    hits = sum(judge(list(rng.lognormal(0, 0.03, 5)), list(1.2 * rng.lognormal(0, 0.03, 5)))[0] for _ in range(200))
    assert hits / 200 >= 0.95
    result = compare(run_set([1.00, 1.02, 0.98, 1.01, 0.99]), run_set([1.20, 1.23, 1.18, 1.21, 1.19]))
    assert result.total.significant and result.total.verdict == "slower"
    assert result.total.p_value == pytest.approx(2 / 252)
    assert result.table().loc["wall_seconds", "verdict"] == "slower" and result.repeats_note() is None


def test_a_consistent_but_tiny_change_is_below_the_factor_floor():
    result = compare(run_set([1.00, 1.001, 1.002, 1.003, 1.004]), run_set([1.01, 1.011, 1.012, 1.013, 1.014]))
    assert result.total.p_value < 0.01 and not result.total.significant  # 1% < min_effect 5%


@pytest.mark.parametrize("n_before, n_after", [(1, 1), (2, 2), (1, 5), (3, 3)])
def test_too_few_repeats_say_so_instead_of_guessing(n_before, n_after):
    result = compare(run_set([1.0] * n_before), run_set([3.0] * n_after))  # 3x slower, but too few runs to know
    assert not result.total.significant and not result.total.enough_repeats
    assert result.table().loc["wall_seconds", "verdict"] == "not enough repeats"
    note = result.repeats_note()
    assert note.startswith("not enough repeats") and "at least 4 runs on each side" in note


def test_the_smallest_p_decides_what_is_enough():
    assert smallest_p(3, 3) == pytest.approx(0.1) and not enough_repeats(3, 3)
    assert enough_repeats(4, 4) and enough_repeats(3, 5)
    assert not enough_repeats(1, 18, alternative="slower") and enough_repeats(1, 19, alternative="slower")


# --- Calibration: its figures, where they are kept, the footer, repeats needed ---

def blocks(rng, n_blocks: int, cv: float, factor: float = 1.0) -> list[list[float]]:
    return [list(factor * rng.lognormal(0, cv, 5)) for _ in range(n_blocks)]


def rounds(rng, n_rounds: int, cv: float, factor: float = 1.1) -> list[calibration.Round]:
    return [calibration.Round(*blocks(rng, 2, cv), *blocks(rng, 1, cv, factor)) for _ in range(n_rounds)]


def test_calibration_measures_false_positives_and_power_in_both_orders():
    rng = np.random.default_rng(5)
    quiet = calibration.analyze(blocks(rng, 12, 0.02), blocks(rng, 12, 0.02, 1.1), rounds(rng, 10, 0.02),
                                resamples=300)
    assert quiet.false_positive_rate == quiet.false_positive_rate_interleaved == 0 and quiet.passed
    assert quiet.power == quiet.power_interleaved == 1
    assert quiet.sequential_comparisons == 12 and quiet.interleaved_comparisons == 10
    assert quiet.realized_effect == pytest.approx(0.1, abs=0.03)
    noisy = calibration.analyze(blocks(rng, 12, 0.3), blocks(rng, 12, 0.3, 1.1), rounds(rng, 10, 0.3), resamples=300)
    assert noisy.power < 0.5 and noisy.power_interleaved < 0.5 and not noisy.passed
    # The machine gets slower block after block: runs in sequence see a change each time, interleaved runs none.
    drifting = [[10.0 * (i + 1) + x for x in (0.1, 0.2, 0.3, 0.4, 0.5)] for i in range(6)]
    shared = [calibration.Round([b[0], b[3]], [b[1], b[4]], [b[2]]) for b in drifting]
    drift = calibration.analyze(drifting, drifting, shared, resamples=50)
    assert drift.false_positive_rate == 1.0 and drift.false_positive_rate_interleaved == 0.0
    # Judged on interleaved runs (the order the test's promise assumes); drift in sequence is reported, not judged.
    steady = calibration.analyze(drifting, [[1.1 * x for x in b] for b in drifting], rounds(rng, 10, 0.02),
                                 resamples=50)
    assert steady.false_positive_rate == 1.0 and steady.passed


def test_calibrations_are_kept_side_by_side_and_the_newest_is_the_footer(tmp_path, monkeypatch):
    monkeypatch.setattr(calibration, "bench_dir", lambda: tmp_path)
    assert calibration.footer() == calibration.NOT_CALIBRATED == "not calibrated yet: run perflab bench calibration"
    with pytest.raises(ConfigError, match="perflab bench calibration"):
        calibration.repeats_needed_here(0.05)
    rng = np.random.default_rng(1)
    base, inter = blocks(rng, 6, 0.02), rounds(rng, 3, 0.02)
    first = calibration.analyze(base, blocks(rng, 6, 0.02, 1.1), inter, resamples=100)
    paths = [calibration.save_calibration(first, base, base, inter) for _ in range(2)]
    assert len(set(paths)) == 2 and all(p.exists() for p in paths)  # a second calibration does not overwrite
    record = json.loads(paths[1].read_text())
    assert record["samples"]["base_blocks"] == base and record["environment"]["git_commit"] is not None
    assert calibration.footer() == calibration.footer(repeats=5) == (
        f"calibrated on this machine at 5 repeats a side, before and after runs interleaved: false-positive rate "
        f"{first.false_positive_rate_interleaved:.0%}, power {first.power_interleaved:.0%} for a 10% change; taken "
        f"in sequence instead {first.false_positive_rate:.0%} and {first.power:.0%} (drift between the blocks)")
    fp, power = calibration.rates_at(record, 4)
    assert calibration.footer(repeats=4).endswith(f"; at this comparison's 4 runs a side (interleaved): {fp:.0%} and "
                                                  f"{power:.0%} for a 10% change")
    assert fp <= 0.1 and calibration.rates_at(record, 2) == (0.0, 0.0)  # 2 a side: the test can never decide
    other = dict(record, created_at="2999-01-01", environment={**record["environment"], "cpu_model": "another cpu"})
    (tmp_path / "calibration-29990101.json").write_text(json.dumps(other))
    assert calibration.latest_record()["created_at"] == record["created_at"]  # another machine's is not this one's
    need = calibration.repeats_needed_here(0.05)
    assert need.repeats is not None and need.power >= 0.8 and need.samples == 30 + 30  # sequence + interleaved


def test_noisier_machines_need_more_repeats():
    rng = np.random.default_rng(2)
    quiet = calibration.repeats_needed(0.05, list(rng.lognormal(0, 0.01, 60)), trials=200)
    noisy = calibration.repeats_needed(0.05, list(rng.lognormal(0, 0.04, 60)), trials=200)
    assert quiet.repeats == 4 and noisy.repeats > quiet.repeats and noisy.power >= 0.8
    hopeless = calibration.repeats_needed(0.05, list(rng.lognormal(0, 0.5, 60)), trials=100, max_repeats=16)
    assert hopeless.repeats is None and "more than 16 repeats" in str(hopeless)


def test_compare_prints_the_calibration_footer_and_repeats_needed(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(calibration, "bench_dir", lambda: tmp_path)
    before = run_set([1.0, 1.01, 0.99, 1.02, 0.98]).save(tmp_path / "before.json")
    after = run_set([1.0, 1.01]).save(tmp_path / "after.json")
    assert cli.main(["compare", str(before), str(after)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == calibration.NOT_CALIBRATED and out[-2].startswith("not enough repeats: 5 vs 2 runs")
    assert cli.main(["compare", "--repeats-needed", "0.05"]) == 2
    assert "perflab bench calibration" in capsys.readouterr().err
    rng = np.random.default_rng(4)
    base, inter = blocks(rng, 8, 0.02), rounds(rng, 2, 0.02)
    calibration.save_calibration(calibration.analyze(base, blocks(rng, 8, 0.02, 1.1), inter, resamples=50), base,
                                 base, inter)
    assert cli.main(["compare", "--repeats-needed", "0.05"]) == 0
    assert capsys.readouterr().out.startswith("a 5% change needs ")
    assert cli.main(["compare", str(before), str(before)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("calibrated on this machine at 5 repeats a side")


# --- The history keeps whole runs; the regression gate compares with it ---

def test_history_keeps_a_real_run_whole_so_it_can_be_compared_again(clean_db, sim):
    from datetime import date

    from perflab.api.client import PolygonClient
    from perflab.pipeline.fixes import FixSet
    from perflab.pipeline.scheduler import Workload, run_backfill

    workload = Workload(("AAPL",), ("1h",), date(2024, 3, 4), date(2024, 3, 4))
    run = run_backfill(workload, PolygonClient(sim.url), clean_db, FixSet.parse("db.copy"),
                       params={"preset": f"test-{uuid.uuid4().hex[:6]}"})
    store_run(clean_db, run)
    [back] = stored_runs(clean_db, run.params, run.environment)
    assert back.to_dict() == run.to_dict()
    with clean_db.connect() as conn:
        keys = conn.execute(sa.text("SELECT config_key, environment_key FROM perf_runs WHERE run_id = :id"),
                            {"id": run.run_id}).one()
    assert all(keys) and stored_runs(clean_db, run.params, run.environment, exclude=[run.run_id]) == []


@pytest.fixture
def history_of_30(engine):
    """30 stored runs of one workload (about 1.0 s each, a few % apart); the workload is new to this database."""
    workload = {"symbols": [uuid.uuid4().hex[:8]], "timeframes": ["1d"]}
    rng = np.random.default_rng(9)
    for i, wall in enumerate(rng.normal(1.0, 0.02, 30)):
        store_run(engine, timed_run(float(wall), workload, label="history", minutes_ago=60 - i))
    return workload


def check(tmp_path, runs: RunSet, capsys) -> tuple[int, str]:
    code = cli.main(["check", str(runs.save(tmp_path / f"{uuid.uuid4().hex[:6]}.json"))])
    return code, capsys.readouterr().out


def test_check_fails_a_planted_regression(history_of_30, tmp_path, capsys):
    code, out = check(tmp_path, run_set([1.25], history_of_30, "new"), capsys)
    assert code == 1, out
    assert "REGRESSION" in out and "history: 30 stored runs" in out
    code, out = check(tmp_path, run_set([1.2, 1.22, 1.19, 1.21], history_of_30, "new"), capsys)
    assert code == 1 and "REGRESSION" in out


def test_check_passes_a_no_op_and_a_faster_run(history_of_30, tmp_path, capsys):
    for walls in ([1.0], [0.99, 1.01, 1.0, 0.98, 1.02], [0.7]):
        code, out = check(tmp_path, run_set(walls, history_of_30, "new"), capsys)
        assert code == 0 and out.splitlines()[-1] == "OK: not slower beyond the noise of the stored runs", out


def test_check_leaves_the_run_itself_out_of_its_history(history_of_30, engine, tmp_path, capsys):
    slow = run_set([1.25], history_of_30, "new")
    store_run(engine, slow.runs[0])  # perflab backfill stores every run before anyone checks it
    code, out = check(tmp_path, slow, capsys)
    assert code == 1 and "history: 30 stored runs" in out


def test_check_without_history_or_enough_of_it_passes_saying_why(engine, tmp_path, capsys):
    workload = {"symbols": [uuid.uuid4().hex[:8]]}
    code, out = check(tmp_path, run_set([5.0], workload), capsys)
    assert code == 0 and "no stored runs" in out
    for wall in (1.0, 1.01, 0.99):
        store_run(engine, timed_run(wall, workload))
    code, out = check(tmp_path, run_set([5.0], workload), capsys)
    assert code == 0 and "not enough repeats" in out and "too few runs to judge" in out


def test_environment_names_library_versions_and_the_load():
    import numpy
    import pandas

    env = collect_environment()
    libs = env["libraries"]
    assert set(libs) == {"numpy", "pandas", "sqlalchemy", "psycopg", "psycopg2", "requests", "perflab"}
    assert libs["numpy"] == numpy.__version__ and libs["pandas"] == pandas.__version__
    assert libs["sqlalchemy"] == sa.__version__ and libs["psycopg"] and libs["psycopg2"]
    load = env["load_average"]
    assert len(load) == 3 and all(isinstance(x, float) and x >= 0 for x in load)


def test_a_run_records_the_commit_its_code_was_loaded_from_not_where_head_is_when_it_ends(monkeypatch):
    from perflab.measure import environment

    loaded = environment.LOADED_COMMIT
    assert loaded
    monkeypatch.setattr(environment, "git_commit", lambda root=None: "0000000")  # HEAD moves during a long kernel
    assert collect_environment()["git_commit"] == loaded


def test_the_before_after_notebook_prints_the_comparisons_footer(tmp_path, monkeypatch):
    from perflab.measure.compare import compare
    from perflab.studies.before_after import significance

    monkeypatch.setattr(calibration, "bench_dir", lambda: tmp_path)
    few = compare(run_set([1.0, 1.01, 0.99]), run_set([0.5, 0.51, 0.49]))
    assert significance(few).splitlines() == [few.repeats_note(), calibration.NOT_CALIBRATED]
    rng = np.random.default_rng(4)
    base, inter = blocks(rng, 8, 0.02), rounds(rng, 2, 0.02)
    calibration.save_calibration(calibration.analyze(base, blocks(rng, 8, 0.02, 1.1), inter, resamples=50), base,
                                 base, inter)
    enough = compare(run_set([1.0, 1.01, 0.99, 1.02]), run_set([0.5, 0.51, 0.49, 0.5]))
    line = significance(enough)
    assert line == calibration.footer(repeats=4) and "at this comparison's 4 runs" in line
