"""One measured backfill: the client the fixes ask for, the run, the server's own counts and the breaker's report.

The CLI (``perflab backfill``), the notebooks' :class:`~perflab.studies.lab.Lab` and the resilience study all
run a backfill through :func:`measured_backfill`, so every saved run carries the same fields
(``server_stats``, ``params.preset``, ``params.breaker`` when the breaker is on) and is stored in the history.
Starting a simulator stays with the caller: a notebook keeps one for all its runs, the CLI one per run.
"""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy.engine import Engine

from perflab.api.breaker import BreakerPolicy, GuardedClient, guard
from perflab.api.client import AggregatesSource, RetryPolicy
from perflab.db.engine import get_engine
from perflab.db.migrate import apply_schema, reset_data
from perflab.measure.history import store_run
from perflab.measure.results import RunResult
from perflab.measure.trace import write_trace
from perflab.pipeline.fixes import FixSet, client_for
from perflab.pipeline.presets import Preset
from perflab.pipeline.scheduler import Workload, run_backfill
from perflab.simulator.process import fetch_stats

CLOCK_SLACK_S = 0.01
"""How far the server's uptime may lag our clock between two ``/_stats`` reads (it is rounded to 1 ms)."""


def build_client(fixes: FixSet, base_url: str | None = None, *, rate_limit_per_s: float | None = None,
                 retry: RetryPolicy | None = None, breaker: BreakerPolicy | None = None,
                 **kw) -> AggregatesSource:
    """The client ``fixes`` ask for: backoff (``retry``) and pacing (toward ``rate_limit_per_s``) as they say,
    behind a circuit breaker (``breaker`` policy) when ``api.breaker`` is on."""
    settings = fixes.settings()
    client = client_for(settings, base_url, rate_limit_per_s=rate_limit_per_s, retry=retry, **kw)
    return guard(client, settings.breaker, breaker)


def stats_delta(before: dict, after: dict, gap_s: float) -> dict:
    """What the server counted between two ``/_stats`` reads ``gap_s`` apart on our clock; empty when it has no
    counters (the real API) or restarted in between (its uptime grew less than our clock: its counts began again)."""
    if after.get("uptime_s", 0.0) - before.get("uptime_s", 0.0) < gap_s - CLOCK_SLACK_S:
        return {}
    return {k: after.get(k, 0) - before.get(k, 0) for k in after}


def measured_backfill(workload: Workload, fixes: FixSet, engine: Engine | None = None, *, preset: Preset,
                      base_url: str | None = None, client: AggregatesSource | None = None,
                      label: str | None = None, progress: bool = False, instrument: bool = True,
                      fresh: bool = False, store: bool = True, trace: str | Path | None = None) -> RunResult:
    """Backfill ``workload`` with ``fixes`` against ``base_url`` (or through ``client``, which the caller keeps
    and closes) and return the result with the server's counts over the run and, when the breaker guarded it,
    the breaker's report; ``fresh`` empties the tables first so runs compare, ``store`` adds it to the history.

    ``preset`` supplies the pacing's target rate, the dispatch's time scale and the ``preset`` the run is filed
    under. Without an ``engine``: the configured database, connected once the client has checked its base URL and
    key (so a wrong one is said first, before an embedded server starts). ``trace``: write the run's timeline there
    (a ``.json`` file, or a folder for ``<label>-<run_id>.trace.json``; see :mod:`perflab.measure.trace`).
    """
    own = client is None
    client = client or build_client(fixes, base_url, rate_limit_per_s=preset.rate_limit_per_s)
    try:
        engine = engine or get_engine()
        if fresh:
            apply_schema(engine)
            reset_data(engine)
        before = fetch_stats(client.base_url)
        since = time.monotonic()
        result = run_backfill(workload, client, engine, fixes, label=label or fixes.spec,
                              params={"preset": preset.name}, progress=progress, instrument=instrument,
                              time_scale=preset.time_scale)
        gap_s = time.monotonic() - since
    finally:
        if own:
            client.close()
    result.server_stats = stats_delta(before, fetch_stats(client.base_url), gap_s)
    if isinstance(client, GuardedClient):
        result.params["breaker"] = client.report.to_dict()
    if store:
        store_run(engine, result)
    if trace is not None:
        write_trace(result, trace)
    return result
