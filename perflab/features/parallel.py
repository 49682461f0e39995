"""The vectorized features spread over a long-lived process pool (the plan's fix 3), only where it pays.

Starting worker processes costs far more than computing one job's features, so the pool is started
once and reused by every call until :func:`shutdown` (or interpreter exit). Each call splits its
series into one contiguous chunk per worker and ships plain arrays, not frames. Work smaller than
``ParallelPolicy.min_rows`` per worker, or a machine with one usable core, runs the vectorized code
in-process instead: on small inputs pickling and scheduling cost more than the compute saves.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import pandas as pd

from perflab.features import vectorized
from perflab.features.definitions import DEFAULT_WINDOWS, FeatureWindows


def usable_cpus() -> int:
    """Cores this process may run on (affinity-aware where the OS tells)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True)
class ParallelPolicy:
    """How many worker processes, the least work per worker worth shipping, the least cores worth it.

    Defaults from ``benchmarks/bench_features.py`` on the 2-core lab machine: on the standard panel
    (412k bars) two workers measured slower than the in-process vectorized code (start-up ~0.7 s, paid
    once), so below 4 usable cores the default stays in-process.
    """

    workers: int = usable_cpus()
    min_rows: int = 200_000
    min_cpus: int = 4

    def chunks(self, lengths: Sequence[int]) -> list[slice]:
        """Contiguous slices of the series, one per worker, balanced by bars; [] means run in-process."""
        if usable_cpus() < self.min_cpus:
            return []
        total = sum(lengths)
        n = min(self.workers, len(lengths), total // max(self.min_rows, 1))
        if n < 2:
            return []
        bounds, acc, target = [0], 0, total / n
        for i, length in enumerate(lengths):
            acc += length
            if acc >= target * len(bounds) and len(bounds) < n and i + 1 < len(lengths):
                bounds.append(i + 1)
        bounds.append(len(lengths))
        return [slice(a, b) for a, b in pairwise(bounds)]


DEFAULT_POLICY = ParallelPolicy()

_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None
_pool_workers = 0


def pool(workers: int) -> ProcessPoolExecutor:
    """The shared pool, started on first use (forkserver: safe beside the scheduler's threads)."""
    global _pool, _pool_workers
    with _lock:
        if _pool is None or _pool_workers != workers:
            if _pool is not None:
                _pool.shutdown()
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["perflab.features.vectorized"])
            _pool, _pool_workers = ProcessPoolExecutor(workers, mp_context=ctx), workers
            list(_pool.map(_warm, range(workers)))
        return _pool


def _warm(_: int) -> None:
    vectorized.panel_columns([(np.ones(3), np.ones(3), np.ones(3))])


def shutdown() -> None:
    """Stop the worker processes (the next parallel call starts a fresh pool)."""
    global _pool
    with _lock:
        if _pool is not None:
            _pool.shutdown()
            _pool = None


atexit.register(shutdown)


def compute_panel(series: Sequence[pd.DataFrame], windows: FeatureWindows = DEFAULT_WINDOWS,
                  policy: ParallelPolicy = DEFAULT_POLICY) -> list[pd.DataFrame]:
    """Features of several series; chunks of series go to the pool when the policy says it pays."""
    arrays = [vectorized.fields(bars) for bars in series]
    chunks = policy.chunks([len(a[0]) for a in arrays])
    if not chunks:
        columns = vectorized.panel_columns(arrays, windows)
    else:
        futures = [pool(policy.workers).submit(vectorized.panel_columns, arrays[c], windows) for c in chunks]
        columns = [cols for f in futures for cols in f.result()]
    return [vectorized.frame(bars, cols) for bars, cols in zip(series, columns)]


def compute(bars: pd.DataFrame, windows: FeatureWindows = DEFAULT_WINDOWS) -> pd.DataFrame:
    """Features of one series (one series cannot be split by symbol, so this mostly runs in-process)."""
    return compute_panel([bars], windows)[0]
