"""The few DBAPI calls that differ between psycopg 3 and psycopg2, behind one interface.

perflab's raw-cursor code (COPY, multi-row INSERT) calls these, so every writer runs on whichever driver
``engine.normalize_url`` chose: psycopg 3 by default, psycopg2 when the user names it.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from psycopg2.extras import execute_values

_MAX_PARAMS = 65_535  # PostgreSQL's limit on bind parameters in one statement (psycopg 3 binds server-side)


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
    """Execute ``sql`` (``INSERT ... VALUES %s ...``) as multi-row INSERTs of at most ``page_size`` rows each."""
    if not rows:
        return
    page = max(1, page_size or len(rows))
    if is_psycopg2(cur):
        execute_values(cur, sql, rows, page_size=page)
        return
    width = len(rows[0])
    page = min(page, max(1, _MAX_PARAMS // width))
    head, _, tail = sql.partition("%s")
    row = "(" + ", ".join(["%s"] * width) + ")"
    for i in range(0, len(rows), page):
        chunk = rows[i:i + page]
        cur.execute(f"{head}{', '.join([row] * len(chunk))}{tail}", [v for r in chunk for v in r])
