"""Apply ``sql/schema.sql`` and the numbered ``sql/migrations/*.sql`` in order, recording each once.

Index migrations (``*_indexes.sql``) are optional: they are applied or dropped by
:func:`set_indexes`, because whether they help is what perflab measures.
"""

from __future__ import annotations

import re
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from perflab.db.engine import PROJECT_ROOT

SQL_DIR = PROJECT_ROOT / "sql"
_LOCK_KEY = 7_300_301  # advisory lock: concurrent processes migrate one at a time


def migration_files(sql_dir: Path = SQL_DIR) -> list[Path]:
    return sorted((sql_dir / "migrations").glob("[0-9][0-9][0-9]_*.sql"))


def _is_optional(path: Path) -> bool:
    return path.stem.endswith("_indexes")


def apply_schema(engine: Engine, sql_dir: Path = SQL_DIR) -> list[str]:
    """Create the tables and apply pending required migrations; returns the migrations applied now."""
    applied_now = []
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
        conn.exec_driver_sql((sql_dir / "schema.sql").read_text())
        conn.exec_driver_sql(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version text PRIMARY KEY, "
            "applied_at timestamptz NOT NULL DEFAULT now())")
        done = {r[0] for r in conn.execute(sa.text("SELECT version FROM schema_migrations"))}
        for path in migration_files(sql_dir):
            if path.stem in done or _is_optional(path):
                continue
            conn.exec_driver_sql(path.read_text())
            conn.execute(sa.text("INSERT INTO schema_migrations (version) VALUES (:v)"), {"v": path.stem})
            applied_now.append(path.stem)
    return applied_now


def index_names(sql: str) -> list[str]:
    return re.findall(r"CREATE INDEX IF NOT EXISTS (\w+)", sql)


def set_indexes(engine: Engine, on: bool, sql_dir: Path = SQL_DIR) -> None:
    """Create (``on``) or drop the optional index migrations, so runs with and without them compare."""
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
        for path in migration_files(sql_dir):
            if not _is_optional(path):
                continue
            sql = path.read_text()
            if on:
                conn.exec_driver_sql(sql)
                conn.execute(sa.text("INSERT INTO schema_migrations (version) VALUES (:v) ON CONFLICT DO NOTHING"),
                             {"v": path.stem})
            else:
                for name in index_names(sql):
                    conn.exec_driver_sql(f"DROP INDEX IF EXISTS {name}")
                conn.execute(sa.text("DELETE FROM schema_migrations WHERE version = :v"), {"v": path.stem})


def reset_data(engine: Engine) -> None:
    """Empty the bar and feature tables so a measured run starts from the same state as its comparison."""
    with engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE market_data, quant_features")
