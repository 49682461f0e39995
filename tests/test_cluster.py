"""The backfill on a Dask cluster (perflab.pipeline.cluster): the thread path's bars and features, each once, with
its fixes, rollout and resume, timed on one clock across worker processes. One LocalCluster for the module."""

from __future__ import annotations

import os
import time
from datetime import date

import pandas as pd
import pytest
import sqlalchemy as sa

from perflab.api.client import PolygonClient
from perflab.cli import main
from perflab.errors import InputError
from perflab.pipeline.cluster import check_cluster, run_backfill_cluster
from perflab.pipeline.fixes import FixSet
from perflab.pipeline.scheduler import Workload, run_backfill

FIXES = FixSet.parse("all,-db.group_commit,-compute.parallel,-api.grouped_daily,-api.derived_timeframes")
WORKLOAD = Workload(("AAPL", "MSFT", "NVDA"), ("5m", "1h", "1d"), date(2024, 3, 4), date(2024, 3, 6))


@pytest.fixture(scope="module")
def dask_client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        yield client


def _empty(engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE market_data, quant_features, fetch_coverage")


def _stored(engine) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every stored bar and feature row, in key order, without the columns that say when they were written."""
    with engine.connect() as conn:
        bars = pd.read_sql(sa.text("SELECT * FROM market_data ORDER BY symbol, timeframe, time"), conn)
        features = pd.read_sql(sa.text("SELECT * FROM quant_features ORDER BY symbol, timeframe, time"), conn)
    return bars.drop(columns="created_at"), features.drop(columns="computed_at")


def _cluster_run(dask_client, sim, fixes: FixSet, workload: Workload = WORKLOAD):
    return run_backfill_cluster(workload, fixes, os.environ["PERFLAB_DATABASE_URL"], sim.url, cluster=dask_client)


def test_cluster_stores_what_the_thread_path_stores_each_bar_once(clean_db, sim, dask_client):
    _empty(clean_db)
    threads = run_backfill(WORKLOAD, PolygonClient(sim.url), clean_db, FIXES)
    expected_bars, expected_features = _stored(clean_db)
    _empty(clean_db)
    result = _cluster_run(dask_client, sim, FIXES)
    bars, features = _stored(clean_db)
    assert result.failures == threads.failures == 0 and len(expected_bars) > 0
    pd.testing.assert_frame_equal(bars, expected_bars)
    pd.testing.assert_frame_equal(features, expected_features)
    assert result.rows_written == threads.rows_written == len(bars) == len(bars.drop_duplicates(
        ["symbol", "timeframe", "time"]))
    assert [(j.symbol, j.timeframe) for j in result.jobs] == WORKLOAD.jobs()
    workers = {j.code_path["worker"] for j in result.jobs}
    assert workers == {"0", "1"}  # both worker processes ran jobs
    assert result.params["cluster"]["workers"] == 2 and set(result.resources["workers"]) == workers


def test_intervals_are_on_the_run_clock_with_their_worker(clean_db, sim, dask_client):
    _empty(clean_db)
    result = _cluster_run(dask_client, sim, FixSet.parse("db.copy,compute.vectorized"))
    assert result.failures == 0
    assert all(-0.01 <= start <= end <= result.wall_seconds + 0.01 for _, start, end in result.intervals)
    by_job: dict = {}
    for span in result.spans:
        by_job.setdefault(tuple(span["jobs"][0]), []).append(span)
    for job in result.jobs:
        spans = by_job[(job.symbol, job.timeframe)]
        assert {s["thread"].split("/")[0] for s in spans} == {job.code_path["worker"]}
        assert [s["stage"] for s in spans][:1] == ["api"]  # fetched first, then written, on one clock
        assert sum(s["end"] - s["start"] for s in spans) == pytest.approx(sum(job.stages.values()))
    assert sum(len(s["requests"]) for s in result.spans) == result.requests


def test_resume_and_rollout_hold_on_the_cluster(clean_db, sim, dask_client):
    _empty(clean_db)
    resume = FixSet.parse("api.missing_only,db.copy", rollout=0.5)
    first = _cluster_run(dask_client, sim, resume)
    inside = {s for s in WORKLOAD.symbols if resume.in_rollout(s)}
    assert 0 < len(inside) < len(WORKLOAD.symbols)
    for job in first.jobs:  # each symbol on its side of the rollout
        assert job.code_path["writer"] == ("copy_binary" if job.symbol in inside else "orm_row")
    stored = _stored(clean_db)
    again = _cluster_run(dask_client, sim, resume)
    assert again.failures == 0
    assert {j.symbol for j in again.jobs if j.requests == 0} == inside  # resumed: nothing left to fetch
    pd.testing.assert_frame_equal(_stored(clean_db)[0], stored[0])


def test_a_cluster_backfill_killed_mid_run_resumes_exactly_on_the_cluster(clean_db, dask_client):
    """SIGKILL a `perflab backfill --cluster local` once its first rows land; a resume on the cluster (api.missing_only)
    then leaves exactly the simulator's bars, each once, and no process of the killed run behind."""
    import psutil

    from perflab.simulator import SimulatorConfig, start_simulator
    from perflab.studies.resilience import audit_bars, kill_backfill

    _empty(clean_db)
    resume = FixSet.parse("api.missing_only,db.copy")
    with start_simulator(SimulatorConfig(time_scale=0.05)) as sim:
        before = {p.pid for p in psutil.process_iter()}
        killed = kill_backfill(sim.url, WORKLOAD, clean_db, fixes=resume.spec, max_delay_s=0.2, timeout_s=120,
                               extra=("--cluster", "local"))
        partial = audit_bars(clean_db, WORKLOAD, sim.config.seed)
        assert killed.rows_at_kill > 0 and not killed.finished_before_kill and partial.missing > 0, (killed, partial)
        resumed = run_backfill_cluster(WORKLOAD, resume, os.environ["PERFLAB_DATABASE_URL"], sim.url,
                                       cluster=dask_client)
        audit = audit_bars(clean_db, WORKLOAD, sim.config.seed)
        assert resumed.failures == 0 and audit.exact, (killed, audit)
        again = run_backfill_cluster(WORKLOAD, resume, os.environ["PERFLAB_DATABASE_URL"], sim.url,
                                     cluster=dask_client)
        assert again.requests == 0, "everything was stored: the resume of a complete run fetches nothing"
    deadline = time.monotonic() + 20
    while (left := [p for p in psutil.process_iter(["cmdline"]) if p.pid not in before
                    and "spawn_main" in " ".join(p.info["cmdline"] or [])
                    and p.ppid() == 1]) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"the killed run's dask workers outlived it: {[p.pid for p in left]}"


def test_fixes_a_cluster_cannot_run_are_refused_by_name(capsys):
    for name in ("db.group_commit", "compute.parallel", "api.grouped_daily", "api.derived_timeframes"):
        with pytest.raises(InputError, match=name.replace(".", r"\.") + " is not supported on a cluster"):
            run_backfill_cluster(WORKLOAD, FixSet.parse(name), cluster="local")
    with pytest.raises(InputError, match="neither 'local' nor a scheduler address"):
        check_cluster("localhost:8786")
    assert main(["backfill", "--cluster", "nowhere", "--symbols", "AAPL", "--fixes", "none"]) != 0
    assert "--cluster local" in capsys.readouterr().err
