"""An adaptive limit on requests in flight (AIMD, like TCP's congestion window), so concurrency finds the rate limit.

The ceiling of the API stage is ``min(rate limit, in flight / latency)``: with too few requests in flight the
rate limit is never reached; with too many they only queue (at the pacer, or in the server). :class:`InflightLimit`
starts small and grows by one per answer (doubling per round trip: TCP's slow start) until the first sign of
congestion, then by one per round trip (additive increase), and is multiplied by ``decrease`` on congestion
(multiplicative decrease), at most once per round trip: answers to requests sent before a cut carry old news.

Congestion is a 429, or a latency rise of either kind:

* **queueing**: a slot's whole time (from taking it to its release) against its time on the wire, both smoothed
  over the same answers. Time in the slot before the wire is the pacer's queue: once the rate limit is reached,
  more in flight only waits longer there. A ratio, so pages of any size compare alike.
* **the server slowing down**: the smoothed time on the wire against its lowest over the last two windows of
  answers (so the baseline follows a change of page size within a few hundred answers).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class AimdPolicy:
    """How the limit moves: bounds, cut factor, the latency rises that count as congestion, smoothing, window."""

    initial: int = 10  # TCP's initial window (RFC 6928): a few round trips to 64, not a 429 burst at a low limit
    min_limit: int = 1
    max_limit: int = 64
    decrease: float = 0.7
    queue_tolerance: float = 2.0  # slot time / wire time above this: requests wait as long as they travel
    server_tolerance: float = 3.0  # wire time / its recent lowest above this: the server slowed down
    smoothing: float = 0.2
    window: int = 128

    def __post_init__(self) -> None:
        if not 1 <= self.min_limit <= self.initial <= self.max_limit:
            raise ValueError(f"AIMD needs 1 <= min_limit <= initial <= max_limit, got {self.min_limit}, "
                             f"{self.initial}, {self.max_limit}")
        if not (0 < self.decrease < 1 and self.queue_tolerance > 1 and self.server_tolerance > 1
                and 0 < self.smoothing <= 1 and self.window >= 1):
            raise ValueError("AIMD needs 0 < decrease < 1, tolerances > 1, 0 < smoothing <= 1 and window >= 1")


@dataclass(frozen=True)
class Ticket:
    """A taken slot: its place in send order and when it was taken."""

    sent: int
    started: float


class InflightLimit:
    """Slots for requests in flight under an AIMD limit. Thread-safe; ``clock`` is injectable for tests.

    :meth:`acquire` a slot before a request (it blocks while the limit is reached), :meth:`release` it after with
    the seconds the request spent on the wire (``None`` when it got no answer worth timing) and whether it was a
    429. ``history`` holds every value the limit took, in order.
    """

    def __init__(self, policy: AimdPolicy | None = None, clock: Callable[[], float] = time.perf_counter):
        self.policy = policy or AimdPolicy()
        self._clock = clock
        self._cond = threading.Condition()
        self._limit = float(self.policy.initial)
        self._slow_start = True
        self._sent = 0
        self._cut_mark = 0  # answers to requests sent up to here were in flight at the last cut
        self._slot_s: float | None = None
        self._wire_s: float | None = None
        self._lows = [math.inf, math.inf]  # lowest smoothed wire time in the previous and the current window
        self._seen = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        self.cuts = 0
        self.history: list[int] = [self.limit]

    @property
    def limit(self) -> int:
        """Requests allowed in flight now."""
        return max(self.policy.min_limit, math.floor(self._limit))

    def acquire(self) -> Ticket:
        """Wait for a free slot and take it."""
        with self._cond:
            while self.in_flight >= self.limit:
                self._cond.wait()
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            self._sent += 1
            return Ticket(self._sent, self._clock())

    def release(self, ticket: Ticket, wire_s: float | None, *, rate_limited: bool = False) -> None:
        """Free the slot and move the limit: cut on a 429 or a latency rise, grow on a plain answer."""
        slot_s = self._clock() - ticket.started
        with self._cond:
            self.in_flight -= 1
            if rate_limited:
                self._cut(ticket.sent)
            elif wire_s is not None:
                self._answer(ticket.sent, slot_s, max(wire_s, 0.0))
            self._cond.notify_all()

    def _answer(self, sent: int, slot_s: float, wire_s: float) -> None:
        p = self.policy
        a = p.smoothing
        self._slot_s = slot_s if self._slot_s is None else (1 - a) * self._slot_s + a * slot_s
        self._wire_s = wire_s if self._wire_s is None else (1 - a) * self._wire_s + a * wire_s
        self._seen += 1
        if self._seen % p.window == 0:
            self._lows = [self._lows[1], math.inf]
        self._lows[1] = min(self._lows[1], self._wire_s)
        if sent <= self._cut_mark:
            return  # sent before the last cut: neither a new signal nor a reason to grow
        if self.queueing > p.queue_tolerance or self.slowdown > p.server_tolerance:
            self._cut(sent)
            return
        self._limit = min(p.max_limit, self._limit + (1 if self._slow_start else 1 / self._limit))
        self._record()

    @property
    def queueing(self) -> float:
        """Smoothed slot time over smoothed wire time: 1 when nothing waits before the wire."""
        if not self._slot_s or not self._wire_s:
            return 1.0
        return self._slot_s / self._wire_s

    @property
    def slowdown(self) -> float:
        """Smoothed wire time over its lowest in the last two windows: 1 while latency stays flat."""
        low = min(self._lows)
        if not self._wire_s or not math.isfinite(low) or low <= 0:
            return 1.0
        return self._wire_s / low

    def _cut(self, sent: int) -> None:
        if sent <= self._cut_mark:
            return
        self._cut_mark = self._sent
        self._slow_start = False
        self._limit = max(float(self.policy.min_limit), self._limit * self.policy.decrease)
        self.cuts += 1
        self._record()

    def _record(self) -> None:
        if self.limit != self.history[-1]:
            self.history.append(self.limit)


__all__ = ["AimdPolicy", "InflightLimit", "Ticket"]
