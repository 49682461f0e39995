"""Riding through a lost database connection (the ``db.retry`` fix): wait for the server, then redo the step.

Every write already retries its batch whole for about 7 s while the failure is transient (the writers'
:class:`~perflab.db.transactions.BatchRetry`, on with this fix off too). ``db.retry`` adds what that cannot
do: a job step that still dies with the connection (an outage longer than that, a lost connection during a
read-back or a coverage step) waits for the database to answer again, up to a minute, and runs again;
bars are re-written minus those already committed, so the outage costs retries, not rows, whichever
writer is in use. Both the wait and the re-run are :class:`~perflab.retry.RetryPolicy` objects
(:meth:`DbRetryPolicy.outage_wait`, :meth:`DbRetryPolicy.step_rerun`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from tenacity import wait_fixed, wait_none

from perflab.db.coverage import drop_stored
from perflab.db.errors import is_connection_lost, mapped
from perflab.db.writers import Writer
from perflab.errors import DatabaseUnavailableError
from perflab.retry import RetryCallState, RetryPolicy, run_with

T = TypeVar("T")


@dataclass(frozen=True)
class DbRetryPolicy:
    """How long to wait for the database to answer again, and how often: a job's steps share ``attempts - 1``
    re-runs in all."""

    attempts: int = 5
    wait_for_db_s: float = 60.0
    poll_s: float = 0.2

    def outage_wait(self) -> RetryPolicy:
        """Polling a lost server: a try every ``poll_s`` while the connection is lost, bounded by
        ``wait_for_db_s`` in all (time, not a count of tries, is what the wait is bounded by)."""
        return RetryPolicy(retry_on=is_connection_lost, attempts=sys.maxsize, max_delay_s=self.wait_for_db_s,
                           wait=wait_fixed(self.poll_s))

    def step_rerun(self, retries_so_far: int) -> RetryPolicy:
        """A step run again after a lost connection, at once (the wait for the database happens before each
        re-run): ``attempts`` runs per job in all, so a job that already retried has fewer left."""
        return RetryPolicy(retry_on=is_connection_lost, attempts=self.attempts - retries_so_far, wait=wait_none())


def wait_for_db(engine: Engine, policy: DbRetryPolicy) -> float:
    """Block until ``SELECT 1`` succeeds; return the seconds waited, or raise after ``wait_for_db_s``."""
    started = time.perf_counter()
    engine.dispose()

    def select_1() -> None:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    try:
        policy.outage_wait().run(select_1)
    except sa.exc.DBAPIError:
        raise DatabaseUnavailableError(
            f"the database did not come back within {policy.wait_for_db_s:.0f}s: check that it is running, "
            "then run again with api.missing_only") from None
    return time.perf_counter() - started


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

        def once() -> T:
            with mapped():
                return step()

        return run_with(self.policy.step_rerun(self.retries) if self.enabled else None, once, self._wait_for_db)

    def _wait_for_db(self, _state: RetryCallState) -> None:
        """Before a re-run: count it, and wait for the database to answer (raising if it does not come back)."""
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
