"""The resilience experiments of notebook 07, each one call on a :class:`~perflab.studies.lab.Lab`.

``fault_storm`` (a simulator injecting faults), ``kill_and_resume`` (SIGKILL a backfill, run it again),
``breaker_outage`` (the API process down mid-run, a degraded feature read meanwhile) and
``summary`` (the closing table). Every number is measured in the call that returns it.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from perflab.api.breaker import OPEN, BreakerPolicy, CircuitBreaker, CircuitOpenError, GuardedClient, is_outage
from perflab.api.client import PolygonClient, RetryPolicy
from perflab.db.coverage import day_start
from perflab.db.feature_store import read_features, write_features
from perflab.db.migrate import reset_data
from perflab.errors import PerflabError
from perflab.features import compute_features
from perflab.measure.results import RunResult
from perflab.pipeline.fixes import FixSet
from perflab.pipeline.measured import build_client, measured_backfill
from perflab.pipeline.scheduler import Workload
from perflab.simulator import SimulatorProcess, start_simulator
from perflab.simulator.bars import bars_between
from perflab.studies.lab import Lab
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


def backfill_command(base_url: str, workload: Workload, fixes: str, extra: Sequence[str] = ()) -> list[str]:
    """``perflab backfill`` of ``workload`` against ``base_url`` as a command line (``extra``: more options)."""
    return [sys.executable, "-m", "perflab.cli", "backfill", "--base-url", base_url,
            "--symbols", ",".join(workload.symbols), "--timeframes", ",".join(workload.timeframes),
            "--from", workload.start.isoformat(), "--to", workload.end.isoformat(), "--fixes", fixes, *extra]


def kill_backfill(base_url: str, workload: Workload, engine: Engine, *, fixes: str = "api.missing_only,db.retry",
                  max_delay_s: float = 1.0, seed: int | None = None, timeout_s: float = 60.0,
                  extra: Sequence[str] = ()) -> KillResult:
    """Start a backfill in its own process and SIGKILL it a random delay after its first row lands (``extra``:
    more ``perflab backfill`` options, e.g. ``--cluster local``)."""
    delay = random.Random(seed).uniform(0.0, max_delay_s)
    started = time.perf_counter()
    before = stored_rows(engine)
    proc = subprocess.Popen(backfill_command(base_url, workload, fixes, extra), stdout=subprocess.DEVNULL,
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


class StaleDataWarning(UserWarning):
    """Features came from the store because the API is unavailable."""


def staleness_message(hours: float) -> str:
    """The warning text, e.g. ``data is 6.0 hours stale``."""
    return f"data is {hours:.1f} hours stale"


@dataclass
class FeatureRead:
    """Features and where they came from: ``live`` (just fetched) or ``cache`` (stored, with its age)."""

    features: pd.DataFrame
    source: str
    stale_hours: float = 0.0
    warning: str | None = None
    reason: str | None = None


class FeatureService:
    """Feature reads that degrade to the stored features while the API circuit is open."""

    def __init__(self, client: PolygonClient, engine: Engine, breaker: CircuitBreaker | None = None,
                 impl: str = "loop", now: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.client = client
        self.engine = engine
        self.breaker = breaker or CircuitBreaker()
        self.impl = impl
        self._now = now

    def read(self, symbol: str, timeframe: str, start: date, end: date) -> FeatureRead:
        """Live features for [start, end]; the stored ones with a staleness warning if the API is unavailable."""
        tf = parse_timeframe(timeframe)
        try:
            fetched = self.breaker.call(self.client.get_aggregates, symbol, tf.multiplier, tf.timespan, start, end)
        except CircuitOpenError as exc:
            return self.cached(symbol, timeframe, start, end, reason=str(exc))
        except PerflabError as exc:
            if not is_outage(exc):
                raise
            return self.cached(symbol, timeframe, start, end, reason=f"{type(exc).__name__}: {exc}")
        if fetched.bars.empty:
            return FeatureRead(fetched.bars, "live")
        features = compute_features(fetched.bars, self.impl)
        write_features(self.engine, symbol, tf.name, features)
        return FeatureRead(features, "live")

    def cached(self, symbol: str, timeframe: str, start: date, end: date, reason: str | None = None) -> FeatureRead:
        """The stored features of [start, end] with their age; raises if nothing is stored."""
        stored = read_features(self.engine, symbol, timeframe)
        stored = stored[(stored["time"] >= day_start(start)) & (stored["time"] < day_start(end) + pd.Timedelta(days=1))]
        if stored.empty:
            raise PerflabError(f"the API is unavailable ({reason}) and no features are stored for {symbol} "
                               f"{timeframe} {start}..{end}: run a backfill once the API is back")
        age = self._now() - pd.Timestamp(stored["computed_at"].max()).to_pydatetime()
        hours = max(0.0, age.total_seconds() / 3600)
        message = f"{symbol} {timeframe}: API unavailable, serving stored features: {staleness_message(hours)}"
        warnings.warn(message, StaleDataWarning, stacklevel=2)
        return FeatureRead(stored.reset_index(drop=True), "cache", hours, message, reason)


STORM_FAULTS = {"server_error_rate": 0.10, "reset_rate": 0.05, "burst_429_rate": 0.05, "slow_body_rate": 0.05,
                "slow_body_s": 0.2, "malformed_rate": 0.05, "null_results_rate": 0.05, "duplicate_rate": 0.05}
# db.copy: resilience, not write speed, is on trial here
RESILIENT = "api.backoff,api.breaker,api.missing_only,db.retry,db.copy"


def faults_injected(stats: dict) -> dict[str, int]:
    """The simulator's ``fault_*`` counters (what it injected), by kind."""
    return {k.removeprefix("fault_"): int(v) for k, v in stats.items() if k.startswith("fault_") and v}


