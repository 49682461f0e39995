"""The resilience experiments of notebook 07, each one call on a :class:`~perflab.lab.Lab`.

``fault_storm`` (a simulator injecting faults), ``kill_and_resume`` (SIGKILL a backfill, run it again),
``breaker_outage`` (the API process down mid-run, a degraded feature read meanwhile) and
``summary`` (the closing table). Every number is measured in the call that returns it.
"""

from __future__ import annotations

import threading
import time
import warnings
from dataclasses import dataclass

import pandas as pd

from perflab.api.breaker import OPEN, BreakerPolicy, CircuitBreaker, GuardedClient
from perflab.api.client import RetryPolicy, client_for
from perflab.backfill import run_backfill
from perflab.chaos import BarAudit, KillResult, SimulatorOutage, audit_bars, kill_backfill
from perflab.db.migrate import reset_data
from perflab.degrade import FeatureRead, FeatureService, StaleDataWarning
from perflab.errors import PerflabError
from perflab.fixes import FixSet
from perflab.lab import Lab
from perflab.measure.results import RunResult
from perflab.simulator import SimulatorConfig, start_simulator

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
    with start_simulator(SimulatorConfig.for_preset(lab.preset, faults=faults)) as sim:
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
    with start_simulator(SimulatorConfig.for_preset(lab.preset)) as sim:
        fixes = FixSet.parse("api.backoff,api.breaker,db.retry")
        client = client_for(fixes.settings(), sim.url, rate_limit_per_s=lab.preset.rate_limit_per_s,
                            retry=RetryPolicy(attempts=2, initial_s=0.02))
        guard = GuardedClient(client, CircuitBreaker(policy))
        service = FeatureService(client, lab.engine, guard.breaker)
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
            run = run_backfill(lab.workload, guard, lab.engine, fixes, label="outage",
                               params={"preset": lab.preset.name}, time_scale=lab.preset.time_scale)
        finally:
            outage.join()
            reader.join(5)
            client.close()
    run.params["breaker"] = guard.report.to_dict()
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
