"""Background sampling of CPU, memory and database connections while a run executes.

A daemon thread wakes every ``interval_s`` (default 0.5 s, cheap next to any stage) and records
system CPU %, the RSS of this process and its children, and the open/active connections to the
run's database (from ``pg_stat_activity``, over a connection of its own that it does not count).
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import psutil
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

_CONNECTIONS_SQL = sa.text(
    "SELECT count(*), count(*) FILTER (WHERE state = 'active') FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid()")


@dataclass
class ResourceSummary:
    """What the sampler saw over a run."""

    samples: int = 0
    cpu_avg_pct: float = 0.0
    cpu_peak_pct: float = 0.0
    rss_peak_mb: float = 0.0
    db_connections_peak: int = 0
    db_active_peak: int = 0
    interval_s: float = 0.5
    cpu_seconds: float = 0.0  # CPU time the sampler thread itself used: its direct cost
    timeline: list[tuple[float, float, float, int]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def tree_rss(proc: psutil.Process) -> int:
    """Resident bytes of a process and all its children (worker pools included)."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


@lru_cache(maxsize=4)
def _probe_engine(url: sa.engine.URL) -> Engine:
    """One unpooled engine per database for the sampler, made once per process (not once per run)."""
    return sa.create_engine(url, poolclass=NullPool)


class ResourceSampler:
    """Samples resources in a background thread between ``start()`` and ``stop()`` (or as a context manager).

    ``summary`` holds the result; with ``enabled=False`` it starts no thread and records nothing.
    """

    def __init__(self, engine: Engine | None = None, interval_s: float = 0.5, enabled: bool = True):
        self.enabled = enabled
        self.interval_s = interval_s
        self._engine = engine
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc = psutil.Process()
        self._cpu: list[float] = []
        self.summary = ResourceSummary(interval_s=interval_s)

    def _db_probe(self):
        if self._engine is None:
            return None
        try:
            return _probe_engine(self._engine.url).connect()
        except sa.exc.SQLAlchemyError:
            return None

    def _sample(self, conn, origin: float) -> None:
        cpu = psutil.cpu_percent(None)
        rss = tree_rss(self._proc)
        total = active = 0
        if conn is not None:
            try:
                total, active = conn.execute(_CONNECTIONS_SQL).one()
                conn.rollback()
            except sa.exc.SQLAlchemyError:
                pass
        s = self.summary
        self._cpu.append(cpu)
        s.samples += 1
        s.cpu_peak_pct = max(s.cpu_peak_pct, cpu)
        s.rss_peak_mb = max(s.rss_peak_mb, rss / 2**20)
        s.db_connections_peak = max(s.db_connections_peak, int(total))
        s.db_active_peak = max(s.db_active_peak, int(active))
        s.timeline.append((round(time.perf_counter() - origin, 3), cpu, round(rss / 2**20, 1), int(total)))

    def _loop(self) -> None:
        started = time.thread_time()
        conn = self._db_probe()
        origin = time.perf_counter()
        psutil.cpu_percent(None)
        try:
            while not self._stop.wait(self.interval_s):
                self._sample(conn, origin)
            self._sample(conn, origin)
        finally:
            if conn is not None:
                conn.close()
            self.summary.cpu_seconds = time.thread_time() - started

    def start(self) -> ResourceSampler:
        if self.enabled:
            self._thread = threading.Thread(target=self._loop, name="perflab-sampler", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._cpu:
            self.summary.cpu_avg_pct = sum(self._cpu) / len(self._cpu)

    def __enter__(self) -> ResourceSampler:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
