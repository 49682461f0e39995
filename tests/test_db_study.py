"""The write-path studies measure what they say on the same rows and leave the tables as they found them."""

import sqlalchemy as sa

from perflab.api.client import PolygonClient
from perflab.db.migrate import reset_data
from perflab.measure.results import RunSet
from perflab.pipeline.fixes import FixSet
from perflab.pipeline.presets import get_preset
from perflab.pipeline.scheduler import Workload, run_backfill
from perflab.simulator.bars import synthetic_bars
from perflab.studies.path_b import (
    compare_writers,
    find_optimal_batch_size,
    fix_progression,
    index_study,
    psql_copy,
    row_counts,
)


def test_batch_sweep_returns_the_best_size_with_its_curve(clean_db):
    sweep = find_optimal_batch_size(clean_db, synthetic_bars(1_000), sizes=(100, 500, 1_000, 5_000), repeats=1)
    assert list(sweep.curve.index) == [100, 500, 1_000]  # larger than the rows: not measured
    assert sweep.best in sweep.curve.index
    assert sweep.curve.loc[sweep.best, "rows_per_s"] == sweep.curve["rows_per_s"].max()
    assert row_counts(clean_db)["rows"] == 0


def test_compare_writers_caps_slow_strategies(clean_db):
    table = compare_writers(clean_db, synthetic_bars(400), ["orm_row", "copy_binary"], caps={"orm_row": 50},
                            repeats=1)
    assert table.loc["orm_row", "rows"] == 50 and table.loc["copy_binary", "rows"] == 400
    assert (table["rows_per_s"] > 0).all() and (table["rewrite_rows_per_s"] > 0).all()


def test_index_study_times_inserts_and_queries_per_configuration(clean_db):
    study = index_study(clean_db, series=2, rows_per_series=200, writers=["copy_binary"], repeats=1)
    assert len(study.inserts) == 3 and (study.inserts["rows"] == 400).all()
    assert len(study.queries) == 3 * 5 and study.queries["index used"].str.len().gt(0).all()
    assert (study.queries["median_ms"] > 0).all()
    with clean_db.connect() as conn:
        left = conn.execute(sa.text("SELECT count(*) FROM pg_indexes WHERE indexname LIKE 'idx_%'")).scalar()
    assert left == 0 and row_counts(clean_db)["rows"] == 0


def test_psql_copy_reference_loads_the_same_rows(clean_db, tmp_path):
    timing = psql_copy(clean_db, synthetic_bars(500), tmp_path / "bars.csv", repeats=1)
    assert timing.rows == 500 and timing.rows_per_s > 0
    assert row_counts(clean_db)["rows"] == 0


def test_psql_copy_stored_loads_back_what_a_run_stored_and_leaves_the_tables_empty(clean_db, sim, tmp_path):
    from perflab.db.psql import psql_copy_stored

    def stored() -> dict[str, list[tuple]]:
        with clean_db.connect() as conn:
            return {t: conn.exec_driver_sql(f"SELECT * FROM {t} ORDER BY symbol, timeframe, time").fetchall()
                    for t in ("market_data", "quant_features")}

    workload = Workload(("AAPL", "MSFT"), ("1h", "1d"), get_preset("smoke").start, get_preset("smoke").end)
    result = run_backfill(workload, PolygonClient(sim.url), clean_db, FixSet.parse("db.copy"), label="stored")
    before = stored()
    copy = psql_copy_stored(clean_db, tmp_path, repeats=2)
    assert copy.rows == {"market_data": result.rows_written, "quant_features": len(before["quant_features"])}
    assert all(len(s) == 2 for s in copy.seconds.values()) and copy.rows_per_s > 0
    assert row_counts(clean_db)["rows"] == 0  # left empty, as a fresh run expects
    for table, rows in before.items():  # the files loaded back are the run's rows
        assert len((tmp_path / f"{table}.csv").read_text().splitlines()) == len(rows) > 0


def test_fix_progression_runs_each_step_and_reports_its_db_stage(clean_db, sim):
    workload = Workload(("AAPL",), ("1h",), get_preset("smoke").start, get_preset("smoke").end)

    def repeat(spec, n=2):
        runs = []
        for _ in range(n):
            reset_data(clean_db)
            runs.append(run_backfill(workload, PolygonClient(sim.url), clean_db, FixSet.parse(spec), label=spec))
        return RunSet(spec, runs)

    table = fix_progression([repeat("db.bulk"), repeat("db.copy")], baseline=repeat("none", 1))
    assert list(table.index) == ["none", "db.bulk", "db.copy"]
    assert list(table["writer"]) == ["orm_row", "orm_bulk", "copy_binary"]
    assert (table["failures"] == 0).all() and table["rows"].nunique() == 1
    assert table["peak connections"].iloc[1:].between(1, 9).all()
    assert table["db speed-up"].iloc[0] == 1.0
