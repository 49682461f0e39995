"""A run's result as data: per-job records, per-stage totals and shares, parameters and environment.

Saved as versioned JSON (``schema_version``) so results from different commits can be compared.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from perflab.errors import InputError
from perflab.measure.timing import STAGES, Interval, busy_seconds, wall_attribution

SCHEMA_VERSION = 1
JSON_SCHEMA = Path(__file__).with_name("run_result.schema.json")  # the same contract for other tools


def finite(obj):
    """``obj`` with NaN/inf floats replaced by None, so the JSON is standard (and PostgreSQL accepts it)."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


@dataclass
class RequestStats:
    """What fetching cost: requests, retries, 429s, timeouts, bytes and each request's latency in seconds.

    The client adds to the one it is given as requests happen, so a failed fetch's cost is counted before its
    error propagates; a :class:`JobRecord` is one, so a job's record is what its fetch counts into.
    """

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    timeouts: int = 0
    bytes_received: int = 0
    latencies: list[float] = field(default_factory=list)

    def merge(self, other: RequestStats) -> None:
        """Add ``other``'s counts and latencies to these."""
        self.requests += other.requests
        self.retries += other.retries
        self.rate_limited += other.rate_limited
        self.timeouts += other.timeouts
        self.bytes_received += other.bytes_received
        self.latencies.extend(other.latencies)


@dataclass
class _JobWork:
    """Which job and what it moved: the fields a :class:`JobRecord` starts with."""

    symbol: str
    timeframe: str
    stages: dict[str, float] = field(default_factory=dict)
    rows: int = 0
    feature_rows: int = 0


