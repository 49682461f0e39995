"""Stage timers: how long each job spent in api / db / compute, as intervals on one clock.

Busy seconds add up each stage's intervals; when stages overlap (parallel workers), the wall-clock
attribution splits every instant among the stages active then, so the shares add up to the wall time.
Each interval also says where it ran (its :class:`Interval` attributes: thread, job, the HTTP requests made in
it), which the trace (:mod:`perflab.measure.trace`) and the critical path (:mod:`perflab.measure.critical_path`)
read; everything else sees plain ``(stage, start, end)`` tuples.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

STAGES = ("api", "db", "compute")

Job = tuple[str, str]
"""(symbol, timeframe)."""

T = TypeVar("T")
R = TypeVar("R")

_running = threading.local()  # the stage open on this thread: (origin, its request list), for note_request


class Interval(tuple):
    """A ``(stage, start, end)`` tuple that also carries where it ran: the thread's ``name`` and native ``tid``, the
    ``jobs`` it worked for (one, or a group commit's several) and the ``requests`` made in it as
    ``(start, end, status)`` on the same clock (status None when no answer came)."""

    thread: str
    tid: int
    jobs: tuple[Job, ...]
    requests: tuple[tuple[float, float, int | None], ...]

    def __new__(cls, items=(), *, thread: str = "", tid: int = 0, jobs=(), requests=()) -> Interval:
        self = super().__new__(cls, items)
        self.thread, self.tid = thread, tid
        self.jobs = tuple(tuple(j) for j in jobs)
        self.requests = tuple(tuple(r) for r in requests)
        return self

    def span(self) -> dict:
        """The interval with where it ran, as JSON-shaped data (the run result's ``spans``)."""
        stage, start, end = self
        return {"stage": stage, "start": start, "end": end, "thread": self.thread, "tid": self.tid,
                "jobs": [list(j) for j in self.jobs], "requests": [list(r) for r in self.requests]}


def note_request(start: float, end: float, status: int | None) -> None:
    """Tell the stage open on this thread (if any) about one HTTP request, times as ``time.perf_counter()``
    readings; it is kept with that stage's interval, so a run's trace can count requests in flight and 429s."""
    running = getattr(_running, "stage", None)
    if running is not None:
        origin, requests = running
        requests.append((start - origin, end - origin, status))


def in_this_stage(fn: Callable[[T], R]) -> Callable[[T], R]:
    """``fn`` made to note its requests into the stage open on the calling thread, wherever it later runs: for
    requests a stage hands to a thread pool, so the trace still counts them in flight for that stage's job."""
    running = getattr(_running, "stage", None)

    def run(arg: T) -> R:
        _running.stage = running
        try:
            return fn(arg)
        finally:
            _running.stage = None

    return run


@dataclass
class StageTimer:
    """Collects (stage, start, end) intervals relative to ``origin`` (a perf_counter reading).

    With ``enabled=False`` it records nothing, so the cost of instrumentation itself can be measured.
    """

    origin: float = field(default_factory=time.perf_counter)
    intervals: list[tuple[str, float, float]] = field(default_factory=list)
    enabled: bool = True
    jobs: tuple[Job, ...] = ()
    """The job(s) this timer's intervals work for (a child's), recorded with each :class:`Interval`."""

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        requests: list[tuple[float, float, int | None]] = []
        outer = getattr(_running, "stage", None)
        _running.stage = (self.origin, requests)
        start = time.perf_counter()
        try:
            yield
        finally:
            end = time.perf_counter()
            _running.stage = outer
            self.intervals.append(Interval((name, start - self.origin, end - self.origin),
                                           thread=threading.current_thread().name, tid=threading.get_native_id(),
                                           jobs=self.jobs, requests=requests))

    def child(self, job: Job | None = None, jobs: Iterable[Job] = ()) -> StageTimer:
        """A timer on the same clock for one ``job`` (or a group of ``jobs``); merge back with ``intervals.extend``."""
        return StageTimer(origin=self.origin, enabled=self.enabled,
                          jobs=((tuple(job),) if job else ()) + tuple(tuple(j) for j in jobs))

    def busy(self) -> dict[str, float]:
        """Seconds per stage, summed over intervals."""
        out: dict[str, float] = defaultdict(float)
        for name, start, end in self.intervals:
            out[name] += end - start
        return dict(out)


def busy_seconds(intervals: list[tuple[str, float, float]]) -> dict[str, float]:
    out = {s: 0.0 for s in STAGES}
    for name, start, end in intervals:
        out[name] = out.get(name, 0.0) + (end - start)
    return out


def wall_attribution(intervals: list[tuple[str, float, float]], wall: float) -> dict[str, float]:
    """Split wall time among stages: each instant goes equally to the stages active; the rest is ``idle``."""
    events = sorted([(s, 1, n) for n, s, _ in intervals] + [(e, -1, n) for n, _, e in intervals])
    active: dict[str, int] = defaultdict(int)
    out = {s: 0.0 for s in STAGES}
    covered, last = 0.0, 0.0
    for t, delta, name in events:
        live = [n for n, c in active.items() if c > 0]
        if live and t > last:
            share = (t - last) / len(live)
            for n in live:
                out[n] = out.get(n, 0.0) + share
            covered += t - last
        active[name] += delta
        last = max(last, t)
    out["idle"] = max(0.0, wall - covered)
    return out
