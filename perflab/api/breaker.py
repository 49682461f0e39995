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

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

from perflab.api import errors
from perflab.api.client import AggregatesSource, FetchResult
from perflab.measure.results import RequestStats
from perflab.retry import RetryCallState, RetryPolicy

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
OUTAGE_ERRORS = (errors.ServerError, errors.TimeoutError, errors.ConnectionError, errors.MalformedResponseError)


class CircuitOpenError(errors.PolygonError):
    """The API failed repeatedly and did not recover within the wait allowed: check its status, run again.

    ``retry_in`` is set while the circuit may still let a call through (in that many seconds), None once given up.
    """

    def __init__(self, message: str, *, retry_in: float | None = None):
        super().__init__(message)
        self.retry_in = retry_in


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

    def give_up_at(self, began: float) -> float:
        """When a call begun at ``began`` stops waiting: ``max_wait_s`` after the outage began, if that was earlier."""
        since = self.outage_since()
        return (began if since is None else min(began, since)) + self.policy.max_wait_s

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
            wait = self.retry_in()
            raise CircuitOpenError(f"API circuit is open: retry in {wait:.1f}s", retry_in=wait)
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


def outage_retry(breaker: CircuitBreaker, began: float, sleep: Callable[[float], None] = time.sleep) -> RetryPolicy:
    """The breaker's re-tries of a call begun at ``began``: again after each outage failure (the circuit says how
    soon), waiting while it is open, until :meth:`CircuitBreaker.give_up_at` (once per outage, not once per call)."""

    def open_circuit(exc: BaseException) -> bool:
        return isinstance(exc, CircuitOpenError) and exc.retry_in is not None

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception()
        return max(exc.retry_in, breaker.policy.poll_s) if open_circuit(exc) else 0.0

    def past_deadline(state: RetryCallState) -> bool:
        return is_outage(state.outcome.exception()) and breaker.now() > breaker.give_up_at(began)

    return RetryPolicy(retry_on=lambda exc: is_outage(exc) or open_circuit(exc), attempts=sys.maxsize, wait=wait,
                       stop=past_deadline, sleep=sleep)


class GuardedClient:
    """A client behind a :class:`CircuitBreaker` (the ``api.breaker`` fix).

    A job whose fetch fails with an outage error is tried again once the circuit lets it (after the
    client's own retries are spent); while the circuit is open it waits, until ``max_wait_s`` after the
    outage began (for whichever job saw it first): :func:`outage_retry`.
    """

    def __init__(self, client: AggregatesSource, breaker: CircuitBreaker | None = None,
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

    def get_aggregates(self, ticker: str, multiplier: int, timespan: str, start: date | str, end: date | str, *,
                       limit: int = 5000, adjusted: bool = True, sort: str = "asc",
                       stats: RequestStats | None = None) -> FetchResult:
        """Like :meth:`PolygonClient.get_aggregates`, riding through an outage; each call after the first counts as
        a retry in ``stats``, where every call's requests are counted too (so a job that gave up keeps its cost)."""
        breaker = self.breaker
        began = breaker.now()
        stats = RequestStats() if stats is None else stats
        calls = 0

        def attempt() -> FetchResult:
            nonlocal calls
            if not breaker.allow():
                wait = breaker.retry_in()
                if breaker.now() + wait <= breaker.give_up_at(began):
                    raise CircuitOpenError(f"API circuit is open: retry in {wait:.1f}s", retry_in=wait)
                self._note(began, "gave_up", breaker.now() - began)
                raise CircuitOpenError(
                    f"the API stayed down for more than {breaker.policy.max_wait_s:.0f}s (circuit open): "
                    "check the API status, then run again with api.missing_only to fetch what is missing")
            called = breaker.now()
            if calls:
                stats.retries += 1
            calls += 1
            try:
                result = self.client.get_aggregates(ticker, multiplier, timespan, start, end, limit=limit,
                                                    adjusted=adjusted, sort=sort, stats=stats)
            except errors.PolygonError as exc:
                if not is_outage(exc):
                    breaker.record_success()
                    self._note(called, "refused")
                    raise
                breaker.record_failure(f"{type(exc).__name__}: {exc}")
                self._note(called, "failure")
                raise
            breaker.record_success()
            self._note(called, "success", called - began)
            return result

        return outage_retry(breaker, began, self._sleep).run(attempt)


def guard(client: AggregatesSource, on: bool, policy: BreakerPolicy | None = None) -> AggregatesSource:
    """``client`` behind a breaker when the ``api.breaker`` fix is on, else unchanged."""
    return GuardedClient(client, CircuitBreaker(policy)) if on else client
