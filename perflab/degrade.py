"""Graceful degradation (the plan's Phase 4 example): when the API is down, serve stored features, say how stale.

:class:`FeatureService` reads features live (fetch, compute, store) through a circuit breaker; while
the circuit is open, or the API fails, it answers from ``quant_features`` with a
:class:`StaleDataWarning` "data is N hours stale" instead of failing or hammering the API.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime

import pandas as pd
from sqlalchemy.engine import Engine

from perflab.api.breaker import CircuitBreaker, CircuitOpenError, is_outage
from perflab.api.client import PolygonClient
from perflab.db.coverage import day_start
from perflab.db.feature_store import read_features, write_features
from perflab.errors import PerflabError
from perflab.features import compute_features
from perflab.timeframes import parse_timeframe


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
