"""The study modules of notebooks 01, 02 and 06 on known inputs: headline numbers, filters, what gets saved."""

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from perflab.measure.compare import compare
from perflab.measure.profiling import CALL_COLUMNS, Profiled
from perflab.measure.results import JobRecord, RunResult, RunSet
from perflab.measure.verdict import classify
from perflab.pipeline.fixes import FixSet, progression
from perflab.studies import baseline, before_after, hotspots


def fake_run(api: float, db: float, compute: float, *, label: str = "x", jobs: int = 2) -> RunResult:
    """A sequential run with the given busy seconds per stage, ``jobs`` jobs of 1000 rows and 3 requests each."""
    t, intervals = 0.0, []
    for stage, secs in (("api", api), ("db", db), ("compute", compute)):
        intervals.append((stage, t, t + secs))
        t += secs
    records = [JobRecord(f"S{i}", "1m", rows=1000, requests=3, latencies=[0.1, 0.2, 0.3]) for i in range(jobs)]
    return RunResult(f"id-{label}-{api}", label, "2024-01-01T00:00:00+00:00", t, {"workload": "w", "preset": "smoke"},
                     {"cpu_model": "cpu", "cpu_count": 2, "python": "3"}, records, intervals,
                     server_stats={"requests": 6, "bars_served": 2000})


def test_baseline_headline_is_wall_rows_requests_and_stage_shares():
    head = baseline.headline(fake_run(6.0, 3.0, 1.0))
    assert head == {"wall s": 10.0, "rows": 2000, "requests": 6,
                    "api share": "60%", "db share": "30%", "compute share": "10%"}
    assert json.loads(json.dumps(head)) == head


def test_baseline_tables_show_the_runs_metrics_and_the_servers_counts():
    run = fake_run(6.0, 3.0, 1.0)
    metrics = baseline.metrics_table(run)
    assert list(metrics.columns) == ["value"]
    assert metrics.loc["rows_written", "value"] == 2000 and metrics.loc["api_latency_p50_s", "value"] == 0.2
    server = baseline.server_table(run)
    assert server["simulator"].to_dict() == {"requests": 6.0, "bars_served": 2000.0}
    assert server["simulator"].dtype == "float64"


@dataclass
class FakeLab:
    """What the study functions use of a Lab, recording the runs they ask for (no simulator, no database)."""

    out_dir: Path
    asked: list[tuple[str, str]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    preset: SimpleNamespace = field(default_factory=lambda: SimpleNamespace(repeats=2))

    def backfill(self, fixes: str, label: str) -> RunResult:
        self.asked.append((fixes, label))
        return fake_run(6.0, 3.0, 1.0, label=label)

    def save(self, result: RunResult, name: str) -> Path:
        return result.save(self.out_dir / f"{name}.json")

    def repeat(self, fixes: str | FixSet, label: str, n: int | None = None) -> RunSet:
        spec = fixes if isinstance(fixes, str) else fixes.spec
        self.asked.append((spec, label))
        self.counts[label] = n or self.preset.repeats
        api = 8.0 if spec == "none" else 2.0
        return RunSet(label, [fake_run(api + i, 1.0, 1.0, label=label) for i in range(n or self.preset.repeats)])


def test_measure_baseline_runs_no_fix_and_saves_baseline_json(tmp_path):
    lab = FakeLab(tmp_path)
    run, path = baseline.measure_baseline(lab)
    assert lab.asked == [("none", "baseline")]
    assert path == tmp_path / "baseline.json" and RunResult.load(path).run_id == run.run_id


def calls_frame(rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    total = sum(t for _, _, t in rows)
    return pd.DataFrame([{"function": f, "where": w, "ncalls": 1, "tottime": t, "cumtime": t,
                          "tottime_share": t / total} for f, w, t in rows], columns=CALL_COLUMNS)


CALLS = calls_frame([
    ("run_backfill", "perflab/pipeline/scheduler.py:90", 5.0),  # the scheduler's own frame: the most, but skipped
    ("recv_into", "built-in", 3.0),                            # a built-in: skipped
    ("_windows", "perflab/features/loop.py:12", 1.5),
    ("execute", "psycopg2/extras.py:40", 0.5),
])


def test_top_own_time_skips_the_schedulers_frames_and_builtins():
    top = hotspots.top_own_time(CALLS)
    assert top["function"] == "_windows" and top["tottime"] == 1.5
    assert hotspots.top_own_time(CALLS.iloc[[0, 3, 2]])["function"] == "_windows", "sorted by own time, not order"


def test_hotspots_headline_from_the_profiles():
    loop_lines = pd.DataFrame({"code": ["x" * 80, "short"]})
    run = fake_run(6.0, 3.0, 3.456)
    head = hotspots.headline(run, CALLS, loop_lines, Profiled(None, 0.5), Profiled(None, 0.01))
    assert head == {"profiled wall s": 12.46, "top self-time function": "_windows (15%)",
                    "loop features, slowest line": "x" * 60, "loop / vectorized (line-profiled)": "50x"}
    table = hotspots.seconds_table(run, Profiled(None, 0.2), Profiled(None, 0.5), Profiled(None, 0.01))
    assert table["seconds"].to_dict() == pytest.approx({"run wall s": 12.456, "writer s": 0.2, "loop features s": 0.5,
                                                        "vectorized features s": 0.01})


def test_stage_table_adds_the_unprofiled_baseline_only_when_saved(tmp_path):
    profiled = fake_run(6.0, 3.0, 1.0)
    path = tmp_path / "baseline.json"
    assert list(hotspots.stage_table(profiled, path).columns) == ["profiled"]
    fake_run(2.0, 1.0, 0.5).save(path)
    stages = hotspots.stage_table(profiled, path)
    assert stages.to_dict() == {"profiled": {"api": 6.0, "db": 3.0, "compute": 1.0},
                                "baseline.json (unprofiled)": {"api": 2.0, "db": 1.0, "compute": 0.5}}


def test_before_after_runs_the_verdicts_progression_then_all_fixes(tmp_path):
    lab = FakeLab(tmp_path)
    base, verdict = before_after.measure_baseline(lab)
    assert verdict.path == "A", "api is 80% of the fake baseline"
    assert RunSet.load(tmp_path / "baseline_runs.json").label == "baseline"
    steps = before_after.progression_runs(lab, verdict.path)
    specs = [fs.spec for fs in progression("A")]
    assert lab.asked == [("none", "baseline"), *[(s, f"path A: {s}") for s in specs], ("all", "all fixes")]
    assert [s.label for s in steps][-1] == "all fixes" and len(steps) == len(specs) + 1
    assert RunSet.load(tmp_path / "after_all.json").label == "all fixes"
    assert lab.counts["baseline"] == lab.counts["all fixes"] == 4, "enough runs for the rank test to call a change"
    assert all(lab.counts[f"path A: {s}"] == 2 for s in specs), "the progression steps keep the preset's repeats"


def test_before_after_headline():
    base = RunSet("baseline", [fake_run(8.0, 1.0, 1.0), fake_run(9.0, 1.0, 1.0)])      # 10 s and 11 s
    after = RunSet("all fixes", [fake_run(2.0, 1.0, 1.0), fake_run(2.5, 1.0, 1.0)])    # 4 s and 4.5 s
    comparison = compare(base, after)
    criteria = pd.DataFrame({"passed": [True, None, False, True]}, index=["a", "b", "c", "d"])
    verdict = classify(base)
    assert before_after.headline(verdict, comparison, criteria) == {
        "verdict": "Path A", "baseline s": 10.5, "all fixes s": 4.25, "speedup": "2.5x", "criteria passed": "2/3"}
