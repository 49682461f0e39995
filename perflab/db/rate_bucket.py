"""One rate limit for many processes: a token bucket kept in a PostgreSQL row, the pacer of every worker of a cluster.

Dask caps how many tasks run at once, not how many requests a second they send; an API key's limit is per second
for all of them together. :class:`SharedPacer` has the interface of the client's
:class:`~perflab.api.ratelimit.AdaptivePacer` (``acquire``, ``on_success``, ``on_rate_limited``), so the
transport uses it unchanged, but its bucket is one row of ``rate_buckets`` (migration 005): a token is one
``UPDATE ... RETURNING`` that refills by the database's clock, takes the token (the balance may go negative: tokens
reserved ahead) and returns how long the taker sleeps, atomically under the row's lock. A 429 cuts the shared rate
and holds every worker for its Retry-After; each token taken recovers the rate a step toward the ceiling (so a
success needs no second round trip).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from sqlalchemy.engine import Engine

_ENSURE = """
INSERT INTO rate_buckets (name, ceiling, rate, burst, tokens) VALUES (%(name)s, %(ceiling)s, %(ceiling)s, %(burst)s,
    %(burst)s)
ON CONFLICT (name) DO UPDATE SET ceiling = excluded.ceiling, burst = excluded.burst,
    rate = least(rate_buckets.rate, excluded.ceiling)
"""
_REFILLED = ("least(burst, tokens + rate * greatest(0, extract(epoch FROM clock_timestamp() - updated_at)::float8))")
_TAKE = f"""
UPDATE rate_buckets SET tokens = {_REFILLED} - 1, rate = least(ceiling, rate + %(recover)s * ceiling),
    updated_at = clock_timestamp()
WHERE name = %(name)s
RETURNING greatest(0, -tokens / rate)
"""
_CUT = f"""
UPDATE rate_buckets SET tokens = least({_REFILLED}, 0) - %(hold)s * greatest(%(min_rate)s, rate * %(decrease)s),
    rate = greatest(%(min_rate)s, rate * %(decrease)s), updated_at = clock_timestamp()
WHERE name = %(name)s
RETURNING rate
"""


class SharedPacer:
    """Pacing toward ``headroom`` x ``rate_per_s`` for every process using the bucket ``name`` in ``engine``'s database.

    Thread-safe (one connection per pacer, used under a lock). ``take_seconds`` adds up the time the token round
    trips took, so their cost can be stated (``take_seconds / takes``).
    """

    def __init__(self, engine: Engine, name: str, rate_per_s: float, *, headroom: float = 0.95, burst: float = 1.0,
                 decrease: float = 0.7, recover: float = 0.02, min_rate: float = 0.05,
                 sleep: Callable[[float], None] = time.sleep):
        if rate_per_s <= 0 or burst < 1:
            raise ValueError(f"a shared bucket needs rate > 0 and burst >= 1, got rate={rate_per_s}, burst={burst}")
        self.name, self.ceiling = name, rate_per_s * headroom
        self.decrease, self.recover, self.min_rate = decrease, recover, min_rate
        self._sleep = sleep
        self._lock = threading.Lock()
        self._conn = engine.raw_connection()
        self._conn.detach()  # its own connection: autocommit and synchronous_commit=off must never reach the pool
        self._conn.rollback()  # the pool's ping may have opened a transaction; autocommit needs none open
        self._conn.dbapi_connection.autocommit = True
        self._execute("SET synchronous_commit = off")  # a token's commit waits for no disk: ~0.1 ms instead of ~2.5
        self._execute(_ENSURE, ceiling=self.ceiling, burst=float(burst))
        self.waited_s = 0.0
        self.cuts = 0
        self.takes = 0
        self.take_seconds = 0.0
        self._rate: float | None = self.ceiling

    def __repr__(self) -> str:
        return f"SharedPacer(name={self.name!r}, ceiling={self.ceiling:g}/s)"

    @property
    def rate(self) -> float | None:
        """The shared rate as of this process's last cut (the row holds the current one)."""
        return self._rate

    def _execute(self, sql: str, **params) -> float | None:
        with self._lock:
            cursor = self._conn.cursor()
            try:
                cursor.execute(sql, {"name": self.name, **params} if "%(" in sql else None)
                row = cursor.fetchone() if cursor.description else None
            finally:
                cursor.close()
        return None if row is None else float(row[0])

    def acquire(self) -> float:
        """Take a token from the shared bucket (one round trip) and sleep until it is due; returns the seconds
        waited."""
        started = time.perf_counter()
        wait = self._execute(_TAKE, recover=self.recover)
        if wait is None:  # the row was deleted meanwhile: start it again
            self._execute(_ENSURE, ceiling=self.ceiling, burst=1.0)
            wait = self._execute(_TAKE, recover=self.recover) or 0.0
        self.takes += 1
        self.take_seconds += time.perf_counter() - started
        if wait > 0:
            self._sleep(wait)
            self.waited_s += wait
        return wait

    def on_success(self) -> None:
        """Nothing to do: taking a token already recovered the rate a step."""

    def on_rate_limited(self, retry_after: float | None) -> None:
        """A 429 came back: cut the shared rate and hold every worker for Retry-After seconds."""
        self.cuts += 1
        self._rate = self._execute(_CUT, hold=float(retry_after or 0.0), min_rate=self.min_rate,
                                   decrease=self.decrease)

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def drop_bucket(engine: Engine, name: str) -> None:
    """Forget the bucket ``name`` (its rate and balance)."""
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM rate_buckets WHERE name = %(name)s", {"name": name})
