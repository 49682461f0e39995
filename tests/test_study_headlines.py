"""Notebooks 03, 04 and 05 publish what these study functions compute: each asserted on hand-made inputs."""

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from perflab.measure.results import JobRecord, RunResult, RunSet
from perflab.pipeline.fixes import FixSet
from perflab.report.plots import history_chart, history_kind
from perflab.studies import path_a, path_b, path_c


def fake_run(api: float, db: float, compute: float, *, label: str = "x", jobs: int = 2) -> RunResult:
    """A sequential run with the given busy seconds per stage, ``jobs`` jobs of 1000 rows and 3 requests each."""
    t, intervals = 0.0, []
    for stage, secs in (("api", api), ("db", db), ("compute", compute)):
        intervals.append((stage, t, t + secs))
        t += secs
    records = [JobRecord(f"S{i}", "1m", rows=1000, requests=3, latencies=[0.1]) for i in range(jobs)]
    return RunResult(f"id-{label}-{api}-{compute}", label, "2024-01-01T00:00:00+00:00", t, {"preset": "smoke"},
                     {"cpu_model": "cpu", "cpu_count": 2, "python": "3"}, records, intervals)


def steps_table(api_first: float, api_last: float, rps_last: float, server_429_last: int) -> pd.DataFrame:
    labels = [s.label for s in path_a.STEPS]
    table = pd.DataFrame({col: [1.0] * len(labels) for col in path_a.STEP_COLUMNS}, index=labels)
    table.loc[labels[0], "api_wall_s"] = api_first
    table.loc[labels[-1], ["api_wall_s", "requests_per_s", "server_429"]] = [api_last, rps_last, server_429_last]
    return table


def test_path_a_headline_reads_the_first_and_last_steps_and_the_backfill_ratio():
    base, fixed = fake_run(6.0, 3.0, 1.0, label="baseline"), fake_run(1.0, 1.5, 0.5, label="fixed")
    head = path_a.headline(steps_table(4.903689, 1.23456, 87.654, 3), base, fixed)
    assert head == {"API s baseline": 4.9, "API s all Path A": 1.23, "req/s all Path A": 87.7, "429s all Path A": 3,
                    "wall x (backfill)": 0.3}


def test_path_a_tables_name_their_units():
    base, fixed = fake_run(6.0, 3.0, 1.0, label="baseline"), fake_run(1.0, 1.5, 0.5, label="fixed")
    table = path_a.backfill_table(base, fixed)
    assert list(table.index) == ["baseline", "fixed"]
    assert table.loc["fixed", "wall s"] == 3.0 and table.loc["fixed", "api busy s"] == 1.0
    assert table.loc["fixed", "wall x baseline"] == pytest.approx(0.3)
    assert table.loc["baseline", "requests"] == 6 and table.loc["baseline", "rows"] == 2000
    assert set(path_a.BACKFILL_FORMATS) == set(table.columns), "every column has a display format"
    shown = path_a.steps_display(steps_table(4.903689, 1.0, 2.0, 0))
    assert {"api s", "req/s", "429s (server)", "p95 ms"} <= set(shown.columns)
    assert shown.loc["baseline", "api s"] == 4.903689
    assert set(path_a.STEP_FORMATS) == set(shown.columns)
    html = shown.style.format(path_a.STEP_FORMATS).to_html()
    assert "4.90" in html and "4.903689" not in html


def writers_frame() -> pd.DataFrame:
    return pd.DataFrame({"rows": [1000, 100], "median_s": [0.01, 0.1], "min_s": [0.01, 0.1], "max_s": [0.02, 0.2],
                         "rows_per_s": [100_000.0, 1_000.0], "rewrite_rows_per_s": [50_000.0, 900.0]},
                        index=pd.Index(["copy_binary", "orm_row"], name="writer"))


def test_writer_table_adds_the_psql_reference_and_both_ratios():
    table = path_b.writer_table(writers_frame(), path_b.Timing(1000, [0.005, 0.005]))
    assert table.loc["psql \\copy", "rows_per_s"] == 200_000
    assert table.loc["copy_binary", "x psql_copy"] == pytest.approx(0.5)
    assert table.loc["copy_binary", "x orm_row"] == pytest.approx(100.0)
    assert table.loc["psql \\copy", "x orm_row"] == pytest.approx(200.0)
    assert set(path_b.WRITER_FORMATS) <= set(table.columns)


def test_path_b_headline():
    writers = path_b.writer_table(writers_frame(), path_b.Timing(1000, [0.005]))
    progress = pd.DataFrame({"db speed-up": [1.0, 2.0, 4.0, 8.0, 12.5, 20.0],
                             "peak connections": [3, 4, 9, 5, 5, 6]})
    curve = pd.DataFrame({"rows_per_s": [10.0, 30.0, 20.0]}, index=pd.Index([100, 500, 1000], name="batch_size"))
    sweeps = [path_b.BatchSweep("orm_bulk", curve.iloc[::-1]), path_b.BatchSweep("copy_binary", curve)]
    head = path_b.headline(writers, progress, sweeps, plan_steps=3, default_writer="copy_binary")
    assert head == {"default writer": "copy_binary", "copy_binary rows/s": "100,000", "copy_binary x psql_copy": "0.50",
                    "copy_binary x orm_row": "100x", "path B db speed-up": "8.0x",
                    "copy + group commit db speed-up": "20.0x", "sweep best (copy_binary)": 500,
                    "peak connections": 9}


