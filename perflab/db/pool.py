"""How many database connections perflab holds: the pools' checked-out count over time, its peak, the server's view.

Every engine made by :func:`perflab.db.engine.get_engine` is watched by :data:`connection_meter`, so the
measurement layer reads one process-wide peak (the plan asks for fewer than 10 active connections) and the
checked-out count over the run (the trace's "DB connections checked out" counter).
"""

from __future__ import annotations

import threading
import time
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


MAX_TIMELINE_POINTS = 10_000
"""A measurement's timeline is compacted when it reaches this many points (see :class:`ConnectionMeter`)."""


def coalesce(points: list[tuple[float, int]], window: float) -> list[tuple[float, int]]:
    """``points`` with each ``window``-second bucket (counted from the first point) cut to its first, highest and
    last points: the start, every bucket's peak and the value each bucket ends on stay exact; dips shorter than a
    bucket disappear."""
    out: list[tuple[float, int]] = []
    start = 0
    while start < len(points):
        bucket = int((points[start][0] - points[0][0]) // window)
        end = start + 1
        while end < len(points) and int((points[end][0] - points[0][0]) // window) == bucket:
            end += 1
        top = max(range(start, end), key=lambda i: points[i][1])
        out += [points[i] for i in sorted({start, top, end - 1})]
        start = end
    return out


class ConnectionMeter:
    """Counts connections checked out of the watched engines' pools (all of them together), their peak and, after
    :meth:`reset`, a timeline of (perf_counter reading, checked-out count) at every change.

    The timeline is bounded: when it reaches :data:`MAX_TIMELINE_POINTS` it is :func:`coalesce`-d into buckets of
    1 ms, then 2 ms, 4 ms, ... until it is at most half that long. The first point, the peak and the final value
    stay exact at any size; only dips shorter than the bucket are lost, and only in runs with that many changes.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current = 0
        self._peak = 0
        self._bound = 0
        self._watched: set[int] = set()
        self._timeline: list[tuple[float, int]] | None = None  # None until the first reset: nothing to measure
        self._window = 0.001

    def watch(self, engine: Engine) -> None:
        """Count this engine's checkouts from now on (idempotent)."""
        with self._lock:
            if id(engine.pool) in self._watched:
                return
            self._watched.add(id(engine.pool))
            self._bound += engine.pool.size() + max(getattr(engine.pool, "_max_overflow", 0), 0)
        event.listen(engine.pool, "checkout", self._checked_out)
        event.listen(engine.pool, "checkin", self._checked_in)
        event.listen(engine.pool, "detach", self._checked_in)  # a detached connection never checks back in

    def _record(self) -> None:
        """Note the count that just changed (under the lock), compacting the timeline when it is full."""
        if self._timeline is None:
            return
        self._timeline.append((time.perf_counter(), self._current))
        if len(self._timeline) >= MAX_TIMELINE_POINTS:
            while len(self._timeline) > MAX_TIMELINE_POINTS // 2:
                self._timeline = coalesce(self._timeline, self._window)
                self._window *= 2

    def _checked_out(self, *_args) -> None:
        with self._lock:
            self._current += 1
            self._peak = max(self._peak, self._current)
            self._record()

    def _checked_in(self, *_args) -> None:
        with self._lock:
            self._current = max(self._current - 1, 0)
            self._record()

    def reset(self) -> None:
        """Start a new measurement: the peak becomes what is checked out right now, and the timeline starts there."""
        with self._lock:
            self._peak = self._current
            self._timeline = []
            self._window = 0.001
            self._record()

    def timeline(self, origin: float) -> list[list[float]]:
        """The checked-out count since the last reset as ``[seconds after origin, count]`` pairs (``origin`` is a
        perf_counter reading, e.g. the run's StageTimer origin); empty before the first reset."""
        with self._lock:
            points = list(self._timeline or [])
        return [[round(t - origin, 6), n] for t, n in points]

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
