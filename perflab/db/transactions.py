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
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from perflab.db.errors import is_transient, mapped


@dataclass(frozen=True)
class BatchRetry:
    """Retry a failed batch whole, with exponential backoff, while the failure is transient (~7 s in all).

    Always on: switching ``db.retry`` off does not switch this off."""

    attempts: int = 8
    initial_s: float = 0.1
    max_s: float = 2.0

    def run(self, fn: Callable[[], int]) -> int:
        """``fn()`` with database errors mapped to perflab's types, retried whole while transient."""
        retrying = Retrying(stop=stop_after_attempt(self.attempts),
                            wait=wait_exponential(multiplier=self.initial_s, max=self.max_s),
                            retry=retry_if_exception(is_transient), reraise=True)

        def attempt() -> int:
            with mapped():
                return fn()

        return retrying(attempt)


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
