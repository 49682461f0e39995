"""The resilient fixes against the simulator's real fault injection: every job succeeds or fails with a recorded
reason, every request and retry is in the run result, and the bars stored are exactly the simulator's."""

from dataclasses import replace
from datetime import date

import pytest
import requests

from perflab.api.breaker import CLOSED, HALF_OPEN, OPEN, BreakerPolicy, CircuitBreaker, GuardedClient
from perflab.api.client import RetryPolicy
from perflab.api.errors import AuthError
from perflab.measure.results import RequestStats
from perflab.pipeline.fixes import FixSet, client_for
from perflab.pipeline.presets import SYMBOLS_25, get_preset
from perflab.pipeline.scheduler import Workload, run_backfill
from perflab.simulator import SimulatorConfig, start_simulator
from perflab.simulator.faults import BODY_FAULTS, ERROR_FAULTS
from perflab.studies import resilience
from perflab.studies.lab import Lab
from perflab.studies.resilience import audit_bars

DAYS = (date(2024, 3, 4), date(2024, 3, 5))
FAST = dict(latency_s=(2.0, 4.0), time_scale=0.0005)


def guarded(fixes: str, url: str, policy: BreakerPolicy | None = None, **retry) -> GuardedClient:
    client = client_for(FixSet.parse(fixes).settings(), url, retry=RetryPolicy(**retry) if retry else None)
    return GuardedClient(client, CircuitBreaker(policy))


def test_fault_storm_every_job_succeeds_every_retry_counted_bars_exact(clean_db, sim, tmp_path):
    # 50 single-page jobs: enough requests that each 5% fault fires a few times (the draws are seeded)
    preset = replace(get_preset("smoke"), symbols=SYMBOLS_25, timeframes=("1h", "1d"), **FAST)
    lab = Lab(preset, sim.url, tmp_path, clean_db)
    storm = resilience.fault_storm(lab)

    kinds = {k.removesuffix("_rate") for k in resilience.STORM_FAULTS if k.endswith("_rate")}
    assert kinds <= set(ERROR_FAULTS + BODY_FAULTS)  # the storm asks for faults the simulator knows
    assert set(storm.faults) == kinds and all(n > 0 for n in storm.faults.values()), storm.faults
    run = storm.storm
    assert run.success_rate == 1.0, [j.error for j in run.jobs if j.error]
    assert all(j.retries < RetryPolicy().attempts for j in run.jobs)  # bounded, and never more than needed
    m = run.metrics()
    assert run.requests == run.server_stats["requests"]  # every request the server saw is in the run result
    assert run.requests - m["retries"] == len(run.jobs)  # one good page per job; every other request a retry
    assert m["rate_limited"] == storm.faults["burst_429"]
    assert run.params["faults"] == resilience.STORM_FAULTS
    counts = storm.fault_counts()
    assert set(counts.index) == kinds and counts.loc["server_error", "rate asked"] == 0.10
    assert counts["injected"].to_dict() == storm.faults
    assert storm.clean.metrics()["retries"] == 0 and storm.clean.success_rate == 1.0
    assert storm.audit.exact and storm.audit.stored == storm.audit.expected > 0 and storm.audit.duplicates == 0


def test_outage_fault_trips_the_breaker_which_recovers_on_its_own(clean_db):
    w = Workload(("AAPL", "MSFT"), ("1h", "1d"), *DAYS)
    outage = {"outage": {"after_s": 0.0, "duration_s": 0.8}}  # down from the start, back 0.8 s later
    with start_simulator(SimulatorConfig(**FAST, faults=outage)) as s:
        client = guarded("api.backoff,api.breaker", s.url, BreakerPolicy(failure_threshold=2, cooldown_s=0.1),
                         attempts=2, initial_s=0.01, max_s=0.02)
        run = run_backfill(w, client, clean_db, FixSet.parse("api.backoff,api.breaker"))
        stats = s.stats()
    events = client.breaker.events
    states = [e.state for e in events]
    assert OPEN in states and HALF_OPEN in states and states[-1] == CLOSED and "probe answered" in events[-1].reason
    open_windows = [(a.t, b.t) for a, b in zip(events, events[1:], strict=False) if a.state == OPEN]
    assert not any(a < c.start < b for c in client.report.calls for a, b in open_windows)  # no calls while open
    assert run.success_rate == 1.0 and stats["fault_outage"] > 0
    assert run.requests == stats["requests"] and run.requests - run.metrics()["retries"] == len(run.jobs)
    assert audit_bars(clean_db, w, s.config.seed).exact


def test_wrong_key_fails_fast_without_retries_even_under_faults(clean_db):
    storm = {**resilience.STORM_FAULTS, "server_error_rate": 0.5, "burst_429_rate": 0.5, "reset_rate": 0.5}
    with start_simulator(SimulatorConfig(**FAST, faults=storm)) as s:
        client = GuardedClient(client_for(FixSet.parse("api.backoff").settings(), s.url, api_key="wrong-key-789"))
        with pytest.raises(AuthError, match="check POLYGON_API_KEY") as info:
            run_backfill(Workload(("AAPL", "MSFT"), ("1h",), *DAYS), client, clean_db,
                         FixSet.parse(resilience.RESILIENT))
        stats = s.stats()
        spent = RequestStats()  # the same call, its cost counted where the caller can read it after the error
        with pytest.raises(AuthError):
            client.get_aggregates("AAPL", 1, "hour", *DAYS, stats=spent)
    assert stats["requests"] == stats["status_401"] == 1 and not resilience.faults_injected(stats)
    assert spent.requests == 1 and spent.retries == 0 and client.breaker.state == CLOSED
    assert "wrong-key-789" not in str(info.value)


@pytest.mark.parametrize("fixes", ["api.backoff", "api.backoff,api.breaker,api.missing_only"])
def test_a_failed_job_keeps_what_its_fetch_cost(clean_db, fixes):
    w = Workload(("AAPL",), ("1d",), *DAYS)
    with start_simulator(SimulatorConfig(**FAST)) as s:
        requests.post(s.url + "/_faults", json={"server_error_rate": 1}, timeout=5).raise_for_status()
        client = guarded(fixes, s.url, BreakerPolicy(failure_threshold=1, cooldown_s=0.05, max_wait_s=0.3),
                         attempts=3, initial_s=0.01, max_s=0.02)
        run = run_backfill(w, client if "breaker" in fixes else client.client, clean_db, FixSet.parse(fixes))
        stats = s.stats()
    job = run.jobs[0]
    assert job.error and ("ServerError" in job.error or "CircuitOpenError" in job.error)
    assert job.requests == stats["requests"] == stats["fault_server_error"] >= 3
    assert job.retries == job.requests - 1 and len(job.latencies) == job.requests and job.bytes_received > 0
