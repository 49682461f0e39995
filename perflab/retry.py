"""The one retry family, on tenacity: each policy is a small named object that builds a ``Retrying``.

API pages (``api.client``), database batches (``db.transactions``), waits for a database to come back
(``db.outage``) and the circuit breaker's re-tries (``api.breaker``) all retry through
:class:`RetryPolicy`; they differ only in which errors are worth another try, how long to wait, and when
to stop — the three tenacity strategies every policy names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, stop_after_delay, stop_any
from tenacity import wait_exponential as _wait_exponential
from tenacity.nap import sleep as _tenacity_sleep

T = TypeVar("T")

__all__ = ["RetryCallState", "RetryPolicy", "run_with"]


@dataclass(frozen=True)
class RetryPolicy:
    """Retry ``retry_on`` errors up to ``attempts`` tries (and ``max_delay_s`` in all, when set), waiting
    ``wait(state)`` seconds between tries (default: exponential from ``initial_s`` to ``max_s``).

    ``stop(state)``, when set, is one more reason to give up (e.g. a deadline that moves, as the breaker's
    does); ``sleep`` replaces ``time.sleep`` for the waits (a test's fake clock)."""

    retry_on: Callable[[BaseException], bool]
    attempts: int = 5
    initial_s: float = 0.1
    max_s: float = 2.0
    max_delay_s: float | None = None
    wait: Callable[[RetryCallState], float] | None = None
    stop: Callable[[RetryCallState], bool] | None = None
    sleep: Callable[[float], None] | None = None

    def retrying(self, before_sleep: Callable[[RetryCallState], Any] | None = None) -> Retrying:
        """A tenacity ``Retrying`` for this policy; ``before_sleep`` sees each failed try (to count retries)."""
        stop = stop_after_attempt(self.attempts)
        if self.max_delay_s is not None:
            stop = stop_any(stop, stop_after_delay(self.max_delay_s))
        if self.stop is not None:
            stop = stop_any(stop, self.stop)
        wait = self.wait or _wait_exponential(multiplier=self.initial_s, max=self.max_s)
        return Retrying(stop=stop, wait=wait, retry=retry_if_exception(self.retry_on), reraise=True,
                        before_sleep=before_sleep, sleep=self.sleep or _tenacity_sleep)

    def run(self, fn: Callable[[], T], before_sleep: Callable[[RetryCallState], Any] | None = None) -> T:
        """``fn()`` under this policy: the last error is raised as it was once the policy gives up."""
        return self.retrying(before_sleep)(fn)


def run_with(policy: RetryPolicy | None, fn: Callable[[], T],
             before_sleep: Callable[[RetryCallState], Any] | None = None) -> T:
    """``fn()`` under ``policy``, or exactly once when there is none (a fix switched off)."""
    return fn() if policy is None else policy.run(fn, before_sleep)
