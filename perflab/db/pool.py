"""How many database connections perflab holds: the pools' checked-out high-water mark and the server's view.

Every engine made by :func:`perflab.db.engine.get_engine` is watched by :data:`connection_meter`, so the
measurement layer reads one process-wide peak (the plan asks for fewer than 10 active connections).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine


@dataclass(frozen=True)
class ConnectionSnapshot:
    """Connections checked out of perflab's pools now, the peak since the last reset, and the pool bound."""

    current: int
    peak: int
    bound: int


class ConnectionMeter:
    """Counts connections checked out of the watched engines' pools (all of them together) and their peak."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current = 0
        self._peak = 0
        self._bound = 0
        self._watched: set[int] = set()

    def watch(self, engine: Engine) -> None:
        """Count this engine's checkouts from now on (idempotent)."""
        with self._lock:
            if id(engine.pool) in self._watched:
                return
            self._watched.add(id(engine.pool))
            self._bound += engine.pool.size() + max(getattr(engine.pool, "_max_overflow", 0), 0)
        event.listen(engine.pool, "checkout", self._checked_out)
        event.listen(engine.pool, "checkin", self._checked_in)

    def _checked_out(self, *_args) -> None:
        with self._lock:
            self._current += 1
            self._peak = max(self._peak, self._current)

    def _checked_in(self, *_args) -> None:
        with self._lock:
            self._current = max(self._current - 1, 0)

    def reset(self) -> None:
        """Start a new measurement: the peak becomes what is checked out right now."""
        with self._lock:
            self._peak = self._current

    @property
    def peak(self) -> int:
        return self._peak

    def snapshot(self) -> ConnectionSnapshot:
        with self._lock:
            return ConnectionSnapshot(self._current, self._peak, self._bound)


connection_meter = ConnectionMeter()


def server_connections(engine: Engine) -> int:
    """Client connections the server sees on this engine's database right now (pg_stat_activity), incl. this one."""
    with engine.connect() as conn:
        return int(conn.execute(sa.text(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND backend_type = 'client backend'")).scalar())
