"""A circuit breaker in front of the Polygon client: stop hammering an API that is down, probe, resume alone.

    closed ──(N consecutive outage failures)──> open ──(cool-down elapsed)──> half_open
      ^                                          ^                              │
      └──────────────(probe answered)────────────┼──────(probe failed)──────────┘

Only outage-like errors count (5xx, timeouts, resets, malformed bodies): a 4xx or a 429 means the API
is up and answering. :class:`GuardedClient` makes a job wait out an open circuit instead of failing,
so a backfill rides through an outage and finishes on its own. The wait is bounded per outage, not per
job: ``max_wait_s`` after the first failure of an outage every waiting job gives up together, so an API
that never answers (a wrong base URL, a refused connection) ends the run in ``max_wait_s``, not in one
``max_wait_s`` per job.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from perflab.api import errors
from perflab.api.client import ClientStats, FetchResult, PolygonClient

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
OUTAGE_ERRORS = (errors.ServerError, errors.TimeoutError, errors.ConnectionError, errors.MalformedResponseError)


class CircuitOpenError(errors.PolygonError):
    """The API failed repeatedly and did not recover within the wait allowed: check its status, run again."""


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` says the API is down (as opposed to answering with a refusal)."""
    return isinstance(exc, OUTAGE_ERRORS)


@dataclass(frozen=True)
class BreakerPolicy:
    """When to open (consecutive failures), how long to stay open, and how long an outage may be waited out."""

    failure_threshold: int = 3
    cooldown_s: float = 1.0
    max_wait_s: float = 120.0
    poll_s: float = 0.02


@dataclass(frozen=True)
class BreakerEvent:
    """One state change, ``t`` seconds after the breaker was created."""

    t: float
    state: str
    reason: str


@dataclass(frozen=True)
class CallOutcome:
    """One guarded call: when it started and ended (seconds since creation) and how it went."""

    start: float
    end: float
    outcome: str  # success | failure | refused (the API answered with a 4xx/429) | gave_up


class CircuitBreaker:
    """Thread-safe closed/open/half-open state machine; ``clock`` is injectable for tests."""

    def __init__(self, policy: BreakerPolicy | None = None, clock: Callable[[], float] = time.monotonic):
        self.policy = policy or BreakerPolicy()
        self._clock = clock
        self._lock = threading.Lock()
        self.origin = clock()
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._outage_since: float | None = None
        self._probing = False
        self.events: list[BreakerEvent] = [BreakerEvent(0.0, CLOSED, "start")]

    def now(self) -> float:
        """Seconds since the breaker was created."""
        return self._clock() - self.origin

    @property
    def state(self) -> str:
        return self._state

    def _move(self, state: str, reason: str) -> None:
        self._state = state
        self.events.append(BreakerEvent(self.now(), state, reason if len(reason) <= 120 else reason[:117] + "..."))

    def outage_since(self) -> float | None:
        """When (seconds since creation) the first failure of the current outage came; None while healthy."""
        with self._lock:
            return None if self._outage_since is None else self._outage_since - self.origin

    def retry_in(self) -> float:
        """Seconds until a call may go through (0 when closed)."""
        with self._lock:
            if self._state == OPEN:
                return max(0.0, self._opened_at + self.policy.cooldown_s - self._clock())
            return self.policy.poll_s if self._state == HALF_OPEN and self._probing else 0.0

    def allow(self) -> bool:
        """May a call go out now? After the cool-down exactly one caller gets through, as the probe."""
        with self._lock:
            if self._state == CLOSED:
                return True
            if self._state == OPEN and self._clock() - self._opened_at >= self.policy.cooldown_s:
                self._move(HALF_OPEN, "cool-down over: probing")
                self._probing = True
                return True
            if self._state == HALF_OPEN and not self._probing:
                self._probing = True
                return True
            return False

    def record_success(self) -> None:
        """The API answered: close the circuit (ends a probe)."""
        with self._lock:
            self._failures = 0
            self._outage_since = None
            self._probing = False
            if self._state != CLOSED:
                self._move(CLOSED, "probe answered: resuming")

    def record_failure(self, reason: str) -> None:
        """An outage-like failure: open after ``failure_threshold`` in a row, or at once if it was the probe."""
        with self._lock:
            self._failures += 1
            if self._outage_since is None:
                self._outage_since = self._clock()
            self._probing = False
            if self._state == HALF_OPEN or (self._state == CLOSED and self._failures >= self.policy.failure_threshold):
                why = "probe failed" if self._state == HALF_OPEN else f"{self._failures} failures in a row"
                self._opened_at = self._clock()
                self._move(OPEN, f"{why}: {reason}")

    def call(self, fn: Callable[..., Any], *args, **kwargs) -> Any:
        """Run ``fn`` if the circuit allows, recording the outcome; raise :class:`CircuitOpenError` if not."""
        if not self.allow():
            raise CircuitOpenError(f"API circuit is open: retry in {self.retry_in():.1f}s")
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            if is_outage(exc):
                self.record_failure(f"{type(exc).__name__}: {exc}")
            else:
                self.record_success()
            raise
        self.record_success()
        return result


