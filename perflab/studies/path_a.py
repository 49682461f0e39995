"""Path A (API) study for notebook 03: the plan's fixes one step at a time, each measured on the same workload.

Every step fetches the lab's workload through the same client and dispatch code as the backfill (API
stage only, :mod:`perflab.studies.path_a`), ``repeats`` times; tables report medians with the min-max spread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from perflab.api.client import AggregatesSource
from perflab.api.errors import AuthError, PolygonError
from perflab.measure.results import RequestStats, RunResult
from perflab.measure.timing import STAGES
from perflab.pipeline.dispatch import Dispatch, Job
from perflab.pipeline.fixes import FixSet, client_for
from perflab.studies.lab import Lab
from perflab.timeframes import parse_timeframe


@dataclass
class FetchRun:
    """What fetching a workload cost: wall time, the client's counters, failures, and the bars when kept."""

    label: str
    wall_s: float
    stats: RequestStats
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


def fetch_jobs(client: AggregatesSource, jobs: Sequence[Job], start: date, end: date, dispatch: Dispatch, *,
               page_limit: int = 5000, label: str = "", keep_bars: bool = False) -> FetchRun:
    """Fetch every (symbol, timeframe) job over [start, end]; a failed job is recorded, an auth error stops all."""
    total = RequestStats()
    failures: dict[Job, str] = {}
    bars: dict[Job, pd.DataFrame] = {}
    lock = threading.Lock()

    def one(job: Job) -> None:
        tf, stats = parse_timeframe(job[1]), RequestStats()
        try:
            fetched = client.get_aggregates(job[0], tf.multiplier, tf.timespan, start, end, limit=page_limit,
                                            stats=stats)
        except AuthError:
            raise
        except PolygonError as exc:
            with lock:
                failures[job] = f"{type(exc).__name__}: {exc}"
                total.merge(stats)
            return
        with lock:
            total.merge(stats)
            if keep_bars:
                bars[job] = fetched.bars

    began = time.perf_counter()
    dispatch.run(list(jobs), one)
    return FetchRun(label, time.perf_counter() - began, total, failures, bars)


@dataclass(frozen=True)
class Step:
    """One cumulative step of the study: its label, the fixes on, and what the plan expected of it."""

    label: str
    fixes: str
    plan_expects: str


STEPS = (
    Step("baseline", "none", "API 312.1 s (64%) of 487.2 s"),
    Step("1 backoff", "api.backoff", "429s become retries: ~70% fewer failures"),
    Step("1+2 batch", "api.backoff,api.batch", "+15-20% throughput"),
    Step("1+2+3 parallel", "api.backoff,api.batch,api.parallel", "+40-50% throughput; API 312 -> 187 s (-40%)"),
    Step("+ pacing", "api.backoff,api.batch,api.parallel,api.pacing", "(beyond the plan) the limit with ~0 429s"),
    Step("+ big pages", "api.backoff,api.batch,api.parallel,api.pacing,api.big_pages",
         "(beyond the plan) fewer pages per job"),
)
PATH_A_ALL = STEPS[-1].fixes


def fetch_step(lab: Lab, fixes: str, label: str) -> FetchRun:
    """One API-only run of the lab's workload with ``fixes``; the server's counters for it attached."""
    settings = FixSet.parse(fixes).settings()
    client = client_for(settings, lab.base_url, rate_limit_per_s=lab.preset.rate_limit_per_s)
    wl = lab.workload
    before = lab.server_stats()
    try:
        run = fetch_jobs(client, wl.jobs(), wl.start, wl.end, Dispatch.from_settings(settings, lab.preset.time_scale),
                         page_limit=settings.page_limit, label=label)
    finally:
        client.close()
    after = lab.server_stats()
    run.server = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    return run


def run_steps(lab: Lab, repeats: int = 2) -> pd.DataFrame:
    """Every step ``repeats`` times, interleaved (so drift hits every step alike); one row per (step, repeat).

    Between runs the server's rate-limit bucket is given time to refill (its default burst is a tenth
    of a second's worth), so each run starts alike.
    """
    settle_s = 0.2 if lab.preset.rate_limit_per_s else 0.0
    rows = []
    for rep in range(repeats):
        for step in STEPS:
            time.sleep(settle_s)
            rows.append({"step": step.label, "repeat": rep, **fetch_step(lab, step.fixes, step.label).metrics()})
    return pd.DataFrame(rows)


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Median per step (in study order) plus the min-max spread of the API wall seconds."""
    grouped = runs.drop(columns="repeat").groupby("step", sort=False)
    table = grouped.median()
    table["api_wall_spread_s"] = grouped["api_wall_s"].max() - grouped["api_wall_s"].min()
    return table.loc[[s.label for s in STEPS]]


def plan_vs_measured(table: pd.DataFrame) -> pd.DataFrame:
    """The plan's expectation beside the measured change, each a ratio of medians from this run."""
    def ratio(col: str, a: str, b: str) -> str:
        return f"x{table.loc[b, col] / table.loc[a, col]:.2f} ({a} -> {b})"

    labels = [s.label for s in STEPS]
    measured = [
        f"{table.loc['baseline', 'api_wall_s']:.2f} s API wall, {table.loc['baseline', 'failed_jobs']:.0f} failed jobs",
        (f"failed jobs {table.loc['baseline', 'failed_jobs']:.0f} -> {table.loc['1 backoff', 'failed_jobs']:.0f}; "
         f"429s {table.loc['baseline', 'server_429']:.0f} -> {table.loc['1 backoff', 'server_429']:.0f}"),
        "requests/s " + ratio("requests_per_s", "1 backoff", "1+2 batch"),
        "requests/s " + ratio("requests_per_s", "1+2 batch", "1+2+3 parallel")
        + "; API s " + ratio("api_wall_s", "baseline", "1+2+3 parallel"),
        f"429s {table.loc['1+2+3 parallel', 'server_429']:.0f} -> {table.loc['+ pacing', 'server_429']:.0f}; "
        + "requests/s " + ratio("requests_per_s", "1+2+3 parallel", "+ pacing"),
        "requests " + ratio("requests", "+ pacing", "+ big pages") + "; API s " + ratio("api_wall_s", "+ pacing",
                                                                                          "+ big pages"),
    ]
    return pd.DataFrame({"plan expects": [s.plan_expects for s in STEPS], "measured": measured}, index=labels)


