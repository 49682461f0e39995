"""Token buckets: the simulator's per-key limit, and the client's adaptive pacing that reaches it with few 429s.

A :class:`TokenBucket` holds up to ``burst`` tokens refilled at ``rate`` per second. The server takes a
token or answers 429 (:meth:`TokenBucket.try_take`); the client reserves its token ahead and sleeps until
it is due (:meth:`TokenBucket.reserve`), so concurrent workers are spaced instead of rejected.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


def rate_limit_floor(requests: float, rate: float, burst: float) -> float:
    """The least wall time ``requests`` can take through a bucket of ``rate``/s holding ``burst`` tokens."""
    return max(0.0, requests - burst) / rate


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up. Thread-safe; ``clock`` is injectable for tests."""

    def __init__(self, rate: float, burst: float = 1.0, clock: Callable[[], float] = time.monotonic):
        if rate <= 0 or burst < 1:
            raise ValueError(f"token bucket needs rate > 0 and burst >= 1, got rate={rate}, burst={burst}")
        self.rate, self.burst, self._clock = float(rate), float(burst), clock
        self._tokens, self._stamp = self.burst, clock()
        self._lock = threading.Lock()

    def _refill(self, now: float) -> None:
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def try_take(self) -> float:
        """Take a token and return 0.0, or take none and return the seconds until one is available."""
        with self._lock:
            self._refill(self._clock())
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) / self.rate

    def reserve(self) -> float:
        """Take a token now or from the future (the balance may go negative): seconds the caller must wait."""
        with self._lock:
            self._refill(self._clock())
            self._tokens -= 1.0
            return max(0.0, -self._tokens / self.rate)

    def set_rate(self, rate: float) -> None:
        with self._lock:
            self._refill(self._clock())
            self.rate = float(rate)

    def hold(self, seconds: float) -> None:
        """Hand out no token for ``seconds`` (a server's Retry-After applies to every worker)."""
        with self._lock:
            self._refill(self._clock())
            self._tokens = min(self._tokens, 0.0) - seconds * self.rate


class AdaptivePacer:
    """Client-side pacing: a token bucket at ``headroom`` x the known limit, cut on a 429 and recovered on success.

    With ``rate_per_s=None`` (limit unknown) requests go unpaced until the first 429; the pacer then
    starts at the rate it had just achieved, so it discovers the limit instead of needing it.
    A 429 multiplies the rate by ``decrease`` and holds every worker for the Retry-After hint; each
    success adds ``recover`` x the ceiling back, never above the ceiling.
    """

    def __init__(self, rate_per_s: float | None = None, *, headroom: float = 0.95, burst: float = 1.0,
                 decrease: float = 0.7, recover: float = 0.02, min_rate: float = 0.05,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self.ceiling = rate_per_s * headroom if rate_per_s else None
        self.decrease, self.recover, self.min_rate = decrease, recover, min_rate
        self._burst, self._clock, self._sleep = burst, clock, sleep
        self.bucket = TokenBucket(self.ceiling, burst, clock) if self.ceiling else None
        self._recent: deque[float] = deque(maxlen=64)
        self._lock = threading.Lock()
        self.waited_s = 0.0
        self.cuts = 0

    @property
    def rate(self) -> float | None:
        """Requests per second currently allowed (None: unpaced)."""
        return self.bucket.rate if self.bucket else None

    def acquire(self) -> float:
        """Block until this request may go; returns the seconds waited."""
        with self._lock:
            bucket = self.bucket
            self._recent.append(self._clock())
        wait = bucket.reserve() if bucket else 0.0
        if wait > 0:
            self._sleep(wait)
            with self._lock:
                self.waited_s += wait
        return wait

    def on_success(self) -> None:
        with self._lock:
            if self.bucket and self.ceiling and self.bucket.rate < self.ceiling:
                self.bucket.set_rate(min(self.ceiling, self.bucket.rate + self.recover * self.ceiling))

    def on_rate_limited(self, retry_after: float | None) -> None:
        """A 429 came back: slow down (and learn a ceiling if none was known), and honour Retry-After."""
        with self._lock:
            self.cuts += 1
            if self.bucket is None:
                achieved = self._achieved_rate()
                self.ceiling = achieved
                self.bucket = TokenBucket(max(self.min_rate, achieved * self.decrease), self._burst, self._clock)
            else:
                self.bucket.set_rate(max(self.min_rate, self.bucket.rate * self.decrease))
            if retry_after:
                self.bucket.hold(retry_after)

    def _achieved_rate(self) -> float:
        if len(self._recent) < 2 or self._recent[-1] <= self._recent[0]:
            return 1.0
        return (len(self._recent) - 1) / (self._recent[-1] - self._recent[0])