@dataclass
class JobRecord(RequestStats, _JobWork):
    """One (symbol, timeframe) job: stage seconds, what it moved, what its requests cost, and its error if it failed.

    Fields come in the saved JSON's order: :class:`_JobWork`'s, then :class:`RequestStats`', then these.
    """

    error: str | None = None
    code_path: dict = field(default_factory=dict)
    """What the job ran (writer, features, page limit, retry...): shows which side of a rollout it was on."""

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class RunResult:
    """Everything one measured run produced. Shares are of busy stage time unless named ``wall_``."""

    run_id: str
    label: str
    started_at: str
    wall_seconds: float
    params: dict
    environment: dict
    jobs: list[JobRecord]
    intervals: list[tuple[str, float, float]] = field(default_factory=list)
    server_stats: dict = field(default_factory=dict)
    resources: dict = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    spans: list[dict] = field(default_factory=list)
    """The intervals with where they ran (thread, jobs, requests: :meth:`Interval.span`), in the same order; empty
    for runs saved before spans were recorded. What the trace and the critical path read."""

    def __post_init__(self) -> None:
        if not self.spans and self.intervals and all(isinstance(i, Interval) for i in self.intervals):
            self.spans = [i.span() for i in self.intervals]

    @property
    def stage_seconds(self) -> dict[str, float]:
        """Busy seconds per stage summed over jobs (may exceed wall time when stages overlap)."""
        return busy_seconds(self.intervals)

    @property
    def stage_shares(self) -> dict[str, float]:
        busy = self.stage_seconds
        total = sum(busy.values()) or 1.0
        return {k: v / total for k, v in busy.items()}

    @property
    def wall_stage_seconds(self) -> dict[str, float]:
        """Wall-clock seconds attributed to each stage (overlaps split), plus ``idle``."""
        return wall_attribution(self.intervals, self.wall_seconds)

    @property
    def rows_written(self) -> int:
        return sum(j.rows for j in self.jobs)

    @property
    def db_records_per_s(self) -> float:
        """Bars plus feature rows written per wall-clock second attributed to the db stage.

        Wall attribution, not busy time: with parallel workers busy seconds add up across threads (and
        include waiting for a pooled connection), which would understate the throughput the pipeline got.
        """
        seconds = self.wall_stage_seconds.get("db", 0.0)
        records = self.rows_written + sum(j.feature_rows for j in self.jobs)
        return records / seconds if seconds else float("nan")

    @property
    def requests(self) -> int:
        return sum(j.requests for j in self.jobs)

    @property
    def failures(self) -> int:
        return sum(not j.ok for j in self.jobs)

    @property
    def success_rate(self) -> float:
        return 1.0 - self.failures / len(self.jobs) if self.jobs else 1.0

    def metrics(self) -> dict[str, float]:
        """Headline metrics, all derived from what this run recorded."""
        lat = np.array([x for j in self.jobs for x in j.latencies]) if self.requests else np.array([np.nan])
        busy = self.stage_seconds
        symbols = {j.symbol for j in self.jobs}
        return {
            "wall_seconds": self.wall_seconds,
            "jobs": len(self.jobs),
            "failures": self.failures,
            "success_rate": self.success_rate,
            "rows_written": self.rows_written,
            "requests": self.requests,
            "retries": sum(j.retries for j in self.jobs),
            "rate_limited": sum(j.rate_limited for j in self.jobs),
            "timeouts": sum(j.timeouts for j in self.jobs),
            "bytes_received": sum(j.bytes_received for j in self.jobs),
            "api_latency_avg_s": float(np.nanmean(lat)),
            "api_latency_p50_s": float(np.nanpercentile(lat, 50)),
            "api_latency_p95_s": float(np.nanpercentile(lat, 95)),
            "api_latency_p99_s": float(np.nanpercentile(lat, 99)),
            "db_records_per_s": self.db_records_per_s,
            "compute_s_per_symbol": busy["compute"] / len(symbols) if symbols else float("nan"),
            "cpu_avg_pct": self.resources.get("cpu_avg_pct", float("nan")),
            "cpu_peak_pct": self.resources.get("cpu_peak_pct", float("nan")),
            "rss_peak_mb": self.resources.get("rss_peak_mb", float("nan")),
            "db_connections_peak": self.resources.get("db_connections_peak", float("nan")),
            "pool_checkouts_peak": self.resources.get("pool_checkouts_peak", float("nan")),
            "failed_symbols": len({j.symbol for j in self.jobs if not j.ok}),
        }

    def breakdown(self) -> pd.DataFrame:
        """The plan's "Polygon API: 312.1s (64%)" table: busy seconds and share per stage."""
        busy, shares = self.stage_seconds, self.stage_shares
        return pd.DataFrame(
            {"stage": list(STAGES), "seconds": [busy[s] for s in STAGES], "share": [shares[s] for s in STAGES]}
        ).set_index("stage")

    def jobs_frame(self) -> pd.DataFrame:
        rows = []
        for j in self.jobs:
            d = {k: v for k, v in asdict(j).items() if k not in ("stages", "latencies", "code_path")}
            d.update({f"{s}_s": j.stages.get(s, 0.0) for s in STAGES})
            rows.append(d)
        return pd.DataFrame(rows)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["summary"] = {"stage_seconds": self.stage_seconds, "stage_shares": self.stage_shares,
                        "wall_stage_seconds": self.wall_stage_seconds, "metrics": self.metrics()}
        return finite(d)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1, default=str, allow_nan=False))
        return path

    @classmethod
    def from_dict(cls, d: dict) -> RunResult:
        _check_version(d, "run result")
        missing = [k for k in ("run_id", "label", "wall_seconds", "jobs", "params") if k not in d]
        if missing:
            raise InputError(f"run result lacks {', '.join(missing)}: is it a perflab run JSON?")
        d = {k: v for k, v in d.items() if k not in ("summary", "kind")}
        d["jobs"] = [JobRecord(**j) for j in d["jobs"]]
        d["intervals"] = [tuple(i) for i in d.get("intervals", [])]
        return cls(**d)

    @classmethod
    def load(cls, path: str | Path) -> RunResult:
        return cls.from_dict(_read_json(path))

    # What went wrong, in words: the CLI prints these lines, notebooks can show them.

    def failure_summary(self) -> list[str]:
        """One line per distinct reason jobs failed, with its count, most frequent first, e.g.
        ``9 of 9 jobs failed: ConnectionError: cannot reach the API at http://127.0.0.1:1: connection refused``."""
        counts = Counter(failure_reason(j.error) for j in self.jobs if j.error is not None)
        return [f"{n} of {len(self.jobs)} jobs failed: {reason}" for reason, n in counts.most_common()]

    def empty_symbols(self) -> list[str]:
        """Symbols whose every job asked the API, succeeded and got no bars: most likely tickers the API does not know
        (Polygon answers an unknown ticker with status OK and no results)."""
        jobs: dict[str, list[JobRecord]] = {}
        for j in self.jobs:
            jobs.setdefault(j.symbol, []).append(j)
        return [symbol for symbol, js in jobs.items() if any(j.requests for j in js)
                and all(j.ok and j.rows == 0 and j.feature_rows == 0 for j in js)]

    def warnings(self) -> list[str]:
        """``APPL: no bars 2024-03-04..2024-03-05 — unknown ticker?`` for each of :meth:`empty_symbols`."""
        w = self.params.get("workload")
        span = f"{w['start']}..{w['end']}" if isinstance(w, dict) and "start" in w else "in the range"
        return [f"{symbol}: no bars {span} — unknown ticker?" for symbol in self.empty_symbols()]


