"""The backfill scheduler: jobs = symbols x timeframes, each fetched, written and turned into features.

Every stage of every job is timed on one clock; a job that fails is recorded with its reason and the
run goes on, except for a rejected API key, which stops the run at once (nothing else can succeed).
"""

from __future__ import annotations

import ctypes
import re
import sys
import time
import uuid
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta

import pandas as pd
from sqlalchemy.engine import Engine
from tqdm import TqdmWarning

from perflab.api.client import AggregatesSource, FetchResult, empty_bars
from perflab.api.errors import AuthError
from perflab.db.coverage import missing_ranges, missing_ranges_many, stored_bars
from perflab.db.feature_store import write_features
from perflab.db.migrate import apply_schema, set_indexes
from perflab.db.outage import DbRetry
from perflab.db.pool import connection_meter
from perflab.db.writers import Writer, get_writer
from perflab.errors import InputError, PerflabError
from perflab.features import compute_features
from perflab.features.definitions import DEFAULT_WINDOWS, FeatureWindows
from perflab.measure.environment import collect_environment
from perflab.measure.resources import ResourceSampler
from perflab.measure.results import JobRecord, RunResult
from perflab.measure.timing import StageTimer
from perflab.pipeline.committer import MAX_BACKLOG_ROWS, RECORD_LOCK, GroupCommitter, Handover
from perflab.pipeline.dispatch import Dispatch
from perflab.pipeline.fixes import FixSet, PipelineSettings
from perflab.pipeline.presets import Preset, check_range, parse_date
from perflab.pipeline.resume import Ranges, feature_input, fetch_missing, mark_done
from perflab.pipeline.shared_fetch import share_fetches
from perflab.redact import describe_error
from perflab.timeframes import Timeframe, parse_timeframe

with warnings.catch_warnings():  # without ipywidgets (the `lab` extra) a notebook gets the text bar, not a warning
    warnings.simplefilter("ignore", TqdmWarning)
    from tqdm.auto import tqdm


TICKER = re.compile(r"[A-Z][A-Z0-9]*(?:[.\-][A-Z0-9]+)*"  # AAPL, BRK.B, BF-B
                    r"|[XCI]:[A-Z0-9]+(?:[.\-][A-Z0-9]+)*"  # X:BTCUSD, C:EURUSD, I:SPX
                    r"|O:[A-Z][A-Z0-9]{0,5}\d{6}[CP]\d{8}")  # O:SPY251219C00650000
TICKER_MAX = 12  # characters after the prefix, for all but option tickers
TICKER_RULE = ("a Polygon ticker starts with a letter, then letters, digits and single '.' or '-' between them, "
               "at most 12 characters (AAPL, BRK.B, BF-B), or has a prefix: X:BTCUSD, C:EURUSD, I:SPX, "
               "O:SPY251219C00650000")


def check_ticker(raw: str) -> str:
    """``raw`` upper-cased if it is a Polygon ticker, else an InputError naming the rule (before any request)."""
    ticker = raw.strip().upper()
    if not ticker:
        raise InputError("an empty symbol in the list: remove the extra comma")
    body = ticker.partition(":")[2] if ticker[1:2] == ":" else ticker
    if TICKER.fullmatch(ticker) and (ticker.startswith("O:") or len(body) <= TICKER_MAX):
        return ticker
    bad = next((c for c in ticker if not (c.isascii() and c.isalnum()) and c not in ".-:"), None)
    why = f"it has {bad!r}" if bad else f"it is longer than {TICKER_MAX} characters" if len(body) > TICKER_MAX else ""
    raise InputError(f"symbol {raw!r} is not a Polygon ticker{' (' + why + ')' if why else ''}: {TICKER_RULE}")


