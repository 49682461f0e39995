"""The API stage alone: fetch every job of a workload with a dispatch strategy, no database, and measure it.

Path A's fixes change only how bars are fetched, so their effect is measured here on the same client and
dispatch code the backfill uses, without the write and compute stages diluting (or masking) it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd

from perflab.api.client import ClientStats, PolygonClient
from perflab.api.dispatch import Dispatch, Job
from perflab.api.errors import AuthError, PolygonError
from perflab.timeframes import parse_timeframe


@dataclass
class FetchRun:
    """What fetching a workload cost: wall time, the client's counters, failures, and the bars when kept."""

    label: str
    wall_s: float
    stats: ClientStats
    failures: dict[Job, str] = field(default_factory=dict)
    bars: dict[Job, pd.DataFrame] = field(default_factory=dict)
    server: dict = field(default_factory=dict)

    @property
    def requests_per_s(self) -> float:
        return self.stats.requests / self.wall_s if self.wall_s else float("nan")

    @property
    def served_per_s(self) -> float:
        """Requests per second that the server answered with anything but a 429 (throughput under the limit)."""
        return (self.stats.requests - self.stats.rate_limited) / self.wall_s if self.wall_s else float("nan")

    def metrics(self) -> dict[str, float]:
        """Headline numbers of the run, all from what it recorded."""
        lat = np.array(self.stats.latencies) if self.stats.latencies else np.array([np.nan])
        return {
            "api_wall_s": self.wall_s,
            "requests": self.stats.requests,
            "requests_per_s": self.requests_per_s,
            "served_per_s": self.served_per_s,
            "rate_limited_429": self.stats.rate_limited,
            "server_429": self.server.get("status_429", 0),
            "retries": self.stats.retries,
            "failed_jobs": len(self.failures),
            "latency_p50_ms": float(np.nanpercentile(lat, 50)) * 1000,
            "latency_p95_ms": float(np.nanpercentile(lat, 95)) * 1000,
        }


def fetch_jobs(client: PolygonClient, jobs: Sequence[Job], start: date, end: date, dispatch: Dispatch, *,
               page_limit: int = 5000, label: str = "", keep_bars: bool = False) -> FetchRun:
    """Fetch every (symbol, timeframe) job over [start, end]; a failed job is recorded, an auth error stops all."""
    total = ClientStats()
    failures: dict[Job, str] = {}
    bars: dict[Job, pd.DataFrame] = {}
    lock = threading.Lock()

    def one(job: Job) -> None:
        tf = parse_timeframe(job[1])
        try:
            fetched = client.get_aggregates(job[0], tf.multiplier, tf.timespan, start, end, limit=page_limit)
        except AuthError:
            raise
        except PolygonError as exc:
            with lock:
                failures[job] = f"{type(exc).__name__}: {exc}"
                total.merge(getattr(exc, "stats", None) or ClientStats())
            return
        with lock:
            total.merge(fetched.stats)
            if keep_bars:
                bars[job] = fetched.bars

    began = time.perf_counter()
    dispatch.run(list(jobs), one)
    return FetchRun(label, time.perf_counter() - began, total, failures, bars)