_REQUEST_PATH = re.compile(r"/v2/aggs/ticker/\S*?(?=:\s|\s|$)")


def failure_reason(error: str) -> str:
    """A job's error without the request path (it names the job, not the cause), so alike failures group together."""
    return _REQUEST_PATH.sub("/v2/aggs/...", error)


def _read_json(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"no run result at {path}") from None
    except ValueError:
        raise InputError(f"{path} is not a run result (invalid JSON)") from None
    if not isinstance(data, dict):
        raise InputError(f"{path} is not a run result (expected a JSON object)")
    return data


def _check_version(d: dict, what: str) -> None:
    version = d.get("schema_version")
    if version is None:
        raise InputError(f"{what} has no schema_version: it was not written by perflab")
    if version != SCHEMA_VERSION:
        raise InputError(f"{what} has schema_version {version!r}; this perflab reads {SCHEMA_VERSION}: "
                         "re-run it with this version of perflab")


WALL_SUFFIX = " (wall)"
"""A stage name with this suffix means its wall-clock attribution, not its busy seconds."""


@dataclass
class RunSet:
    """Repeated runs of one configuration: medians and spread instead of single numbers."""

    label: str
    runs: list[RunResult]

    def values(self, metric: str) -> list[float]:
        """One number per run: a stage (``api``/``db``/``compute``: busy seconds; ``api (wall)``...: wall-clock
        attribution) or a metric name."""
        if metric in STAGES:
            return [r.stage_seconds[metric] for r in self.runs]
        if metric.endswith(WALL_SUFFIX) and metric.removesuffix(WALL_SUFFIX) in STAGES:
            return [r.wall_stage_seconds[metric.removesuffix(WALL_SUFFIX)] for r in self.runs]
        return [float("nan") if r.metrics()[metric] is None else r.metrics()[metric] for r in self.runs]

    def median(self, metric: str) -> float:
        return float(np.median(self.values(metric)))

    def spread(self, metric: str) -> tuple[float, float]:
        v = self.values(metric)
        return float(min(v)), float(max(v))

    @property
    def params(self) -> dict:
        return self.runs[0].params

    @property
    def environment(self) -> dict:
        return self.runs[0].environment

    def to_dict(self) -> dict:
        return {"schema_version": SCHEMA_VERSION, "kind": "runset", "label": self.label,
                "runs": [r.to_dict() for r in self.runs]}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1, default=str, allow_nan=False))
        return path

    @classmethod
    def load(cls, path: str | Path) -> RunSet:
        """Load a run set, or a single run result as a set of one."""
        d = _read_json(path)
        _check_version(d, f"{path}")
        if d.get("kind") == "runset":
            return cls(d["label"], [RunResult.from_dict(r) for r in d["runs"]])
        run = RunResult.from_dict(d)
        return cls(run.label, [run])
