"""The circuit breaker: state machine on a fake clock, then a real simulator outage (process down and back)."""

import threading
import time
import warnings
from datetime import date

import pytest

from perflab.api import errors
from perflab.api.breaker import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    BreakerPolicy,
    CircuitBreaker,
    CircuitOpenError,
    GuardedClient,
)
from perflab.api.client import FetchResult, PolygonClient, RetryPolicy, empty_bars
from perflab.measure.results import RequestStats
from perflab.simulator import SimulatorConfig, start_simulator
from perflab.studies.resilience import FeatureService, SimulatorOutage, StaleDataWarning


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def boom():
    raise errors.ServerError("503 from the API")


class SkipClock:
    """Real time plus the seconds a fake sleep skipped: cool-downs pass at once, and a sleep that is not the
    injected one still ends (slowly) instead of hanging on a frozen clock."""

    def __init__(self):
        self.origin, self.skipped, self.slept = time.monotonic(), 0.0, []

    def __call__(self):
        return 100.0 + self.skipped + time.monotonic() - self.origin

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.skipped += seconds


class DownSource:
    """An aggregates source whose API is down for its first ``down`` calls; each call costs one request."""

    base_url = "http://api.invalid"

    def __init__(self, down):
        self.down, self.calls = down, 0

    def get_aggregates(self, ticker, multiplier, timespan, start, end, *, limit=5000, adjusted=True, sort="asc",
                       stats=None):
        self.calls += 1
        stats.requests += 1
        if self.calls <= self.down:
            raise errors.ServerError("503 from the API")
        return FetchResult(empty_bars(), stats)

    def close(self):
        pass


def guarded_on(clock, source, **policy):
    return GuardedClient(source, CircuitBreaker(BreakerPolicy(**policy), clock=clock), sleep=clock.sleep)


def test_opens_after_threshold_then_probes_once_and_closes():
    clock = Clock()
    b = CircuitBreaker(BreakerPolicy(failure_threshold=3, cooldown_s=10), clock=clock)
    for _ in range(2):
        with pytest.raises(errors.ServerError):
            b.call(boom)
    assert b.state == CLOSED
    with pytest.raises(errors.ServerError):
        b.call(boom)
    assert b.state == OPEN
    with pytest.raises(CircuitOpenError, match="retry in 10.0s"):
        b.call(lambda: "never called")
    clock.t += 10
    assert b.allow() and b.state == HALF_OPEN
    assert not b.allow(), "only one probe while half-open"
    b.record_failure("still down")
    assert b.state == OPEN and b.retry_in() == pytest.approx(10)
    clock.t += 10
    assert b.call(lambda: "ok") == "ok" and b.state == CLOSED
    assert [e.state for e in b.events] == [CLOSED, OPEN, HALF_OPEN, OPEN, HALF_OPEN, CLOSED]


def test_refusals_are_not_outages():
    b = CircuitBreaker(BreakerPolicy(failure_threshold=1))
    for exc in (errors.AuthError("401"), errors.NotFoundError("404"), errors.RateLimitError("429")):
        with pytest.raises(type(exc)):
            b.call(lambda e=exc: (_ for _ in ()).throw(e))
    assert b.state == CLOSED


def test_a_guarded_call_waits_each_cool_down_on_its_sleep_and_counts_every_try_into_the_callers_stats():
    clock, source = SkipClock(), DownSource(down=3)
    guarded = guarded_on(clock, source, failure_threshold=2, cooldown_s=5.0, max_wait_s=60.0)
    spent = RequestStats(requests=1)  # what the job cost before
    result = guarded.get_aggregates("AAPL", 1, "day", "2024-03-04", "2024-03-04", stats=spent)
    assert result.stats is spent and source.calls == 4 and spent.requests == 5 and spent.retries == 3
    assert [s for s in clock.slept if s] == pytest.approx([5.0, 5.0], abs=0.05)  # no call while the circuit is open
    assert [c.outcome for c in guarded.report.calls] == ["failure"] * 3 + ["success"]
    assert guarded.breaker.state == CLOSED and guarded.breaker.outage_since() is None


