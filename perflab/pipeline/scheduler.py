"""The backfill scheduler: jobs = symbols x timeframes, each fetched, written and turned into features.

Every stage of every job is timed on one clock; a job that fails is recorded with its reason and the
run goes on, except for a rejected API key, which stops the run at once (nothing else can succeed).
"""

from __future__ import annotations

import re
import time
import uuid
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime

import pandas as pd
from sqlalchemy.engine import Engine
from tqdm import TqdmWarning

from perflab.api.client import ClientStats, PolygonClient
from perflab.api.errors import AuthError
from perflab.db.coverage import missing_ranges_many
from perflab.db.feature_store import write_features
from perflab.db.migrate import apply_schema, set_indexes
from perflab.db.outage import DbRetry
from perflab.db.pool import connection_meter
from perflab.db.writers import get_writer
from perflab.errors import InputError, PerflabError
from perflab.features import compute_features
from perflab.measure.environment import collect_environment
from perflab.measure.resources import ResourceSampler
from perflab.measure.results import JobRecord, RunResult
from perflab.measure.timing import StageTimer
from perflab.pipeline.committer import GroupCommitter, Handover
from perflab.pipeline.dispatch import Dispatch
from perflab.pipeline.fixes import FixSet
from perflab.pipeline.presets import Preset, check_range, parse_date
from perflab.pipeline.resume import feature_input, fetch_missing, mark_done
from perflab.redact import describe_error
from perflab.timeframes import parse_timeframe

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


def _record_stats(record: JobRecord, st: ClientStats) -> None:
    record.requests, record.retries, record.rate_limited = st.requests, st.retries, st.rate_limited
    record.timeouts, record.bytes_received, record.latencies = st.timeouts, st.bytes_received, st.latencies


def _run_job(symbol: str, timeframe: str, workload: Workload, client: PolygonClient, engine: Engine,
             fixes: FixSet, timer: StageTimer, committer: GroupCommitter | None = None,
             missing: dict | None = None) -> JobRecord:
    """One job with its symbol's settings: a symbol outside the rollout runs the baseline path of every
    per-symbol fix (its own writes, not the committer's). ``record.code_path`` says what it ran."""
    settings = fixes.settings(symbol)
    tf, job = parse_timeframe(timeframe), (symbol, timeframe)
    record = JobRecord(symbol, timeframe)
    db = DbRetry(engine, enabled=settings.db_retry)
    run_timer, timer = timer, timer.child()
    try:
        with timer.stage("api"):
            record.code_path.update(page_limit=settings.page_limit, missing_only=settings.missing_only)
            if settings.missing_only:
                fetched, todo = fetch_missing(client, engine, symbol, tf, workload.start, workload.end,
                                              limit=settings.page_limit, ranges=(missing or {}).get(job))
            else:
                fetched, todo = client.get_aggregates(symbol, tf.multiplier, tf.timespan, workload.start,
                                                      workload.end, limit=settings.page_limit), None
        _record_stats(record, fetched.stats)
        whole = todo is None or todo == [(workload.start, workload.end)]
        if settings.group_commit and committer is not None and whole:  # whole range: features need no read-back
            _finish(record, db, timer, run_timer)  # before the hand-over: from then on the committer adds to it
            committer.hand_over(Handover(record, fetched.bars, todo or []))
            return record
        writer = get_writer(settings.writer)
        record.code_path.update(writer=writer.name, batch_size=settings.batch_size, features=settings.feature_impl,
                                db_retry=db.enabled)
        with timer.stage("db"):
            record.rows = db.write_bars(writer, symbol, timeframe, fetched.bars,
                                        settings.batch_size, skip_stored=settings.missing_only)
            bars = fetched.bars if todo is None else db.run(
                lambda: feature_input(engine, symbol, tf, workload.start, workload.end, todo))
        with timer.stage("compute"):
            features = compute_features(bars, settings.feature_impl) if len(bars) else pd.DataFrame()
        with timer.stage("db"):
            record.feature_rows = db.run(lambda: write_features(engine, symbol, timeframe, features))
            if todo:
                db.run(lambda: mark_done(engine, symbol, tf, todo))
    except AuthError:
        raise
    except Exception as exc:  # a failed job is recorded, not fatal: the run reports its success rate
        if getattr(exc, "stats", None) is not None:  # a failed fetch still cost requests and retries
            _record_stats(record, exc.stats)
        record.error = describe_error(exc)
    return _finish(record, db, timer, run_timer)


def _finish(record: JobRecord, db: DbRetry, timer: StageTimer, run_timer: StageTimer) -> JobRecord:
    record.retries += db.retries
    record.stages = timer.busy()
    run_timer.intervals.extend(timer.intervals)
    return record


def run_backfill(workload: Workload, client: PolygonClient, engine: Engine, fixes: FixSet | None = None, *,
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
    started_at = datetime.now(UTC).isoformat()
    timer = StageTimer(enabled=instrument)
    jobs = workload.jobs()
    bar = tqdm(total=len(jobs), desc=label, unit="job", disable=not progress, leave=False)

    missing = None
    if settings.missing_only:  # one coverage query for the in-rollout jobs instead of one per job
        rolled_out = [job for job in jobs if fixes.in_rollout(job[0])]
        with timer.stage("db"):
            missing = DbRetry(engine, enabled=settings.db_retry).run(
                lambda: missing_ranges_many(engine, rolled_out, workload.start, workload.end))
    committer = (GroupCommitter(engine, timer, settings.feature_impl, settings.db_retry).start()
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
    return RunResult(
        run_id=uuid.uuid4().hex[:12], label=label, started_at=started_at, wall_seconds=wall,
        params={"workload": workload.to_dict(), "fixes": fixes.spec, "rollout": fixes.rollout,
                "run_wide": list(fixes.run_wide()), "settings": asdict(settings), **(params or {})},
        environment=collect_environment(engine), jobs=records, intervals=list(timer.intervals),
        resources={**sampler.summary.to_dict(), "pool_checkouts_peak": connection_meter.peak},
    )
