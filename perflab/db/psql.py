"""psql, the reference loader: one meta-command timed as a user would run it, and the rows a run stored loaded back.

The physical floors of the benchmarks are psql's ``\\copy`` of the very rows a backfill stored, bars and features
alike: a pipeline that stores both tables cannot beat the database loading both from a file.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from perflab.errors import PerflabError

STORED_TABLES = ("market_data", "quant_features")
"""What a backfill stores, in the order it is loaded back."""


def psql_binary() -> Path:
    """The psql that ships with the embedded server (works against any server)."""
    from pgserver._commands import POSTGRES_BIN_PATH

    return POSTGRES_BIN_PATH / "psql"


def psql(engine: Engine, command: str) -> float:
    """Seconds psql takes to run one command against ``engine``'s database, process start included."""
    url = engine.url.set(drivername="postgresql")
    env = {**os.environ, "PGPASSWORD": url.password or ""}
    uri = url.set(password=None).render_as_string(hide_password=False)
    started = time.perf_counter()
    subprocess.run([str(psql_binary()), uri, "-v", "ON_ERROR_STOP=1", "-q", "-c", command], env=env, check=True,
                   capture_output=True)
    return time.perf_counter() - started


@dataclass(frozen=True)
class StoredCopy:
    """psql ``\\copy`` of what a run stored: rows per table and each load's seconds (one per repeat)."""

    rows: dict[str, int]
    seconds: dict[str, list[float]]

    def table_seconds(self, table: str) -> float:
        """The median load of one table."""
        return float(np.median(self.seconds[table]))

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())

    @property
    def total_seconds(self) -> float:
        """The median loads of every table, added: what loading all the run stored takes."""
        return sum(self.table_seconds(t) for t in self.rows)

    @property
    def rows_per_s(self) -> float:
        return self.total_rows / self.total_seconds


def _loaded_columns(conn, table: str) -> list[str]:
    """The columns a writer fills (those without a default such as ``created_at``'s ``now()``)."""
    return list(conn.execute(sa.text(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name = :t AND column_default IS NULL ORDER BY ordinal_position"), {"t": table}).scalars())


def psql_copy_stored(engine: Engine, folder: Path, tables: tuple[str, ...] = STORED_TABLES, *,
                     repeats: int = 1) -> StoredCopy:
    """Export what ``tables`` hold to CSV in ``folder`` (untimed), then ``repeats`` times: empty them and time psql's
    ``\\copy`` loading each back. The tables are left empty (with fetch_coverage), as a fresh run expects them."""
    with engine.connect() as conn:
        columns = {t: ", ".join(_loaded_columns(conn, t)) for t in tables}
    for table in tables:
        psql(engine, f"\\copy (SELECT {columns[table]} FROM {table}) TO '{folder / table}.csv' WITH (FORMAT csv)")
    rows = _counts(engine, tables)
    seconds: dict[str, list[float]] = {t: [] for t in tables}
    for _ in range(repeats):
        _empty(engine, tables)
        for table in tables:
            seconds[table].append(psql(engine, f"\\copy {table} ({columns[table]}) FROM '{folder / table}.csv' "
                                               "WITH (FORMAT csv)"))
        loaded = _counts(engine, tables)
        if loaded != rows:
            raise PerflabError(f"psql \\copy loaded {loaded} rows of {rows}: check the server log")
    _empty(engine, tables)
    return StoredCopy(rows, seconds)


def _counts(engine: Engine, tables: tuple[str, ...]) -> dict[str, int]:
    with engine.connect() as conn:
        return {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one() for t in tables}


def _empty(engine: Engine, tables: tuple[str, ...]) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(f"TRUNCATE {', '.join({*tables, 'fetch_coverage'})}")


__all__ = ["STORED_TABLES", "StoredCopy", "psql", "psql_binary", "psql_copy_stored"]