def test_a_guarded_call_gives_up_max_wait_after_the_outage_began_and_the_next_one_at_once():
    clock, source = SkipClock(), DownSource(down=10**9)
    guarded = guarded_on(clock, source, failure_threshold=2, cooldown_s=5.0, max_wait_s=12.0)
    began, spent = clock(), RequestStats()
    with pytest.raises(CircuitOpenError, match="stayed down for more than 12s"):
        guarded.get_aggregates("AAPL", 1, "day", "2024-03-04", "2024-03-04", stats=spent)
    assert source.calls == spent.requests == 4 and spent.retries == 3  # at 0, 0, 5 and 10 s: the next would be at 15
    assert 10.0 <= clock() - began <= 12.0 and guarded.report.calls[-1].outcome == "gave_up"
    later = RequestStats()
    with pytest.raises(CircuitOpenError, match="stayed down"):
        guarded.get_aggregates("MSFT", 1, "day", "2024-03-04", "2024-03-04", stats=later)
    assert source.calls == 4 and later.requests == 0  # the same outage: no wait, no call


def test_a_job_rides_through_an_api_outage_and_reads_degrade_to_the_store(clean_db):
    with start_simulator(SimulatorConfig(time_scale=0.0005)) as sim:
        day = date(2024, 3, 4)
        guarded = GuardedClient(PolygonClient(sim.url, retry=RetryPolicy(attempts=2, initial_s=0.01)),
                                CircuitBreaker(BreakerPolicy(failure_threshold=2, cooldown_s=0.3)))
        service = FeatureService(PolygonClient(sim.url), clean_db, guarded.breaker)
        live = service.read("AAPL", "1h", day, day)
        assert live.source == "live" and len(live.features)

        outage = SimulatorOutage(sim)
        outage.down()
        threading.Timer(1.2, outage.up).start()
        started = time.monotonic()
        result = guarded.get_aggregates("AAPL", 1, "hour", day, day)
        assert len(result.bars) == len(live.features)
        assert time.monotonic() - started >= 1.0
        states = [e.state for e in guarded.breaker.events]
        assert states[:3] == [CLOSED, OPEN, HALF_OPEN] and states[-1] == CLOSED
        assert guarded.report.failed_calls >= 2 and guarded.report.lost_s >= 1.0
        assert result.stats.retries >= guarded.report.failed_calls

        outage.down()
        guarded.breaker.record_failure("down again")
        guarded.breaker.record_failure("down again")
        assert guarded.breaker.state == OPEN
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cached = service.read("AAPL", "1h", day, day)
        assert cached.source == "cache" and len(cached.features) == len(live.features)
        assert "hours stale" in cached.warning and any(w.category is StaleDataWarning for w in caught)
        outage.up()


def test_staleness_is_reported_in_hours(clean_db, sim):
    day = date(2024, 3, 4)
    service = FeatureService(PolygonClient(sim.url), clean_db)
    service.read("MSFT", "1d", day, day)
    with clean_db.begin() as conn:
        conn.exec_driver_sql("UPDATE quant_features SET computed_at = now() - interval '6 hours'")
    with pytest.warns(StaleDataWarning, match="data is 6.0 hours stale"):
        read = service.cached("MSFT", "1d", day, day)
    assert read.stale_hours == pytest.approx(6.0, abs=0.01)
    with pytest.raises(errors.PerflabError, match="no features are stored"):
        service.cached("KO", "1d", day, day)


def test_an_api_that_never_answers_is_waited_out_once_per_outage_not_once_per_job():
    """A refused connection with api.breaker: every job gives up max_wait_s after the outage began."""
    policy = BreakerPolicy(failure_threshold=2, cooldown_s=0.05, max_wait_s=0.6)
    guarded = GuardedClient(PolygonClient("http://127.0.0.1:1"), CircuitBreaker(policy))
    day = date(2024, 3, 4)
    started = time.monotonic()
    for symbol in ("AAPL", "MSFT", "NVDA", "TSLA", "AMZN"):
        with pytest.raises((CircuitOpenError, errors.ConnectionError), match="connection refused|stayed down"):
            guarded.get_aggregates(symbol, 1, "day", day, day)
    elapsed = time.monotonic() - started
    assert elapsed < 2 * policy.max_wait_s, f"five jobs waited {elapsed:.1f}s: the outage was waited out per job"
    assert guarded.breaker.outage_since() is not None
