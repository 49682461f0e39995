"""The named fixes of the plan (and a few beyond it), each a small object switchable on its own.

A :class:`Fix` turns :class:`PipelineSettings` into new settings; a :class:`FixSet` is the set of
fixes switched on, parsed from ``--fixes`` or ``PERFLAB_FIXES`` (``none``, ``all``, ``a,b``,
``all,-a`` for all but one), gated by the plan's master switch ``ENABLE_PHASE3_OPTIMIZATION`` and
optionally rolled out to a stable, hash-chosen fraction of symbols. A rollout splits only the
per-symbol fixes (symbols outside it run the baseline path for them); a run-wide fix changes something
every job shares (the client, the dispatch, the indexes, the process pool) and so applies to all symbols.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from perflab.api.client import PolygonClient, RetryPolicy
from perflab.api.inflight import AimdPolicy, InflightLimit
from perflab.api.ratelimit import AdaptivePacer
from perflab.errors import InputError
from perflab.measure.plan import PATH_CLAIMS


@dataclass(frozen=True)
class PipelineSettings:
    """Every knob the pipeline has; the defaults are the plan's slow baseline."""

    backoff: bool = False
    batch_by_timespan: bool = False
    api_workers: int = 1
    max_inflight: int = 0  # api.concurrency: requests in flight at most under the AIMD limit (0: off)
    pacing: bool = False
    page_limit: int = 5000
    missing_only: bool = False
    indexes: bool = False
    writer: str = "orm_row"
    batch_size: int | None = None
    feature_impl: str = "loop"
    group_commit: bool = False
    breaker: bool = False
    db_retry: bool = False
    stream: bool = False
    grouped_daily: bool = False  # api.grouped_daily: the run's 1d bars from one grouped request per weekday
    derived_timeframes: bool = False  # api.derived_timeframes: intraday bars folded from each symbol's 1m bars


@dataclass(frozen=True)
class Fix:
    """One fix: its name, the plan's path it belongs to, what it does, and how it changes the settings.

    ``per_symbol``: a rollout can give it to some symbols only (the others run the baseline path for it);
    ``False``: it changes something the whole run shares, so it applies to every symbol or none.
    """

    name: str
    path: str
    summary: str
    apply: Callable[[PipelineSettings], PipelineSettings]
    per_symbol: bool = True


def _set(**changes) -> Callable[[PipelineSettings], PipelineSettings]:
    return lambda s: replace(s, **changes)


FIXES: dict[str, Fix] = {
    f.name: f
    for f in (
        Fix("api.backoff", "A", "retry 429/5xx with exponential backoff + jitter (tenacity)", _set(backoff=True),
            per_symbol=False),
        Fix("api.batch", "A", "group requests by timespan and stagger their starts",
            _set(batch_by_timespan=True), per_symbol=False),
        Fix("api.parallel", "A", "N concurrent API workers sharing one connection pool",
            _set(api_workers=4), per_symbol=False),
        Fix("api.concurrency", "A", "up to 64 requests in flight under an adaptive (AIMD) limit: the rate limit at "
            "any latency", _set(max_inflight=64), per_symbol=False),
        Fix("api.pacing", "A", "client-side adaptive token bucket: reach the rate limit with few 429s",
            _set(pacing=True), per_symbol=False),
        Fix("api.big_pages", "A", "ask for limit=50000 to cut the number of pages", _set(page_limit=50_000)),
        Fix("api.grouped_daily", "A", "the run's 1d bars from grouped daily requests, one per weekday, shared by "
            "all its 1d jobs", _set(grouped_daily=True), per_symbol=False),
        Fix("api.derived_timeframes", "A", "5m/15m/30m/1h/4h bars folded from the symbol's 1m bars, fetched once "
            "per symbol", _set(derived_timeframes=True), per_symbol=False),
        Fix("api.missing_only", "A", "fetch only the ranges not already in the database", _set(missing_only=True)),
        Fix("db.indexes", "B", "the plan's phase-3 indexes", _set(indexes=True), per_symbol=False),
        Fix("db.bulk", "B", "one bulk INSERT per batch instead of add+flush per row", _set(writer="orm_bulk")),
        Fix("db.batch_size", "B", "write in batches of the size the sweep found best", _set(batch_size=5000)),
        Fix("db.copy", "B", "binary COPY into the table (staging merge where the range overlaps)",
            _set(writer="copy_binary")),
        Fix("db.group_commit", "B", "one thread computes and stores many jobs per transaction while workers fetch",
            _set(group_commit=True)),
        Fix("db.stream", "B", "a job in windows of days, each fetched, written and featured before the next: "
            "memory does not grow with the range", _set(stream=True)),
        Fix("compute.vectorized", "C", "pandas/numpy features over whole arrays", _set(feature_impl="vectorized")),
        Fix("compute.parallel", "C", "vectorized features spread over a process pool",
            _set(feature_impl="parallel"), per_symbol=False),
        Fix("api.breaker", "4", "circuit breaker: stop calling a failing API, probe after a cool-down, resume alone",
            _set(breaker=True), per_symbol=False),
        Fix("db.retry", "4", "a write that loses its DB connection waits for the DB and writes what is missing",
            _set(db_retry=True)),
    )
}

