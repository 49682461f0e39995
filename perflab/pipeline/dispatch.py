"""How a backfill's jobs are started: in which groups and order, how many at once, how far apart their starts are.

The plan's fixes, built as they were meant (its ``asyncio.sleep(...).then`` does not exist in Python):

* **batch** (``api.batch``): jobs grouped by Polygon timespan, groups run one after another; inside a
  group the jobs run concurrently (the plan's ``gather``) and job ``i`` starts no earlier than
  ``i x 0.1 s`` after the group began.
* **parallel** (``api.parallel``): ``N`` worker threads share one client (one connection pool); worker
  ``k`` starts ``k x 5 s`` after the first. Together with batch the workers take the grouped jobs.
* **concurrency** (``api.concurrency``, beyond the plan): as many workers as requests may be in flight
  (``max_inflight``), all started at once: a job's pages follow ``next_url`` one after another, so only many jobs
  at once keep many requests in flight. How many actually are is the client's adaptive limit
  (:mod:`perflab.api.inflight`); a worker whose request finds the limit reached waits for a slot. It replaces the
  workers of ``api.parallel`` and their staggers, and ``api.batch``'s groups and staggers too: the staggers were a
  fixed guess at how fast to start requests, which the adaptive limit measures instead, and running one timespan
  group after another left the API idle while a group's last jobs finished (measured: with ``api.batch`` also on,
  the concurrent fix reached 0.44 of a 50/s limit at 0.2 s latency instead of 0.86-0.89).

Plan seconds are multiplied by ``time_scale`` (the simulator's latency scale) so staggers keep their
proportion to request latency. Results come back in the order of the jobs given.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from perflab.pipeline.fixes import PipelineSettings
from perflab.timeframes import parse_timeframe

Job = tuple[str, str]  # (symbol, timeframe name)
R = TypeVar("R")

BATCH_STAGGER_S = 0.1  # the plan's Fix 2: 100 ms between starts within a timespan group
WORKER_STAGGER_S = 5.0  # the plan's Fix 3: 5 s between parallel clients' starts
MAX_GATHER = 32  # a timespan group runs at most this many jobs at once (one connection each)


@dataclass(frozen=True)
class Dispatch:
    """A dispatch strategy: ``workers=0`` means as many workers as the group has jobs (up to MAX_GATHER)."""

    group_by_timespan: bool = False
    workers: int = 1
    job_stagger_s: float = 0.0
    worker_stagger_s: float = 0.0

    @classmethod
    def from_settings(cls, settings: PipelineSettings, time_scale: float = 1.0) -> Dispatch:
        """The strategy the settings ask for: sequential, batched, parallel (or concurrent: many unstaggered
        workers), or batched across those workers."""
        concurrent = settings.max_inflight > 0
        parallel = settings.api_workers > 1 and not concurrent
        batch = settings.batch_by_timespan
        workers = settings.max_inflight if concurrent else settings.api_workers if parallel else (0 if batch else 1)
        return cls(
            group_by_timespan=batch and not concurrent,
            workers=workers,
            job_stagger_s=BATCH_STAGGER_S * time_scale if batch and not concurrent else 0.0,
            worker_stagger_s=WORKER_STAGGER_S * time_scale if parallel else 0.0,
        )

    def groups(self, jobs: Sequence[Job]) -> list[list[int]]:
        """Job indices per group, groups in order of first appearance (one group unless batching)."""
        if not self.group_by_timespan:
            return [list(range(len(jobs)))]
        out: dict[str, list[int]] = {}
        for i, (_, timeframe) in enumerate(jobs):
            out.setdefault(parse_timeframe(timeframe).timespan, []).append(i)
        return list(out.values())

    def run(self, jobs: Sequence[Job], fn: Callable[[Job], R]) -> list[R]:
        """Run ``fn`` on every job; the first exception stops new starts and is re-raised once workers finish."""
        results: list = [None] * len(jobs)
        stop = threading.Event()
        for group in self.groups(jobs):
            if stop.is_set():
                break
            self._run_group(jobs, group, fn, results, stop)
        return results

    def _run_group(self, jobs: Sequence[Job], group: list[int], fn: Callable[[Job], R], results: list,
                   stop: threading.Event) -> None:
        workers = min(len(group), self.workers or MAX_GATHER)
        queue = list(enumerate(group))
        lock = threading.Lock()
        errors: list[BaseException] = []
        began = time.perf_counter()

        def worker(k: int) -> None:
            _sleep_until(began + k * self.worker_stagger_s, stop)
            while not stop.is_set():
                with lock:
                    if not queue:
                        return
                    position, index = queue.pop(0)
                _sleep_until(began + position * self.job_stagger_s, stop)
                if stop.is_set():
                    return
                try:
                    results[index] = fn(jobs[index])
                except BaseException as exc:  # noqa: BLE001 - handed to the caller after the workers stop
                    errors.append(exc)
                    stop.set()

        if workers == 1:
            worker(0)
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix="api-worker") as pool:
                list(pool.map(worker, range(workers)))
        if errors:
            raise errors[0]


def _sleep_until(moment: float, stop: threading.Event) -> None:
    delay = moment - time.perf_counter()
    if delay > 0:
        stop.wait(delay)
