"""One transaction per unit of work, retried whole while the failure is transient.

A lost connection, a server restart or a concurrent writer winning a race is worth another try of the
whole batch; anything else (a constraint the data violates) is raised at once. Used by the bar writers,
the feature store and the group store, so a resumed backfill never half-writes any of them. This retry is
part of every write, not a fix: the baseline has it too. The ``db.retry`` fix (:mod:`perflab.db.outage`)
adds waiting longer for a server that is down, around whole job steps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
import psycopg2
from sqlalchemy.engine import Engine

from perflab.db.errors import is_transient, mapped
from perflab.retry import RetryPolicy

DB_BATCH = RetryPolicy(retry_on=is_transient, attempts=8, initial_s=0.1, max_s=2.0)
"""A batch whose failure is transient, tried again whole: 8 tries, exponential 0.1..2 s apart (~7 s in all)."""


@dataclass(frozen=True)
class BatchRetry:
    """Retry a failed batch whole under ``policy`` (:data:`DB_BATCH`), its errors mapped to perflab's types.

    Always on: switching ``db.retry`` off does not switch this off."""

    policy: RetryPolicy = DB_BATCH

    def run(self, fn: Callable[[], int]) -> int:
        """``fn()`` with database errors mapped to perflab's types, retried whole while transient."""

        def attempt() -> int:
            with mapped():
                return fn()

        return self.policy.run(attempt)


RETRY = BatchRetry()


@contextmanager
def raw_transaction(engine: Engine) -> Iterator:
    """A DBAPI cursor in one transaction: committed on success, rolled back (or the connection dropped) on error."""
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        yield cur
        cur.close()
        raw.commit()
    except BaseException:
        try:
            raw.rollback()
        except (psycopg2.Error, psycopg.Error):  # the connection is gone: drop it from the pool, not reuse it
            raw.invalidate()
        raise
    finally:
        raw.close()