MASTER_SWITCH = "ENABLE_PHASE3_OPTIMIZATION"
FIXES_ENV = "PERFLAB_FIXES"


def stable_fraction(key: str) -> float:
    """A number in [0, 1) fixed by ``key`` alone: the same symbol always lands in the same rollout bucket."""
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _truthy(value: str | None) -> bool | None:
    if value is None or value == "":
        return None
    return value.strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class FixSet:
    """The fixes switched on, plus an optional rollout fraction for the per-symbol ones."""

    names: frozenset[str] = field(default_factory=frozenset)
    rollout: float = 1.0

    @classmethod
    def parse(cls, spec: str | Iterable[str] | None, rollout: float = 1.0) -> FixSet:
        """Parse ``none``, ``all``, ``api.backoff,db.copy``, ``all,-db.copy`` or ``api.*``."""
        if not 0.0 <= rollout <= 1.0:
            raise InputError(f"rollout {rollout} must be between 0 and 1")
        if spec is None:
            return cls(frozenset(), rollout)
        parts = [p.strip() for p in (spec.split(",") if isinstance(spec, str) else spec) if p.strip()]
        names: set[str] = set()
        for part in parts:
            minus = part.startswith("-")
            token = part[1:] if minus else part
            if token == "none":
                chosen: set[str] = set()
                names.clear()
            elif token == "all":
                chosen = set(FIXES)
            elif token.endswith(".*"):
                chosen = {n for n in FIXES if n.startswith(token[:-1])}
                if not chosen:
                    raise InputError(f"no fix matches {token!r}: known fixes are {', '.join(FIXES)}")
            elif token in FIXES:
                chosen = {token}
            else:
                raise InputError(f"unknown fix {token!r}: use none, all, or any of {', '.join(FIXES)}")
            names = names - chosen if minus else names | chosen
        return cls(frozenset(names), rollout)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, default: str = "none") -> FixSet:
        """Read ``PERFLAB_FIXES`` (and ``PERFLAB_ROLLOUT``); ``ENABLE_PHASE3_OPTIMIZATION=0`` turns all off."""
        env = os.environ if env is None else env
        if _truthy(env.get(MASTER_SWITCH)) is False:
            return cls()
        rollout = float(env.get("PERFLAB_ROLLOUT", "1") or 1)
        spec = env.get(FIXES_ENV) or ("all" if _truthy(env.get(MASTER_SWITCH)) else default)
        return cls.parse(spec, rollout)

    @property
    def spec(self) -> str:
        """The canonical text form, in registry order (``none`` when empty)."""
        ordered = [n for n in FIXES if n in self.names]
        return ",".join(ordered) if ordered else "none"

    def __contains__(self, name: str) -> bool:
        return name in self.names

    def in_rollout(self, symbol: str) -> bool:
        """Whether the per-symbol fixes apply to ``symbol`` under the rollout fraction (stable hash)."""
        return self.rollout >= 1.0 or stable_fraction(symbol) < self.rollout

    def run_wide(self) -> tuple[str, ...]:
        """The enabled fixes a rollout cannot split (registry order): they apply to every symbol of the run."""
        return tuple(name for name, fix in FIXES.items() if name in self.names and not fix.per_symbol)

    def settings(self, symbol: str | None = None) -> PipelineSettings:
        """Baseline settings with every enabled fix applied in registry order.

        With a symbol, per-symbol fixes apply only if the symbol is in the rollout; run-wide fixes
        (the shared client, concurrency, indexes, process pools, breaker) apply to the whole run.
        Without one: the run's settings, with every enabled fix (what in-rollout symbols get).
        """
        settings = PipelineSettings()
        include_per_symbol = symbol is None or self.in_rollout(symbol)
        for name, fix in FIXES.items():
            if name in self.names and (include_per_symbol or not fix.per_symbol):
                settings = fix.apply(settings)
        return settings


def progression(path: str) -> list[FixSet]:
    """The plan's "Expected Progression" for a path: its fix 1, fixes 1+2, fixes 1+2+3, cumulatively."""
    if path not in PATH_CLAIMS:
        raise InputError(f"no fixes for path {path!r}: use one of {', '.join(PATH_CLAIMS)}")
    names = PATH_CLAIMS[path]["fixes"]
    return [FixSet.parse(names[: i + 1]) for i in range(len(names))]


def client_for(settings: PipelineSettings, base_url: str | None = None, *, rate_limit_per_s: float | None = None,
               retry: RetryPolicy | None = None, **kw) -> PolygonClient:
    """The client the settings ask for: backoff (``retry``, default :class:`RetryPolicy`), pacing (toward
    ``rate_limit_per_s``) and the adaptive in-flight limit (``max_inflight``) switched on or off."""
    inflight = InflightLimit(AimdPolicy(max_limit=settings.max_inflight)) if settings.max_inflight else None
    return PolygonClient(base_url, retry=(retry or RetryPolicy()) if settings.backoff else None,
                         pacer=AdaptivePacer(rate_limit_per_s) if settings.pacing else None, inflight=inflight, **kw)