@dataclass
class StormResult:
    """The same backfill on a clean simulator and on one injecting ``faults``."""

    clean: RunResult
    storm: RunResult
    faults: dict[str, int]
    audit: BarAudit

    @property
    def time_lost_s(self) -> float:
        return self.storm.wall_seconds - self.clean.wall_seconds

    def fault_counts(self) -> pd.DataFrame:
        """Per fault kind: the rate asked for and how many requests the simulator actually hit (zeros included)."""
        asked = {k.removesuffix("_rate"): v for k, v in self.storm.params.get("faults", {}).items()
                 if k.endswith("_rate")}
        kinds = list(asked) + [k for k in self.faults if k not in asked]
        return pd.DataFrame({"rate asked": [asked.get(k, 0.0) for k in kinds],
                             "injected": [self.faults.get(k, 0) for k in kinds]}, index=pd.Index(kinds, name="fault"))

    def table(self) -> pd.DataFrame:
        rows = {}
        for name, r in (("clean", self.clean), ("storm", self.storm)):
            m = r.metrics()
            rows[name] = {"jobs": m["jobs"], "success rate": m["success_rate"], "requests": m["requests"],
                          "retries": m["retries"], "429s": m["rate_limited"], "wall s": m["wall_seconds"]}
        return pd.DataFrame(rows).T


def fault_storm(lab: Lab, faults: dict | None = None, fixes: str = RESILIENT) -> StormResult:
    """Backfill with ``fixes`` on a clean simulator, then on one injecting ``faults`` (seeded)."""
    faults = STORM_FAULTS if faults is None else faults
    clean = lab.backfill(fixes, "clean", progress=False)
    with start_simulator(lab.preset.simulator_config(faults=faults)) as sim:
        storm = lab.backfill(fixes, "fault storm", progress=False, base_url=sim.url)
    storm.params["faults"] = faults
    return StormResult(clean, storm, faults_injected(storm.server_stats), audit_bars(lab.engine, lab.workload))


@dataclass
class KillResumeResult:
    """A backfill SIGKILLed mid-run, then resumed: what was stored at the kill and after, and what it cost."""

    kill: KillResult
    at_kill: BarAudit
    resumed: RunResult
    audit: BarAudit

    def table(self) -> pd.DataFrame:
        return pd.DataFrame({
            "after SIGKILL": {"bars expected": self.at_kill.expected, "bars stored": self.at_kill.stored,
                              "missing": self.at_kill.missing, "duplicates": self.at_kill.duplicates,
                              "requests": None},
            "after resume": {"bars expected": self.audit.expected, "bars stored": self.audit.stored,
                             "missing": self.audit.missing, "duplicates": self.audit.duplicates,
                             "requests": self.resumed.requests},
        }).T


