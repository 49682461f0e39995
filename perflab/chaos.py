"""Experiments that break things on purpose and check what survived: API outages, SIGKILL + resume, bar audits.

Used by ``notebooks/07_resilience.ipynb`` and the resilience tests; everything here drives real
processes (the simulator, a ``perflab backfill`` subprocess, PostgreSQL), nothing is mocked.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from perflab.backfill import Workload
from perflab.db.coverage import day_start
from perflab.simulator import SimulatorProcess, start_simulator
from perflab.simulator.bars import bars_between
from perflab.timeframes import parse_timeframe


@dataclass
class BarAudit:
    """Stored bars against the simulator's own: counts, and every kind of disagreement."""

    expected: int
    stored: int
    missing: int
    extra: int
    mismatched: int
    duplicates: int

    @property
    def exact(self) -> bool:
        return self.expected == self.stored and not (self.missing or self.extra or self.mismatched or self.duplicates)


def audit_bars(engine: Engine, workload: Workload, seed: int = 42) -> BarAudit:
    """Compare ``market_data`` bar for bar (time and OHLCV) with what the simulator serves for ``workload``."""
    expected = stored = missing = extra = mismatched = duplicates = 0
    with engine.connect() as conn:
        for symbol, timeframe in workload.jobs():
            tf = parse_timeframe(timeframe)
            want = bars_between(seed, symbol, tf.multiplier, tf.timespan, workload.start, workload.end)
            rows = conn.execute(sa.text(
                "SELECT (extract(epoch FROM time) * 1000)::bigint, open, high, low, close, volume, vwap, transactions "
                "FROM market_data WHERE symbol = :s AND timeframe = :tf AND time >= :a AND time < :b"),
                {"s": symbol, "tf": timeframe, "a": day_start(workload.start),
                 "b": day_start(workload.end) + pd.Timedelta(days=1)}).all()
            got = pd.DataFrame(rows, columns=["t", "o", "h", "l", "c", "v", "vw", "n"])
            duplicates += int(got["t"].duplicated().sum())
            got = got.drop_duplicates("t").set_index("t")
            ref = pd.DataFrame({f: getattr(want, f) for f in ("t", "o", "h", "l", "c", "v", "vw", "n")}).set_index("t")
            both = ref.index.intersection(got.index)
            expected, stored = expected + len(ref), stored + len(rows)
            missing += len(ref.index.difference(got.index))
            extra += len(got.index.difference(ref.index))
            diff = ~np.isclose(ref.loc[both].to_numpy(float), got.loc[both].to_numpy(float), rtol=1e-9, atol=1e-9)
            mismatched += int(diff.any(axis=1).sum())
    return BarAudit(expected, stored, missing, extra, mismatched, duplicates)


def stored_rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM market_data")).scalar_one()


@dataclass
class KillResult:
    """A ``perflab backfill`` subprocess SIGKILLed ``killed_after_s`` after its first stored row."""

    killed_after_s: float
    finished_before_kill: bool
    rows_at_kill: int
    seconds_to_kill: float


def backfill_command(base_url: str, workload: Workload, fixes: str) -> list[str]:
    return [sys.executable, "-m", "perflab.cli", "backfill", "--base-url", base_url,
            "--symbols", ",".join(workload.symbols), "--timeframes", ",".join(workload.timeframes),
            "--from", workload.start.isoformat(), "--to", workload.end.isoformat(), "--fixes", fixes]


def kill_backfill(base_url: str, workload: Workload, engine: Engine, *, fixes: str = "api.missing_only,db.retry",
                  max_delay_s: float = 1.0, seed: int | None = None, timeout_s: float = 60.0) -> KillResult:
    """Start a backfill in its own process and SIGKILL it a random delay after its first row lands."""
    delay = random.Random(seed).uniform(0.0, max_delay_s)
    started = time.perf_counter()
    before = stored_rows(engine)
    proc = subprocess.Popen(backfill_command(base_url, workload, fixes), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=dict(os.environ))
    try:
        while proc.poll() is None and stored_rows(engine) == before:
            if time.perf_counter() - started > timeout_s:
                break
            time.sleep(0.02)
        time.sleep(delay)
        finished = proc.poll() is not None
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    return KillResult(delay, finished, stored_rows(engine), time.perf_counter() - started)


class SimulatorOutage:
    """Take the simulator process down (connections refused) and bring it back on the same port."""

    def __init__(self, sim: SimulatorProcess):
        self.sim = sim
        self.port = urlsplit(sim.url).port
        self.timeline: list[tuple[float, str]] = []
        self._threads: list[threading.Thread] = []

    def down(self) -> None:
        self.sim.stop()
        self.timeline.append((time.monotonic(), "down"))

    def up(self) -> None:
        fresh = start_simulator(self.sim.config, port=self.port)
        self.sim.process = fresh.process
        self.timeline.append((time.monotonic(), "up"))

    def schedule(self, after_s: float, duration_s: float) -> None:
        """Go down ``after_s`` from now for ``duration_s``, in the background."""
        def run() -> None:
            time.sleep(after_s)
            self.down()
            time.sleep(duration_s)
            self.up()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self._threads.append(thread)

    def join(self) -> None:
        for thread in self._threads:
            thread.join()
