"""The backfill on a Dask ``distributed`` cluster: one task per job, run by worker processes, measured as one run.

``cluster="local"`` starts a ``LocalCluster`` of worker processes for the run; ``tcp://host:8786`` joins a running
scheduler (its workers need perflab installed, and ``POLYGON_API_KEY`` in their environment for the real API: the
key is never sent with a task). Each task runs the scheduler's per-job function
(:func:`perflab.pipeline.scheduler._run_job`: the fixes, rollout, resume and writers of the thread path); each worker
process builds its API client and database pool once per run (:func:`_worker_state`, before the clock starts) and
closes the client at the run's end.

Timing across processes: a task's timer starts at ``time.perf_counter()`` minus the wall-clock seconds since the run
began (``time.time()``), so every interval is in seconds from the run's start on the wall clock, whichever process
measured it; its thread is named ``<worker>/<thread>`` and each job's record names its worker
(``code_path["worker"]``). Worker clocks on one machine are one clock; across machines they are as close as NTP keeps
them.

With ``api.pacing`` and a known rate limit, every worker paces from one token bucket in PostgreSQL
(:class:`perflab.db.rate_bucket.SharedPacer`), so the limit holds for the whole cluster. Four fixes do not fit a
cluster and are refused by name: ``db.group_commit`` (a committer thread in one process writing many jobs' rows),
``compute.parallel`` (a process pool inside each worker process; the workers are the parallelism), and
``api.grouped_daily`` and ``api.derived_timeframes`` (fetches shared by the jobs of one process).
``distributed`` is imported here only, when a cluster backfill runs (it costs ~0.7 s to import).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine
from tqdm import tqdm

from perflab.api.breaker import guard
from perflab.api.client import AggregatesSource, PolygonClient
from perflab.db.coverage import missing_ranges_many
from perflab.db.engine import get_engine
from perflab.db.migrate import apply_schema, reset_data, set_indexes
from perflab.db.outage import DbRetry
from perflab.db.rate_bucket import SharedPacer
from perflab.errors import InputError, PerflabError
from perflab.measure.environment import collect_environment
from perflab.measure.history import store_run
from perflab.measure.results import JobRecord, RunResult
from perflab.measure.timing import Interval, StageTimer
from perflab.measure.trace import write_trace
from perflab.pipeline.fixes import FixSet, PipelineSettings, client_for
from perflab.pipeline.measured import stats_delta
from perflab.pipeline.presets import Preset
from perflab.pipeline.scheduler import Workload, _run_job
from perflab.simulator.process import fetch_stats

if TYPE_CHECKING:
    from distributed import Client

LOCAL = "local"
UNSUPPORTED = {
    "db.group_commit": "its committer thread writes many jobs' rows in one process, and a cluster's jobs run in "
                       "many: drop it (--fixes all,-db.group_commit), each job then writes its own rows",
    "api.grouped_daily": "its grouped daily bars are fetched once and shared by the run's jobs in one process, and a "
                         "cluster's jobs run in many: drop it (--fixes all,-api.grouped_daily)",
    "api.derived_timeframes": "a symbol's 1m bars are fetched once and shared by its jobs in one process, and a "
                              "cluster's jobs run in many: drop it (--fixes all,-api.derived_timeframes)",
    "compute.parallel": "it starts a process pool inside each worker process, and the workers already are the "
                        "parallelism: use compute.vectorized instead (--fixes all,-compute.parallel)",
}


def check_cluster(address: str) -> str:
    """``local`` or a scheduler address (``tcp://host:port``, ``tls://...``); anything else is an InputError."""
    address = address.strip()
    if address == LOCAL or (address.partition("://")[0] in ("tcp", "tls", "inproc") and "://" in address):
        return address
    raise InputError(f"--cluster {address!r} is neither 'local' nor a scheduler address: use --cluster local, or "
                     "--cluster tcp://HOST:8786 for a running dask scheduler")


def check_fixes(fixes: FixSet) -> None:
    """Refuse the fixes a cluster cannot run, naming what to do instead."""
    for name, why in UNSUPPORTED.items():
        if name in fixes:
            raise InputError(f"{name} is not supported on a cluster: {why}")


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker builds its client and pool from; one per run (``run_id``), compared to reuse them."""

    run_id: str
    engine_url: str = field(repr=False)  # holds the password: never in a repr, log or error
    base_url: str
    settings: PipelineSettings
    rate_limit_per_s: float | None
    bucket: str


_STATE: dict = {}
_STATE_LOCK = threading.Lock()


def _worker_state(config: WorkerConfig) -> tuple[AggregatesSource, Engine]:
    """This process's client and engine for ``config``: built on its first job of the run, reused by the others
    (a new run closes the previous run's client)."""
    with _STATE_LOCK:
        if _STATE.get("config") != config:
            close_worker_state()
            engine = get_engine(config.engine_url)
            global_limit = config.settings.pacing and config.rate_limit_per_s
            client = client_for(replace(config.settings, pacing=config.settings.pacing and not global_limit),
                                config.base_url)
            if global_limit:
                client.transport.pacer = SharedPacer(engine, config.bucket, config.rate_limit_per_s)
            _STATE.update(config=config, client=guard(client, config.settings.breaker), engine=engine,
                          raw=client, cpu=_cpu_seconds())
        return _STATE["client"], _STATE["engine"]


def close_worker_state() -> None:
    """Close this process's client and its shared pacer's connection (the engine stays, cached per URL)."""
    raw = _STATE.pop("raw", None)
    if raw is not None:
        if isinstance(raw.pacer, SharedPacer):
            raw.pacer.close()
        raw.close()
    _STATE.clear()


def _prepare(config: WorkerConfig) -> None:
    """Run on every worker before the clock starts: imports done, client and pool built."""
    _worker_state(config)


def _worker_report() -> dict:
    """This worker's CPU seconds since it built the run's state, and what its shared pacer did."""
    pacer = _STATE["raw"].pacer if "raw" in _STATE else None
    out = {"cpu_s": _cpu_seconds() - _STATE.get("cpu", 0.0)}
    if isinstance(pacer, SharedPacer):
        out.update(takes=pacer.takes, take_s=pacer.take_seconds, waited_s=pacer.waited_s, cuts=pacer.cuts)
    return out


def _cpu_seconds() -> float:
    import psutil

    times = psutil.Process().cpu_times()
    return times.user + times.system


def _worker_name() -> str:
    from distributed import get_worker

    return str(get_worker().name)


def cluster_job(job: tuple[str, str], workload: Workload, fixes: FixSet, config: WorkerConfig, run_epoch: float,
                missing: dict | None) -> tuple[JobRecord, list[Interval]]:
    """One job as a task: the scheduler's per-job function on this worker's client and pool, its intervals in
    seconds since the run began (``run_epoch``, wall clock) on threads named after the worker."""
    client, engine = _worker_state(config)
    timer = StageTimer(origin=time.perf_counter() - (time.time() - run_epoch))
    record = _run_job(*job, workload, client, engine, fixes, timer, None, missing)
    worker = _worker_name()
    record.code_path["worker"] = worker
    spans = [Interval(tuple(i), thread=f"{worker}/{i.thread}", tid=i.tid, jobs=i.jobs, requests=i.requests)
             for i in timer.intervals]
    return record, spans


def _open(cluster: str | Client, n_workers: int, threads_per_worker: int):
    """``(client, cluster to close or None)`` for ``cluster``: a ``distributed.Client`` as is, ``local`` a new
    ``LocalCluster`` of worker processes, an address the running scheduler there."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise InputError("a cluster backfill needs dask's distributed: pip install 'perflab[cluster]'") from None
    if isinstance(cluster, Client):
        return cluster, None
    if check_cluster(cluster) == LOCAL:
        if n_workers < 1 or threads_per_worker < 1:
            raise InputError(f"a local cluster needs at least 1 worker process and 1 thread each: got {n_workers} "
                             f"workers x {threads_per_worker} threads (fix --cluster-workers)")
        local = LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker, processes=True,
                             dashboard_address=None, silence_logs=logging.WARNING)
        return Client(local), local
    try:
        return Client(cluster, timeout="10s"), None
    except OSError as exc:
        raise PerflabError(f"cannot reach the dask scheduler at {cluster}: {exc}; start one (dask scheduler) or "
                           "use --cluster local") from None


def run_backfill_cluster(workload: Workload, fixes: FixSet | None = None, engine_url: str | None = None,
                         base_url: str | None = None, *, cluster: str | Client = LOCAL, n_workers: int = 2,
                         threads_per_worker: int = 1, rate_limit_per_s: float | None = None,
                         label: str | None = None, params: dict | None = None, progress: bool = False,
                         bucket: str | None = None) -> RunResult:
    """Backfill every job of ``workload`` as one task each on ``cluster`` and return the run as one result.

    ``cluster``: ``local`` (a ``LocalCluster`` of ``n_workers`` processes x ``threads_per_worker`` threads, closed
    at the end), ``tcp://host:port`` or a ``distributed.Client`` the caller keeps. ``rate_limit_per_s`` with
    ``api.pacing``: the whole cluster paces toward it from one bucket (``bucket``, default named after the API's
    URL, so concurrent runs against one API share it too). The result has the thread path's fields; ``resources``
    holds each worker's CPU and pacer figures.
    """
    fixes = fixes or FixSet()
    check_fixes(fixes)
    settings = fixes.settings()
    engine = get_engine(engine_url)
    probe = PolygonClient(base_url)  # a wrong URL or a missing key is said here, before a cluster starts
    probe.close()
    config = WorkerConfig(uuid.uuid4().hex[:12], engine.url.render_as_string(hide_password=False), probe.base_url,
                          settings, rate_limit_per_s, bucket or f"api:{probe.base_url}")
    apply_schema(engine)
    set_indexes(engine, settings.indexes)
    jobs = workload.jobs()
    missing = None
    if settings.missing_only:  # one coverage query for the in-rollout jobs, as the thread path asks
        rolled_out = [job for job in jobs if fixes.in_rollout(job[0])]
        missing = DbRetry(engine, enabled=settings.db_retry).run(
            lambda: missing_ranges_many(engine, rolled_out, workload.start, workload.end))
    client, local = _open(cluster, n_workers, threads_per_worker)
    try:
        client.run(_prepare, config)
        workers = client.scheduler_info()["workers"]
        before = fetch_stats(config.base_url)
        started_at = datetime.now(UTC).isoformat()
        run_epoch, origin = time.time(), time.perf_counter()
        records, intervals = _run_tasks(client, jobs, workload, fixes, config, run_epoch, missing, progress, label)
        wall = time.perf_counter() - origin
        server = stats_delta(before, fetch_stats(config.base_url), wall)
        reports = client.run(_worker_report)
        client.run(close_worker_state)  # after an error, a local cluster ends with its workers; a remote worker
    finally:                            # closes the old state when the next run's config differs
        if local is not None:
            client.close()
            local.close()
    names = {addr: str(info.get("name", addr)) for addr, info in workers.items()}
    per_worker = {names.get(addr, addr): {**r, "cpu_pct": 100 * r["cpu_s"] / wall if wall else 0.0}
                  for addr, r in reports.items()}
    cluster_params = {"address": cluster if isinstance(cluster, str) else "client", "workers": len(workers),
                      "threads_per_worker": sorted({info.get("nthreads", 0) for info in workers.values()}),
                      "global_limit_per_s": rate_limit_per_s if settings.pacing else None,
                      "bucket": config.bucket if settings.pacing and rate_limit_per_s else None}
    result = RunResult(
        run_id=config.run_id, label=label or fixes.spec, started_at=started_at, wall_seconds=wall,
        params={"workload": workload.to_dict(), "fixes": fixes.spec, "rollout": fixes.rollout,
                "run_wide": list(fixes.run_wide()), "settings": asdict(settings), "cluster": cluster_params,
                **(params or {})},
        environment=collect_environment(engine), jobs=records, intervals=sorted(intervals, key=lambda i: i[1]),
        resources={"workers": per_worker,
                   "worker_cpu_avg_pct": sum(w["cpu_pct"] for w in per_worker.values()) / max(1, len(per_worker))},
    )
    result.server_stats = server
    return result


def _run_tasks(client: Client, jobs: list[tuple[str, str]], workload: Workload, fixes: FixSet, config: WorkerConfig,
               run_epoch: float, missing: dict | None, progress: bool,
               label: str | None) -> tuple[list[JobRecord], list[Interval]]:
    """Submit one task per job and collect the records (in job order) and every interval; the first error that is
    not a job's own (a rejected API key) cancels the rest and is raised."""
    from distributed import as_completed

    futures = [client.submit(cluster_job, job, workload, fixes, config, run_epoch,
                             None if missing is None else {job: missing[job]} if job in missing else {},
                             key=f"perflab-{config.run_id}-{i}", pure=False)
               for i, job in enumerate(jobs)]
    bar = tqdm(total=len(jobs), desc=label or fixes.spec, unit="job", disable=not progress, leave=False)
    try:
        for future in as_completed(futures):
            future.result()  # raises a task's error at once
            bar.update()
    except BaseException:
        client.cancel(futures)
        raise
    finally:
        bar.close()
    done = client.gather(futures)
    return [record for record, _ in done], [i for _, spans in done for i in spans]


def measured_cluster_backfill(workload: Workload, fixes: FixSet, *, preset: Preset, base_url: str | None = None,
                              cluster: str = LOCAL, n_workers: int = 2, label: str | None = None,
                              progress: bool = False, fresh: bool = False, store: bool = True,
                              trace: str | Path | None = None) -> RunResult:
    """:func:`run_backfill_cluster` as ``perflab backfill --cluster`` runs it: the preset's rate limit as the
    cluster's, ``fresh`` tables, stored in the history, the timeline written to ``trace``."""
    check_fixes(fixes)
    check_cluster(cluster)
    engine = get_engine()
    if fresh:
        apply_schema(engine)
        reset_data(engine)
    result = run_backfill_cluster(workload, fixes, base_url=base_url, cluster=cluster, n_workers=n_workers,
                                  rate_limit_per_s=preset.rate_limit_per_s, label=label,
                                  params={"preset": preset.name}, progress=progress)
    if store:
        store_run(engine, result)
    if trace is not None:
        write_trace(result, trace)
    return result