@dataclass(frozen=True)
class Workload:
    """What to backfill: symbols x timeframes over [start, end] (New York dates, inclusive)."""

    symbols: tuple[str, ...]
    timeframes: tuple[str, ...]
    start: date
    end: date

    @classmethod
    def from_preset(cls, preset: Preset) -> Workload:
        return cls(preset.symbols, preset.timeframes, preset.start, preset.end)

    @classmethod
    def parse(cls, symbols: Iterable[str], timeframes: Iterable[str], start: str | date, end: str | date,
              today: date | None = None) -> Workload:
        """Validate user input: Polygon tickers (each once), known timeframes, real dates, from <= to, not in the
        future."""
        symbols = list(symbols)
        if not any(s.strip() for s in symbols):
            raise PerflabError("no symbols given: pass at least one, e.g. --symbols AAPL,MSFT")
        syms = tuple(dict.fromkeys(check_ticker(s) for s in symbols))
        tfs = tuple(parse_timeframe(t.strip()).name for t in timeframes if t.strip())
        s, e = parse_date(start, "from"), parse_date(end, "to")
        check_range(s, e, today)
        return cls(syms, tfs, s, e)

    def jobs(self) -> list[tuple[str, str]]:
        return [(s, tf) for s in self.symbols for tf in self.timeframes]

    def to_dict(self) -> dict:
        """JSON-shaped (lists, ISO dates), so a saved workload equals a live one."""
        return {"symbols": list(self.symbols), "timeframes": list(self.timeframes),
                "start": self.start.isoformat(), "end": self.end.isoformat()}


def _run_job(symbol: str, timeframe: str, workload: Workload, client: AggregatesSource, engine: Engine,
             fixes: FixSet, timer: StageTimer, committer: GroupCommitter | None = None,
             missing: dict | None = None) -> JobRecord:
    """One job with its symbol's settings: fetch, then hand the bars over to the committer, or write bars, compute
    and write features and mark the days done itself; with ``db.stream`` the same, one window of days at a time.
    A symbol outside the rollout runs the baseline path of every per-symbol fix (its own writes, not the
    committer's). ``record.code_path`` says what it ran."""
    settings = fixes.settings(symbol)
    record = JobRecord(symbol, timeframe)
    db = DbRetry(engine, enabled=settings.db_retry)
    job = _Job(workload, parse_timeframe(timeframe), engine, record, db, timer.child(job=(symbol, timeframe)))
    handover = None
    ranges = (missing or {}).get((symbol, timeframe))
    group = committer if settings.group_commit else None
    try:
        if settings.stream:
            job.stream(client, settings, group, ranges)
        else:
            record.code_path.update(window_days=None)
            fetched, todo = job.fetch(client, settings.page_limit, settings.missing_only, ranges)
            if group is not None and job.whole(todo):  # features need no read-back
                handover = Handover(record, fetched.bars, todo or [])
            else:
                writer = job.writer(settings)
                bars = job.store_bars(fetched.bars, todo, writer, settings.batch_size,
                                      skip_stored=settings.missing_only)
                job.store_features(bars, todo, settings.feature_impl)
    except AuthError:
        raise
    except Exception as exc:  # a failed job is recorded, not fatal: the run reports its success rate
        record.error = describe_error(exc)
    job.finish(timer)
    if handover is not None:
        committer.hand_over(handover)  # after finish: from then on the committer adds to the record
    return record


WINDOW_BARS = 20_000
"""``db.stream``: a window holds at most this many bars (a 24-hour market's; a stock's extended session ~60%)."""
_BARS_PER_DAY = {"second": 86_400, "minute": 1_440, "hour": 24}