def steps_figure(table: pd.DataFrame, title: str = "Path A, step by step") -> Figure:
    """Four panels per step: API wall seconds, requests/s, 429s (server's count), p50/p95 latency."""
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.6), sharey=True)
    labels = list(table.index)
    panels = [("api_wall_s", "API wall seconds"), ("requests_per_s", "requests / s"),
              ("server_429", "429 responses (server)")]
    for ax, (col, name) in zip(axes, panels):
        ax.barh(labels, table[col], color="#4C72B0")
        ax.set_title(name)
    axes[3].barh(labels, table["latency_p95_ms"], color="#DD8452", label="p95")
    axes[3].barh(labels, table["latency_p50_ms"], color="#4C72B0", label="p50")
    axes[3].set_title("request latency (ms)")
    axes[3].legend(loc="lower right")
    axes[0].invert_yaxis()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


STEP_COLUMNS = {"api_wall_s": "api s", "api_wall_spread_s": "api spread s", "requests": "requests",
                "requests_per_s": "req/s", "served_per_s": "served req/s", "rate_limited_429": "429s (client)",
                "server_429": "429s (server)", "retries": "retries", "failed_jobs": "failed jobs",
                "latency_p50_ms": "p50 ms", "latency_p95_ms": "p95 ms"}
"""The step table's columns as notebook 03 shows them, with units."""

STEP_FORMATS = {"api s": "{:.2f}", "api spread s": "{:.2f}", "requests": "{:.0f}", "req/s": "{:.1f}",
                "served req/s": "{:.1f}", "429s (client)": "{:.0f}", "429s (server)": "{:.0f}", "retries": "{:.0f}",
                "failed jobs": "{:.0f}", "p50 ms": "{:.1f}", "p95 ms": "{:.1f}"}


def steps_display(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`summarise`'s table with unit-named columns (``api s``, ``req/s``, ``p95 ms``), for display."""
    return table[list(STEP_COLUMNS)].rename(columns=STEP_COLUMNS)


BACKFILL_FORMATS = {"wall s": "{:.2f}", "api busy s": "{:.2f}", "db busy s": "{:.2f}", "compute busy s": "{:.3f}",
                    "requests": "{:,.0f}", "failures": "{:,.0f}", "rows": "{:,.0f}", "wall x baseline": "{:.2f}x"}
"""How notebook 03 displays :func:`backfill_table`."""


def backfill_table(baseline: RunResult, fixed: RunResult) -> pd.DataFrame:
    """Baseline and the all-Path-A backfill side by side (one row each): wall and busy seconds per stage, requests,
    failures, rows, and the wall time as a ratio to the baseline's."""
    rows = {r.label: {"wall s": r.wall_seconds, **{f"{k} busy s": r.stage_seconds.get(k, 0.0) for k in STAGES},
                      "requests": r.requests, "failures": r.failures, "rows": r.rows_written,
                      "wall x baseline": r.wall_seconds / baseline.wall_seconds}
            for r in (baseline, fixed)}
    return pd.DataFrame(rows).T


def headline(table: pd.DataFrame, baseline: RunResult, fixed: RunResult) -> dict:
    """Notebook 03's published numbers: the API seconds of the first and last steps of :func:`summarise`'s table,
    the last step's requests/s and 429s, and the whole backfill's wall time as a ratio to the baseline's."""
    first, last = STEPS[0].label, STEPS[-1].label
    return {
        "API s baseline": round(float(table.loc[first, "api_wall_s"]), 2),
        "API s all Path A": round(float(table.loc[last, "api_wall_s"]), 2),
        "req/s all Path A": round(float(table.loc[last, "requests_per_s"]), 1),
        "429s all Path A": int(table.loc[last, "server_429"]),
        "wall x (backfill)": round(fixed.wall_seconds / baseline.wall_seconds, 2),
    }
