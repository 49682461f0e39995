import threading
import time

import pytest

from perflab.api.errors import AuthError
from perflab.pipeline.dispatch import BATCH_STAGGER_S, Dispatch
from perflab.pipeline.fixes import FixSet

JOBS = [(s, tf) for s in ("A", "B", "C") for tf in ("1m", "1h", "5m", "1d")]


def test_from_settings_maps_each_fix():
    assert Dispatch.from_settings(FixSet().settings()) == Dispatch()
    batch = Dispatch.from_settings(FixSet.parse("api.batch").settings(), time_scale=0.5)
    assert batch.group_by_timespan and batch.workers == 0 and batch.job_stagger_s == BATCH_STAGGER_S * 0.5
    par = Dispatch.from_settings(FixSet.parse("api.parallel").settings(), time_scale=0.01)
    assert par.workers == 4 and not par.group_by_timespan and par.worker_stagger_s == pytest.approx(0.05)
    conc = Dispatch.from_settings(FixSet.parse("api.parallel,api.concurrency").settings(), time_scale=1.0)
    assert conc == Dispatch(workers=64)  # api.concurrency's workers replace api.parallel's, with no staggers
    every = Dispatch.from_settings(FixSet.parse("api.batch,api.parallel,api.concurrency").settings(), time_scale=1.0)
    assert every == Dispatch(workers=64), "and api.batch's serial groups and staggers: the adaptive limit paces"


def test_concurrency_starts_every_worker_at_once():
    starts, lock = [], threading.Lock()

    def fn(job):
        with lock:
            starts.append(time.perf_counter())
        time.sleep(0.2)
        return job

    Dispatch.from_settings(FixSet.parse("api.concurrency").settings(), time_scale=1.0).run(JOBS, fn)
    assert len(starts) == len(JOBS) and max(starts) - min(starts) < 0.15  # all 12 in flight together


def test_groups_by_timespan_in_first_seen_order():
    groups = Dispatch(group_by_timespan=True).groups(JOBS)
    spans = [{JOBS[i][1] for i in g} for g in groups]
    assert spans == [{"1m", "5m"}, {"1h"}, {"1d"}]
    assert sorted(i for g in groups for i in g) == list(range(len(JOBS)))


def test_run_returns_results_in_job_order_with_bounded_concurrency():
    live, peak, lock = [0], [0], threading.Lock()

    def fn(job):
        with lock:
            live[0] += 1
            peak[0] = max(peak[0], live[0])
        time.sleep(0.01)
        with lock:
            live[0] -= 1
        return job

    assert Dispatch(workers=3).run(JOBS, fn) == JOBS
    assert peak[0] == 3


def test_batch_groups_run_one_after_another_with_staggered_starts():
    starts = {}

    def fn(job):
        starts[job] = time.perf_counter()
        time.sleep(0.005)
        return job

    Dispatch(group_by_timespan=True, workers=0, job_stagger_s=0.01).run(JOBS, fn)
    minute = sorted(starts[j] for j in JOBS if j[1] in ("1m", "5m"))
    hour = [starts[j] for j in JOBS if j[1] == "1h"]
    assert min(hour) >= max(minute)  # the barrier between groups
    assert minute[-1] - minute[0] >= 0.04  # 6 jobs started 10 ms apart (the first may start late)


def test_an_auth_error_stops_new_starts_and_is_raised():
    seen = []

    def fn(job):
        seen.append(job)
        raise AuthError("401")

    with pytest.raises(AuthError):
        Dispatch(workers=2).run(JOBS, fn)
    assert len(seen) <= 2
