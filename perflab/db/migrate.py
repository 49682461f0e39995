"""Apply ``sql/schema.sql`` and the numbered ``sql/migrations/*.sql`` in order, recording each once.

Index migrations (``*_indexes.sql``) are optional: they are applied or dropped by
:func:`set_indexes`, because whether they help is what perflab measures. A migration whose first line
is ``-- requires-extension: NAME`` runs only where the server offers that extension; elsewhere it is
skipped (said once per process, not recorded, so it runs once the extension appears).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from perflab.db.engine import PROJECT_ROOT

SQL_DIR = PROJECT_ROOT / "sql"
_LOCK_KEY = 7_300_301  # advisory lock: concurrent processes migrate one at a time
_REQUIRES = re.compile(r"^--\s*requires-extension:\s*(\w+)")
_log = logging.getLogger("perflab.db")
_said: set[str] = set()


def migration_files(sql_dir: Path = SQL_DIR) -> list[Path]:
    """The numbered migrations, in the order they apply."""
    return sorted((sql_dir / "migrations").glob("[0-9][0-9][0-9]_*.sql"))


def _is_optional(path: Path) -> bool:
    return path.stem.endswith("_indexes")


def required_extension(path: Path) -> str | None:
    """The extension a migration needs (its ``-- requires-extension:`` first line), if any."""
    match = _REQUIRES.match(path.read_text().lstrip())
    return match.group(1) if match else None


@dataclass(frozen=True)
class MigrationPlan:
    """Which pending required migrations run now, and which wait for an extension the server lacks."""

    apply: list[Path]
    skipped: dict[str, str]


def plan_migrations(files: list[Path], done: set[str], extensions: set[str]) -> MigrationPlan:
    """Pending non-optional migrations in order; those needing a missing extension are skipped with the reason."""
    apply, skipped = [], {}
    for path in files:
        if path.stem in done or _is_optional(path):
            continue
        needs = required_extension(path)
        if needs and needs not in extensions:
            skipped[path.stem] = f"the {needs} extension is not available on this server"
        else:
            apply.append(path)
    return MigrationPlan(apply, skipped)


def usable_extensions(conn) -> set[str]:
    """Extensions installed here, or installable (timescaledb also needs to be in shared_preload_libraries)."""
    installed = {r[0] for r in conn.execute(sa.text("SELECT extname FROM pg_extension"))}
    available = {r[0] for r in conn.execute(sa.text("SELECT name FROM pg_available_extensions"))}
    preload = conn.execute(sa.text("SELECT current_setting('shared_preload_libraries')")).scalar() or ""
    if "timescaledb" not in preload:
        available.discard("timescaledb")
    return installed | available


def apply_schema(engine: Engine, sql_dir: Path = SQL_DIR) -> list[str]:
    """Create the tables and apply pending required migrations; returns the migrations applied now."""
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
        conn.exec_driver_sql((sql_dir / "schema.sql").read_text())
        conn.exec_driver_sql(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version text PRIMARY KEY, "
            "applied_at timestamptz NOT NULL DEFAULT now())")
        done = {r[0] for r in conn.execute(sa.text("SELECT version FROM schema_migrations"))}
        plan = plan_migrations(migration_files(sql_dir), done, usable_extensions(conn))
        for path in plan.apply:
            conn.exec_driver_sql(path.read_text())
            conn.execute(sa.text("INSERT INTO schema_migrations (version) VALUES (:v)"), {"v": path.stem})
    for version, reason in plan.skipped.items():
        if version not in _said:
            _said.add(version)
            _log.info("skipping migration %s: %s; carrying on without it", version, reason)
    return [p.stem for p in plan.apply]


def index_names(sql: str) -> list[str]:
    return re.findall(r"CREATE INDEX IF NOT EXISTS (\w+)", sql)


def index_statements(sql_dir: Path = SQL_DIR) -> dict[str, str]:
    """Every optional index by name with its ``CREATE INDEX`` statement, so a study can create them one by one."""
    out = {}
    for path in migration_files(sql_dir):
        if _is_optional(path):
            for stmt in re.findall(r"CREATE INDEX IF NOT EXISTS \w+[^;]*;", path.read_text()):
                out[index_names(stmt)[0]] = stmt
    return out


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
