"""Riding through a lost database connection (the ``db.retry`` fix): wait for the server, then redo the step.

Every write already retries its batch whole for about 7 s while the failure is transient (the writers'
:class:`~perflab.db.transactions.BatchRetry`, on with this fix off too). ``db.retry`` adds what that cannot
do: a job step that still dies with the connection (an outage longer than that, a lost connection during a
read-back or a coverage step) waits for the database to answer again, up to a minute, and runs again;
bars are re-written minus those already committed, so the outage costs retries, not rows, whichever
writer is in use.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from perflab.db.coverage import drop_stored
from perflab.db.errors import is_connection_lost, mapped
from perflab.db.writers import Writer
from perflab.errors import DatabaseUnavailableError

T = TypeVar("T")


@dataclass(frozen=True)
class DbRetryPolicy:
    """How many times one step is retried and how long to wait for the database to answer again."""

    attempts: int = 5
    wait_for_db_s: float = 60.0
    poll_s: float = 0.2


def wait_for_db(engine: Engine, policy: DbRetryPolicy) -> float:
    """Block until ``SELECT 1`` succeeds; return the seconds waited, or raise after ``wait_for_db_s``."""
    started = time.perf_counter()
    engine.dispose()
    while True:
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            return time.perf_counter() - started
        except sa.exc.DBAPIError as exc:
            if not is_connection_lost(exc) or time.perf_counter() - started > policy.wait_for_db_s:
                raise DatabaseUnavailableError(
                    f"the database did not come back within {policy.wait_for_db_s:.0f}s: check that it is running, "
                    "then run again with api.missing_only") from None
            time.sleep(policy.poll_s)


@dataclass
class DbRetry:
    """One job's DB steps, run again after a lost connection (off: each step runs once, as in the baseline;
    the writers' batch retry inside a step runs either way)."""

    engine: Engine
    enabled: bool = True
    policy: DbRetryPolicy = field(default_factory=DbRetryPolicy)
    retries: int = 0
    waited_s: float = 0.0

    def run(self, step: Callable[[], T]) -> T:
        """Run ``step``; after a lost connection wait for the database and run it again (bounded)."""
        while True:
            try:
                with mapped():
                    return step()
            except Exception as exc:
                if not self.enabled or not is_connection_lost(exc) or self.retries + 1 >= self.policy.attempts:
                    raise
                self.retries += 1
                self.waited_s += wait_for_db(self.engine, self.policy)

    def write_bars(self, writer: Writer, symbol: str, timeframe: str, bars: pd.DataFrame, batch_size: int | None,
                   skip_stored: bool = False) -> int:
        """Write ``bars``; a retry writes only those not committed yet. Returns the rows this job stored."""
        todo = drop_stored(self.engine, symbol, timeframe, bars) if skip_stored else bars
        attempt = 0

        def step() -> int:
            nonlocal attempt
            part = todo if attempt == 0 else drop_stored(self.engine, symbol, timeframe, todo)
            attempt += 1
            return len(todo) - len(part) + writer.write(self.engine, symbol, timeframe, part, batch_size)

        return self.run(step)
