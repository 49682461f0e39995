"""Schema and migrations: applied in order and recorded once; optional indexes switchable; TimescaleDB if present."""

import logging

import sqlalchemy as sa

from perflab.db import migrate
from perflab.db.migrate import apply_schema, migration_files, plan_migrations, set_indexes, usable_extensions


def test_migrations_are_numbered_applied_in_order_and_recorded_once(engine):
    names = [p.stem for p in migration_files()]
    assert names == sorted(names) and "001_phase_3_indexes" in names
    assert apply_schema(engine) == []  # the session fixture applied everything already
    with engine.connect() as conn:
        recorded = {r[0] for r in conn.execute(sa.text("SELECT version FROM schema_migrations"))}
    assert "001_phase_3_indexes" not in recorded, "index migrations are optional, switched by set_indexes"


def test_index_migration_is_applied_and_dropped_on_demand(engine):
    def present() -> set[str]:
        with engine.connect() as conn:
            return {r[0] for r in conn.execute(sa.text(
                "SELECT indexname FROM pg_indexes WHERE indexname LIKE 'idx_%'"))}

    set_indexes(engine, True)
    assert present() == {"idx_symbol_timeframe_time", "idx_symbol_timeframe_created",
                         "idx_quant_features_symbol_timeframe"}
    set_indexes(engine, False)
    assert present() == set()


def test_without_timescaledb_the_hypertable_is_skipped_said_once(engine, monkeypatch, caplog):
    with engine.connect() as conn:
        assert "timescaledb" not in usable_extensions(conn)  # this machine's server lacks it
    monkeypatch.setattr(migrate, "_said", set())
    with caplog.at_level(logging.INFO, logger="perflab.db"):
        assert apply_schema(engine) == []
        assert apply_schema(engine) == []
    said = [r.getMessage() for r in caplog.records if "timescale" in r.getMessage()]
    assert len(said) == 1 and "carrying on" in said[0]
    with engine.connect() as conn:
        kind = conn.execute(sa.text("SELECT relkind FROM pg_class WHERE relname = 'market_data'")).scalar()
    assert kind == "r"


def test_with_timescaledb_the_plan_runs_create_hypertable():
    files = migration_files()
    plan = plan_migrations(files, done=set(), extensions={"timescaledb"})
    hyper = [p for p in plan.apply if p.stem == "002_timescale_hypertable"]
    assert hyper and not plan.skipped
    sql = " ".join(hyper[0].read_text().split())
    assert "CREATE EXTENSION IF NOT EXISTS timescaledb;" in sql
    assert "create_hypertable('market_data', 'time', if_not_exists => TRUE, migrate_data => TRUE)" in sql
    assert all(not p.stem.endswith("_indexes") for p in plan.apply)
    absent = plan_migrations(files, done=set(), extensions=set())
    assert "002_timescale_hypertable" in absent.skipped and hyper[0] not in absent.apply
    required = {p.stem for p in plan.apply}
    assert plan_migrations(files, done=required, extensions={"timescaledb"}).apply == []