@dataclass
class GuardReport:
    """What the breaker did during a run: state changes, each call, and the seconds jobs lost to the outage."""

    events: list[BreakerEvent] = field(default_factory=list)
    calls: list[CallOutcome] = field(default_factory=list)
    lost_s: float = 0.0
    failed_calls: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


class GuardedClient:
    """A :class:`PolygonClient` behind a :class:`CircuitBreaker` (the ``api.breaker`` fix).

    A job whose fetch fails with an outage error is tried again once the circuit lets it (after the
    client's own retries are spent); while the circuit is open it waits, until ``max_wait_s`` after the
    outage began (for whichever job saw it first).
    """

    def __init__(self, client: PolygonClient, breaker: CircuitBreaker | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.client = client
        self.breaker = breaker or CircuitBreaker()
        self._sleep = sleep
        self._lock = threading.Lock()
        self.report = GuardReport(events=self.breaker.events)

    @property
    def base_url(self) -> str:
        return self.client.base_url

    def __repr__(self) -> str:
        return f"GuardedClient({self.client!r}, state={self.breaker.state})"

    def close(self) -> None:
        self.client.close()

    def _note(self, start: float, outcome: str, lost: float = 0.0) -> None:
        with self._lock:
            self.report.calls.append(CallOutcome(start, self.breaker.now(), outcome))
            self.report.lost_s += lost
            self.report.failed_calls += outcome == "failure"

    def get_aggregates(self, *args, **kwargs) -> FetchResult:
        """Like :meth:`PolygonClient.get_aggregates`, riding through an outage; extra attempts count as retries.

        The requests of failed attempts are kept: merged into the result's stats, or into ``exc.stats`` on failure.
        """
        breaker = self.breaker
        began = breaker.now()
        spent = ClientStats()
        attempts = 0

        def deadline() -> float:
            since = breaker.outage_since()
            return (began if since is None else min(began, since)) + breaker.policy.max_wait_s

        while True:
            if not breaker.allow():
                wait = breaker.retry_in()
                if breaker.now() + wait > deadline():
                    self._note(began, "gave_up", breaker.now() - began)
                    exc = CircuitOpenError(
                        f"the API stayed down for more than {breaker.policy.max_wait_s:.0f}s (circuit open): "
                        "check the API status, then run again with api.missing_only to fetch what is missing")
                    exc.stats = spent
                    raise exc
                self._sleep(max(wait, breaker.policy.poll_s))
                continue
            start = breaker.now()
            if attempts:
                spent.retries += 1
            attempts += 1
            try:
                result = self.client.get_aggregates(*args, **kwargs)
            except errors.PolygonError as exc:
                if exc.stats is not None:
                    spent.merge(exc.stats)
                exc.stats = spent
                if not is_outage(exc):
                    breaker.record_success()
                    self._note(start, "refused")
                    raise
                breaker.record_failure(f"{type(exc).__name__}: {exc}")
                self._note(start, "failure")
                if breaker.now() > deadline():
                    raise
                continue
            breaker.record_success()
            self._note(start, "success", start - began)
            result.stats.merge(spent)
            return result


def guard(client: PolygonClient, on: bool, policy: BreakerPolicy | None = None) -> PolygonClient | GuardedClient:
    """``client`` behind a breaker when the ``api.breaker`` fix is on, else unchanged."""
    return GuardedClient(client, CircuitBreaker(policy)) if on else client