def kill_and_resume(lab: Lab, max_delay_s: float = 0.5, seed: int | None = None) -> KillResumeResult:
    """SIGKILL a ``perflab backfill`` process at a random point, resume with ``api.missing_only``, audit."""
    reset_data(lab.engine)
    kill = kill_backfill(lab.base_url, lab.workload, lab.engine, max_delay_s=max_delay_s, seed=seed)
    at_kill = audit_bars(lab.engine, lab.workload)
    resumed = lab.backfill("api.missing_only,db.retry", label="resume", fresh=False, progress=False)
    return KillResumeResult(kill, at_kill, resumed, audit_bars(lab.engine, lab.workload))


@dataclass
class OutageResult:
    """A backfill through an API outage with the breaker on, and a feature read made during the outage."""

    run: RunResult
    guard: GuardedClient
    outage: list[tuple[float, str]]
    degraded: FeatureRead | None
    audit: BarAudit

    def window(self) -> tuple[float, float]:
        """The outage as seconds on the breaker's clock."""
        origin = self.guard.breaker.origin
        down = next(t for t, what in self.outage if what == "down")
        up = next(t for t, what in self.outage if what == "up")
        return down - origin, up - origin


def breaker_outage(lab: Lab, after_s: float = 0.3, duration_s: float = 1.5,
                   policy: BreakerPolicy | None = None) -> OutageResult:
    """Take the API down ``after_s`` into a breaker-guarded backfill for ``duration_s``; read features meanwhile."""
    policy = policy or BreakerPolicy(failure_threshold=2, cooldown_s=0.25)
    reset_data(lab.engine)
    with start_simulator(lab.preset.simulator_config()) as sim:
        fixes = FixSet.parse("api.backoff,api.breaker,db.retry")
        guard = build_client(fixes, sim.url, rate_limit_per_s=lab.preset.rate_limit_per_s,
                             retry=RetryPolicy(attempts=2, initial_s=0.02), breaker=policy)
        service = FeatureService(guard.client, lab.engine, guard.breaker)
        outage = SimulatorOutage(sim)
        symbol, timeframe = lab.workload.jobs()[0]
        reads: list[FeatureRead] = []

        def read_while_down() -> None:
            while guard.breaker.state != OPEN and not any(what == "up" for _, what in outage.timeline):
                time.sleep(0.01)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", StaleDataWarning)
                try:
                    reads.append(service.read(symbol, timeframe, lab.workload.start, lab.workload.end))
                except PerflabError:  # nothing stored yet for that job: no read to show
                    return

        outage.schedule(after_s, duration_s)
        reader = threading.Thread(target=read_while_down, daemon=True)
        reader.start()
        try:
            run = measured_backfill(lab.workload, fixes, lab.engine, preset=lab.preset, client=guard, label="outage")
        finally:
            outage.join()
            reader.join(5)
            guard.close()
    return OutageResult(run, guard, outage.timeline, reads[0] if reads else None, audit_bars(lab.engine, lab.workload))


def summary(storm: StormResult, kill: KillResumeResult, outage: OutageResult) -> pd.DataFrame:
    """The closing table: faults injected, jobs succeeded, bars expected vs stored, duplicates, time lost."""
    def row(faults: str, run: RunResult, audit: BarAudit, lost: float) -> dict:
        ok = sum(j.ok for j in run.jobs)
        return {"faults injected": faults, "jobs succeeded": f"{ok}/{len(run.jobs)}",
                "retries": run.metrics()["retries"], "bars expected": audit.expected, "bars stored": audit.stored,
                "duplicates": audit.duplicates, "time lost to recovery s": lost}

    storm_faults = ", ".join(f"{k} {v}" for k, v in storm.faults.items()) or "none reported by the simulator"
    return pd.DataFrame({
        "fault storm": row(storm_faults, storm.storm, storm.audit, storm.time_lost_s),
        "SIGKILL + resume": row(f"SIGKILL after {kill.kill.rows_at_kill} rows", kill.resumed, kill.audit,
                                kill.resumed.wall_seconds),
        "API outage + breaker": row(f"API down {outage.window()[1] - outage.window()[0]:.1f}s", outage.run,
                                    outage.audit, outage.guard.report.lost_s),
    }).T
