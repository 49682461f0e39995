"""The backfill scheduler: jobs = symbols x timeframes, each fetched, written and turned into features.

Every stage of every job is timed on one clock; a job that fails is recorded with its reason and the
run goes on, except for a rejected API key, which stops the run at once (nothing else can succeed).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import date, datetime, timezone

from sqlalchemy.engine import Engine
from tqdm.auto import tqdm

from perflab.api.client import PolygonClient
from perflab.api.dispatch import Dispatch
from perflab.api.errors import AuthError
from perflab.db.feature_store import write_features
from perflab.db.migrate import apply_schema, set_indexes
from perflab.db.writers import get_writer
from perflab.errors import PerflabError
from perflab.features import compute_features
from perflab.fixes import FixSet
from perflab.measure.environment import collect_environment
from perflab.measure.results import JobRecord, RunResult
from perflab.measure.timing import StageTimer
from perflab.presets import Preset, check_range, parse_date
from perflab.redact import redact
from perflab.timeframes import parse_timeframe


@dataclass(frozen=True)
class Workload:
    """What to backfill: symbols x timeframes over [start, end] (New York dates, inclusive)."""

    symbols: tuple[str, ...]
    timeframes: tuple[str, ...]
    start: date
    end: date

    @classmethod
    def from_preset(cls, preset: Preset) -> "Workload":
        return cls(preset.symbols, preset.timeframes, preset.start, preset.end)

    @classmethod
    def parse(cls, symbols: Iterable[str], timeframes: Iterable[str], start: str | date, end: str | date,
              today: date | None = None) -> "Workload":
        """Validate user input: known timeframes, real dates, from <= to, not in the future."""
        syms = tuple(s.strip().upper() for s in symbols if s.strip())
        if not syms:
            raise PerflabError("no symbols given: pass at least one, e.g. --symbols AAPL,MSFT")
        tfs = tuple(parse_timeframe(t.strip()).name for t in timeframes if t.strip())
        s, e = parse_date(start, "from"), parse_date(end, "to")
        check_range(s, e, today)
        return cls(syms, tfs, s, e)

    def jobs(self) -> list[tuple[str, str]]:
        return [(s, tf) for s in self.symbols for tf in self.timeframes]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["start"], d["end"] = self.start.isoformat(), self.end.isoformat()
        return d


def _run_job(symbol: str, timeframe: str, workload: Workload, client: PolygonClient, engine: Engine,
             fixes: FixSet, timer: StageTimer) -> JobRecord:
    settings = fixes.settings(symbol)
    tf = parse_timeframe(timeframe)
    record = JobRecord(symbol, timeframe)
    run_timer, timer = timer, StageTimer(origin=timer.origin)
    try:
        with timer.stage("api"):
            fetched = client.get_aggregates(symbol, tf.multiplier, tf.timespan, workload.start, workload.end,
                                            limit=settings.page_limit)
        st = fetched.stats
        record.requests, record.retries, record.rate_limited = st.requests, st.retries, st.rate_limited
        record.timeouts, record.bytes_received, record.latencies = st.timeouts, st.bytes_received, st.latencies
        with timer.stage("db"):
            record.rows = get_writer(settings.writer).write(engine, symbol, timeframe, fetched.bars,
                                                            settings.batch_size)
        with timer.stage("compute"):
            features = compute_features(fetched.bars, settings.feature_impl)
        with timer.stage("db"):
            record.feature_rows = write_features(engine, symbol, timeframe, features)
    except AuthError:
        raise
    except Exception as exc:  # a failed job is recorded, not fatal: the run reports its success rate
        record.error = f"{type(exc).__name__}: {redact(str(exc).strip().splitlines()[0] if str(exc).strip() else exc)}"
    record.stages = timer.busy()
    run_timer.intervals.extend(timer.intervals)
    return record


def run_backfill(workload: Workload, client: PolygonClient, engine: Engine, fixes: FixSet | None = None, *,
                 label: str = "baseline", params: dict | None = None, progress: bool = False,
                 time_scale: float = 1.0) -> RunResult:
    """Backfill every job of ``workload`` with the given fixes and return the measured result.

    ``time_scale`` is the API's latency scale (the simulator's); the dispatch staggers scale with it.
    """
    fixes = fixes or FixSet()
    settings = fixes.settings()
    apply_schema(engine)
    set_indexes(engine, settings.indexes)
    started_at = datetime.now(timezone.utc).isoformat()
    timer = StageTimer()
    jobs = workload.jobs()
    bar = tqdm(total=len(jobs), desc=label, unit="job", disable=not progress, leave=False)

    def one(job: tuple[str, str]) -> JobRecord:
        record = _run_job(*job, workload, client, engine, fixes, timer)
        bar.update()
        return record

    try:
        records = Dispatch.from_settings(settings, time_scale).run(jobs, one)
    finally:
        bar.close()
    wall = time.perf_counter() - timer.origin
    return RunResult(
        run_id=uuid.uuid4().hex[:12], label=label, started_at=started_at, wall_seconds=wall,
        params={"workload": workload.to_dict(), "fixes": fixes.spec, "rollout": fixes.rollout,
                "settings": asdict(settings), **(params or {})},
        environment=collect_environment(engine), jobs=records, intervals=list(timer.intervals),
    )