def window_days(tf: Timeframe, window_bars: int = WINDOW_BARS) -> int:
    """Days per window for ``tf``: as many as hold at most ``window_bars`` bars on a market open all day
    (1m: 13 days, 5m: 69, 15m: 208, 1h: 833; a year of daily bars is one window)."""
    per_day = -(-_BARS_PER_DAY.get(tf.timespan, 1) // tf.multiplier)
    return max(1, window_bars // per_day)


def whole_range_timeframes(workload: Workload, stream: bool) -> tuple[str, ...]:
    """The workload's timeframes whose jobs ask for the whole range at once: all of them, or with ``db.stream`` those
    whose window covers the range. Only those can take bars from the run's shared fetches; counting the others as
    takers kept a symbol's minutes (a year of 1m bars under ``db.stream``) cached for a job that never came."""
    days = (workload.end - workload.start).days + 1
    return tuple(tf for tf in workload.timeframes if not stream or window_days(parse_timeframe(tf)) >= days)


def day_windows(start: date, end: date, days: int) -> list[tuple[date, date]]:
    """[start, end] cut into consecutive ranges of ``days`` days (the last one shorter), oldest first."""
    out, first = [], start
    while first <= end:
        last = min(end, first + timedelta(days=days - 1))
        out.append((first, last))
        first = last + timedelta(days=1)
    return out


M_MMAP_THRESHOLD, M_ARENA_MAX = -3, -8  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD = 256 * 1024
ARENA_MAX = 2


def hand_back_freed_memory() -> bool:
    """Make glibc return a freed window's memory to the system (``db.stream``): blocks of 256 KiB and more (numpy
    arrays, JSON bodies) always get their own mapping, unmapped when freed, instead of glibc raising that threshold
    and keeping them in per-thread heaps; and 2 arenas, not 8 per core, for the worker and committer threads.
    Without it four streamed months of the large preset peaked at 399 MB, not 273. Process-wide; False where it
    does not apply."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_ARENA_MAX, ARENA_MAX))
    except (OSError, AttributeError):  # not glibc
        return False


def history_bars(windows: FeatureWindows = DEFAULT_WINDOWS) -> int:
    """Bars before a bar that its features read: ``vol_regime`` ranks ``regime`` values of ``vol_short``, each a
    window of returns that reaches one close further back (109 with the default windows)."""
    w = windows
    return max(w.regime - 1 + w.vol_short, w.vol_long, w.range, w.trend, w.efficiency)


def with_history(history: pd.DataFrame, bars: pd.DataFrame) -> pd.DataFrame:
    """``history`` (the bars just before) followed by ``bars``: what the features of ``bars`` are computed from."""
    return pd.concat([history, bars], ignore_index=True) if len(history) else bars


def features_after(frame: pd.DataFrame, skip: int, impl: str) -> pd.DataFrame:
    """The features of ``frame`` without the first ``skip`` rows (history carried over from the window before)."""
    if len(frame) <= skip:
        return pd.DataFrame()
    features = compute_features(frame, impl)
    return features.iloc[skip:].reset_index(drop=True) if skip else features


@dataclass
class _Job:
    """The steps of one (symbol, timeframe) job, each timed in its stage on the job's own timer."""

    workload: Workload
    tf: Timeframe
    engine: Engine
    record: JobRecord
    db: DbRetry
    timer: StageTimer

    @property
    def symbol(self) -> str:
        return self.record.symbol

    def writer(self, settings: PipelineSettings) -> Writer:
        """The job's own writer (not the committer's), noted in its code path."""
        writer = get_writer(settings.writer)
        self.record.code_path.update(writer=writer.name, batch_size=settings.batch_size,
                                     features=settings.feature_impl, db_retry=self.db.enabled)
        return writer

    def fetch(self, client: AggregatesSource, page_limit: int, missing_only: bool,
              ranges: Ranges | None) -> tuple[FetchResult, Ranges | None]:
        """The job's bars: the whole range, or (``missing_only``) the days not stored yet, with those day ranges."""
        w, tf = self.workload, self.tf
        with self.timer.stage("api"):
            self.record.code_path.update(page_limit=page_limit, missing_only=missing_only)
            if missing_only:
                fetched, todo = fetch_missing(client, self.engine, self.symbol, tf, w.start, w.end, limit=page_limit,
                                              ranges=ranges, stats=self.record)
            else:
                fetched, todo = client.get_aggregates(self.symbol, tf.multiplier, tf.timespan, w.start, w.end,
                                                      limit=page_limit, stats=self.record), None
        return fetched, todo

    def fetch_window(self, client: AggregatesSource, first: date, last: date, page_limit: int) -> pd.DataFrame:
        """The bars of one window of days (sorted, one per time, as the client returns them)."""
        tf = self.tf
        with self.timer.stage("api"):
            return client.get_aggregates(self.symbol, tf.multiplier, tf.timespan, first, last, limit=page_limit,
                                         stats=self.record).bars

    def whole(self, todo: Ranges | None) -> bool:
        """Whether the fetch covered the workload's whole range (its bars are all the features need)."""
        return todo is None or todo == [(self.workload.start, self.workload.end)]

    def store_bars(self, bars: pd.DataFrame, todo: Ranges | None, writer: Writer, batch_size: int | None, *,
                   skip_stored: bool) -> pd.DataFrame:
        """Write the fetched bars; return what features are computed from: those bars, or after a partial fetch
        (``todo``) every stored bar of the range (rolling windows need them)."""
        w = self.workload
        with self.timer.stage("db"):
            self.record.rows += self.db.write_bars(writer, self.symbol, self.record.timeframe, bars, batch_size,
                                                   skip_stored=skip_stored)
            return bars if todo is None else self.db.run(
                lambda: feature_input(self.engine, self.symbol, self.tf, w.start, w.end, todo))

    def store_features(self, bars: pd.DataFrame, todo: Ranges | None, impl: str,
                       history: pd.DataFrame | None = None) -> None:
        """Compute the features of ``bars`` (after ``history``, the bars before them) and write them, then mark the
        fetched day ranges done (the last step)."""
        skip = 0 if history is None else len(history)
        with self.timer.stage("compute"):
            features = features_after(bars if history is None else with_history(history, bars), skip, impl)
        with self.timer.stage("db"):
            self.record.feature_rows += self.db.run(
                lambda: write_features(self.engine, self.symbol, self.record.timeframe, features))
            if todo:
                self.db.run(lambda: mark_done(self.engine, self.symbol, self.tf, todo))

    def stream(self, client: AggregatesSource, settings: PipelineSettings, committer: GroupCommitter | None,
               ranges: Ranges | None) -> None:
        """``db.stream``: the job in windows of days, each fetched, written and turned into features before the
        next is fetched, so a job holds one window (plus the history its features need), whatever its range."""
        w, tf = self.workload, self.tf
        days = window_days(tf)
        self.record.code_path.update(page_limit=settings.page_limit, missing_only=settings.missing_only,
                                     window_days=days)
        todo = None
        if settings.missing_only:
            with self.timer.stage("db"):
                todo = ranges if ranges is not None else self.db.run(
                    lambda: missing_ranges(self.engine, self.symbol, tf.name, w.start, w.end))
        if self.whole(todo):
            self._stream_whole(client, settings, committer, days, coverage=todo is not None)
        elif todo:
            self._stream_resume(client, settings, todo, days)

    def _stream_whole(self, client: AggregatesSource, settings: PipelineSettings, committer: GroupCommitter | None,
                      days: int, *, coverage: bool) -> None:
        """Every window of the range: features from its bars after the last ``history_bars()`` of the window
        before (so they equal the whole range's), the window's days recorded done with it (``coverage``)."""
        w, keep = self.workload, history_bars()
        writer = None if committer is not None else self.writer(settings)
        history = empty_bars()
        for first, last in day_windows(w.start, w.end, days):
            bars = self.fetch_window(client, first, last, settings.page_limit)
            done = [(first, last)] if coverage else []
            if committer is not None:
                committer.hand_over(Handover(self.record, bars, done, history))
            else:
                self.store_bars(bars, None, writer, settings.batch_size, skip_stored=settings.missing_only)
                self.store_features(bars, done, settings.feature_impl, history)
            history = with_history(history, bars).iloc[-keep:].reset_index(drop=True)

    def _stream_resume(self, client: AggregatesSource, settings: PipelineSettings, todo: Ranges, days: int) -> None:
        """Part of the range stored already: write the missing days' bars window by window, then recompute the
        features of the whole range from the stored bars window by window (bars after a gap change theirs),
        then mark the fetched days done, last, as the unstreamed resume does."""
        w, keep = self.workload, history_bars()
        writer = self.writer(settings)
        for first, last in todo:
            for a, b in day_windows(first, last, days):
                bars = self.fetch_window(client, a, b, settings.page_limit)
                self.store_bars(bars, None, writer, settings.batch_size, skip_stored=True)
        history = empty_bars()
        for a, b in day_windows(w.start, w.end, days):
            with self.timer.stage("db"):
                bars = self.db.run(lambda: stored_bars(self.engine, self.symbol, self.tf.name, a, b))  # noqa: B023
            self.store_features(bars, None, settings.feature_impl, history)
            history = with_history(history, bars).iloc[-keep:].reset_index(drop=True)
        with self.timer.stage("db"):
            self.db.run(lambda: mark_done(self.engine, self.symbol, self.tf, todo))

    def finish(self, run_timer: StageTimer) -> None:
        """Close the record: the DB retries and stage seconds of this job added to it (committer threads may be
        adding theirs), its intervals added to the run's."""
        with RECORD_LOCK:
            self.record.retries += self.db.retries
            for stage, seconds in self.timer.busy().items():
                self.record.stages[stage] = self.record.stages.get(stage, 0.0) + seconds
        run_timer.intervals.extend(self.timer.intervals)


def run_backfill(workload: Workload, client: AggregatesSource, engine: Engine, fixes: FixSet | None = None, *,
                 label: str = "baseline", params: dict | None = None, progress: bool = False,
                 instrument: bool = True, time_scale: float = 1.0) -> RunResult:
    """Backfill every job of ``workload`` with the given fixes and return the measured result.

    ``instrument=False`` switches stage timing and resource sampling off (to measure their cost).
    ``time_scale`` is the API's latency scale (the simulator's); the dispatch staggers scale with it.
    """
    fixes = fixes or FixSet()
    settings = fixes.settings()
    apply_schema(engine)
    set_indexes(engine, settings.indexes)
    if settings.stream:
        hand_back_freed_memory()
    started_at = datetime.now(UTC).isoformat()
    timer = StageTimer(enabled=instrument)
    jobs = workload.jobs()
    whole = whole_range_timeframes(workload, settings.stream)
    minute_windows = 0 if "1m" in whole or "1m" not in workload.timeframes else len(
        day_windows(workload.start, workload.end, window_days(parse_timeframe("1m"))))
    client = share_fetches(client, workload.symbols, whole, workload.start, workload.end,
                           grouped_daily=settings.grouped_daily, derived=settings.derived_timeframes,
                           page_limit=settings.page_limit, minute_windows=minute_windows)
    bar = tqdm(total=len(jobs), desc=label, unit="job", disable=not progress, leave=False)

    missing = None
    if settings.missing_only:  # one coverage query for the in-rollout jobs instead of one per job
        rolled_out = [job for job in jobs if fixes.in_rollout(job[0])]
        with timer.stage("db"):
            missing = DbRetry(engine, enabled=settings.db_retry).run(
                lambda: missing_ranges_many(engine, rolled_out, workload.start, workload.end))
    committer = (GroupCommitter(engine, timer, settings.feature_impl, settings.db_retry,
                                max_backlog_rows=MAX_BACKLOG_ROWS if settings.stream else None).start()
                 if settings.group_commit else None)  # run-wide settings: the in-rollout jobs' own

    def one(job: tuple[str, str]) -> JobRecord:
        record = _run_job(*job, workload, client, engine, fixes, timer, committer, missing)
        bar.update()
        return record

    connection_meter.reset()
    sampler = ResourceSampler(engine if instrument else None, enabled=instrument).start()
    try:
        records = Dispatch.from_settings(settings, time_scale).run(jobs, one)
    finally:
        if committer is not None:
            committer.close()
        bar.close()
        sampler.stop()
    wall = time.perf_counter() - timer.origin
    pool = {"pool_checkouts_peak": connection_meter.peak, "pool_checkouts": connection_meter.timeline(timer.origin)}
    return RunResult(
        run_id=uuid.uuid4().hex[:12], label=label, started_at=started_at, wall_seconds=wall,
        params={"workload": workload.to_dict(), "fixes": fixes.spec, "rollout": fixes.rollout,
                "run_wide": list(fixes.run_wide()), "settings": asdict(settings), **(params or {})},
        environment=collect_environment(engine), jobs=records, intervals=list(timer.intervals),
        resources={**sampler.summary.to_dict(), **pool},
    )
