"""Group commit (the ``db.group_commit`` fix): committer threads compute and store what the fetching jobs hand them.

A job hands over its fetched bars and goes on to the next fetch; a committer takes everything handed
over since its last commit, computes the features of all those series in one panel call and writes
bars, features and coverage in one transaction. Round trips and per-call overhead are paid per group
instead of per job, and the database work overlaps the fetching instead of holding a worker.
A group that fails is recorded as the error of each of its jobs; the run goes on.

With ``db.stream`` a job hands over one window of days at a time, with the last bars of the window before
(``history``: its features read them; they are not written again), and waits while the committer's backlog is
over ``MAX_BACKLOG_ROWS`` bars, so fetching cannot run ahead of the database by more than that.

Only jobs whose symbol is in the rollout are handed over (the others write their own, on the baseline path),
so the committer computes and writes with the in-rollout settings: its feature implementation, binary COPY
whatever the ``writer`` setting, and ``db.retry`` as the run has it.
"""

from __future__ import annotations

import ctypes
import queue
import sys
import threading
from dataclasses import dataclass
from datetime import date

import pandas as pd
from sqlalchemy.engine import Engine

from perflab.db.group_store import SeriesWrite, write_group
from perflab.db.outage import DbRetry
from perflab.db.writers import in_order, prepare
from perflab.features import compute_panel
from perflab.measure.results import JobRecord
from perflab.measure.timing import StageTimer
from perflab.redact import describe_error

MAX_GROUP_ROWS = 50_000
"""Bars in one group at most: a bigger backlog is committed in several transactions."""
MAX_BACKLOG_ROWS = 2 * MAX_GROUP_ROWS
"""``db.stream``: bars handed over and not yet committed at most, before a handing-over job waits."""
RECORD_LOCK = threading.Lock()
"""Guards the job records that a streaming job and the committer threads both add to."""
COMMIT_THREADS = 2
"""Committers: two keep pace with four fetching workers on the 2-core lab machine (one did not)."""


@dataclass
class Handover:
    """One job's fetched bars (or one window of them), the day ranges they complete, the record to fill in once
    stored, and the bars just before them that their features read (``db.stream``; not written)."""

    record: JobRecord
    bars: pd.DataFrame
    ranges: list[tuple[date, date]]
    history: pd.DataFrame | None = None

    @property
    def held(self) -> int:
        """Bars this hand-over keeps in memory until it is committed."""
        return len(self.bars) + (0 if self.history is None else len(self.history))


def trim_freed_memory() -> None:
    """Give the free pages inside glibc's heaps back to the system (``malloc_trim``): after a streamed group, so
    the pages its frames used do not stay counted as resident; nothing where there is no glibc."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).malloc_trim(0)
        except (OSError, AttributeError):
            pass


class GroupCommitter:
    """Background threads that store handed-over jobs a group at a time (start, hand over, close).

    ``threads`` committers take groups from one queue; while one waits on the database (the GIL is
    free then) another prepares its group, so the database work keeps pace with the fetching.
    """

    def __init__(self, engine: Engine, timer: StageTimer, feature_impl: str, db_retry: bool = False,
                 threads: int = COMMIT_THREADS, max_backlog_rows: int | None = None) -> None:
        self.engine, self.timer, self.feature_impl, self.db_retry = engine, timer, feature_impl, db_retry
        self.max_backlog_rows = max_backlog_rows
        self._queue: queue.Queue[Handover | None] = queue.Queue()
        self._room = threading.Condition()
        self._backlog = 0
        self._threads = [threading.Thread(target=self._loop, name=f"group-commit-{k}", daemon=True)
                         for k in range(threads)]

    def start(self) -> GroupCommitter:
        for thread in self._threads:
            thread.start()
        return self

    def hand_over(self, item: Handover) -> None:
        """Queue ``item``; with ``max_backlog_rows``, first wait until the backlog has room for it (or is empty)."""
        with self._room:
            while self.max_backlog_rows and self._backlog and self._backlog + item.held > self.max_backlog_rows:
                self._room.wait()
            self._backlog += item.held
        self._queue.put(item)

    def _release(self, items: list[Handover]) -> None:
        with self._room:
            self._backlog -= sum(i.held for i in items)
            self._room.notify_all()

    def close(self) -> None:
        """Store everything handed over, then stop the threads (one end marker each)."""
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()

    def _loop(self) -> None:
        done = False
        while not done:
            items: list[Handover] = []
            rows = 0
            while not items or (rows < MAX_GROUP_ROWS and not self._queue.empty()):
                item = self._queue.get()
                if item is None:
                    done = True
                    break
                items.append(item)
                rows += len(item.bars)
            if items:
                self._commit(items)
                self._release(items)
                if self.max_backlog_rows:
                    trim_freed_memory()

    def _commit(self, items: list[Handover]) -> None:
        timer = self.timer.child(jobs=[(i.record.symbol, i.record.timeframe) for i in items])
        db = DbRetry(self.engine, enabled=self.db_retry)
        for item in items:
            item.record.code_path.update(writer="group_commit", batch_size=None, features=self.feature_impl,
                                         db_retry=self.db_retry)
        try:
            with timer.stage("compute"):
                bars = [i.bars if in_order(i.bars) else prepare(i.bars) for i in items]
                inputs = [b if i.history is None or not len(i.history) else pd.concat([i.history, b], ignore_index=True)
                          for i, b in zip(items, bars)]
                features = [f.iloc[len(x) - len(b):].reset_index(drop=True) if len(x) > len(b) else f
                            for f, x, b in zip(compute_panel(inputs, self.feature_impl), inputs, bars)]
            writes = [SeriesWrite(i.record.symbol, i.record.timeframe, b, f, i.ranges)
                      for i, b, f in zip(items, bars, features)]
            with timer.stage("db"):
                db.run(lambda: write_group(self.engine, writes))
            with RECORD_LOCK:
                for item, b, f in zip(items, bars, features):
                    item.record.rows += len(b)
                    item.record.feature_rows += len(f)
        except Exception as exc:  # every job of the group failed alike; the run reports its success rate
            for item in items:
                item.record.error = describe_error(exc)
        with RECORD_LOCK:
            items[0].record.retries += db.retries
            _share_out(items, timer.busy())
        self.timer.intervals.extend(timer.intervals)


def _share_out(items: list[Handover], busy: dict[str, float]) -> None:
    """Split the group's stage seconds among its jobs by bars, so per-job records add up to the run's."""
    weights = [len(i.bars) for i in items]
    if not any(weights):
        weights = [1] * len(items)
    total = sum(weights)
    for item, weight in zip(items, weights):
        for stage, seconds in busy.items():
            item.record.stages[stage] = item.record.stages.get(stage, 0.0) + seconds * weight / total