def test_index_ratios_are_relative_to_the_first_configuration_in_study_order():
    inserts = pd.DataFrame([{"indexes": cfg, "writer": w, "rows_per_s": rate}
                            for cfg, (a, b) in {"primary key only": (1000.0, 4000.0),
                                                "pk + (symbol, timeframe, time DESC)": (800.0, 3000.0)}.items()
                            for w, rate in (("execute_values", a), ("copy_binary", b))])
    study = path_b.IndexStudy(inserts, pd.DataFrame())
    ratios = path_b.index_ratios(study)
    assert list(ratios.index) == ["primary key only", "pk + (symbol, timeframe, time DESC)"]
    assert ratios.loc["pk + (symbol, timeframe, time DESC)"].to_dict() == pytest.approx(
        {"execute_values": 0.8, "copy_binary": 0.75})
    assert path_b.index_rates(study).loc["primary key only", "copy_binary"] == 4000.0


def implementations() -> pd.DataFrame:
    rows = [("loop", "subset", 1.0, 1000.0, 1.0), ("vectorized", "subset", 0.002, 2.0, 500.0),
            ("vectorized", "full", 0.006, 2.0, 480.0), (path_c.FORCED_POOL, "full", 0.012, 4.0, 240.0)]
    return pd.DataFrame(rows, columns=["impl", "panel", "seconds", "ms_per_symbol", "speedup_vs_loop"])


def test_path_c_backfill_stages_and_headline():
    sets = {"loop": RunSet("loop", [fake_run(1.0, 1.0, 4.0), fake_run(1.0, 1.0, 6.0), fake_run(1.0, 1.0, 5.0)]),
            "vectorized": RunSet("v", [fake_run(1.0, 1.0, 0.05), fake_run(1.0, 1.0, 0.1)])}
    stages = path_c.backfill_stages(sets)
    assert stages.loc["loop", "compute s"] == 5.0 and stages.loc["loop", "compute spread s"] == 2.0
    assert stages.loc["vectorized", "compute vs loop"] == pytest.approx(5.0 / 0.075)
    assert stages.loc["vectorized", "api s"] == 1.0
    assert set(path_c.STAGE_FORMATS) == set(stages.columns)
    head = path_c.headline(implementations(), {"max_rel_error_vs_loop": 3.2e-12}, stages)
    assert head == {"vectorized vs loop (per bar)": "480x", "vectorized ms/symbol": 2.0, "pool vs vectorized": "0.50x",
                    "backfill compute stage": "67x faster", "max rel error vs loop": "3e-12"}


def test_path_c_chart_and_facts():
    fig = path_c.implementation_chart(implementations())
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()][0] == "loop / subset"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["plan: 1 s", "issue: 10 ms"]
    assert [p.get_width() for p in ax.patches] == [1000.0, 2.0, 2.0, 4.0]
    plt.close(fig)
    facts = path_c.facts_table({"workers": 2, "samples": {"x": [1.0]}})
    assert list(facts.index) == ["workers"]


def test_history_kind_tells_baselines_all_fixes_and_others_apart():
    assert history_kind("none") == "baseline"
    assert history_kind(FixSet.parse("all").spec) == "all fixes"
    assert history_kind("db.copy") == "other fixes"
    assert history_kind(float("nan")) == "other fixes", "a stored run without a fixes spec (NaN in the frame)"


def test_history_chart_has_a_legend_naming_each_series():
    runs = pd.DataFrame({
        "label": ["baseline", "all fixes", "x", "baseline", "y"],
        "preset": ["smoke", "smoke", "smoke", "standard", "smoke"],
        "fixes": ["none", FixSet.parse("all").spec, "db.copy", "none", "api.backoff"],
        "started_at": pd.to_datetime(["2026-12-01T10:00", "2026-12-01T11:00", "2026-12-01T12:00",
                                      "2026-12-02T10:00", "2026-12-02T11:00"], utc=True),
        "wall_seconds": [10.0, 2.0, 5.0, 11.0, 6.0]})
    fig = history_chart(runs)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["baseline (2 runs; preset smoke, standard)", "all fixes (1 run; preset smoke)",
                      "other fixes (2 configurations, 2 runs; preset smoke)"]
    lines = {line.get_label().split(" (")[0]: list(line.get_ydata()) for line in fig.axes[0].get_lines()}
    assert lines == {"baseline": [10.0, 11.0], "all fixes": [2.0], "other fixes": [5.0, 6.0]}
    assert fig.axes[0].get_ylabel() == "wall seconds"
    plt.close(fig)
