"""The shared token bucket (perflab.db.rate_bucket): one rate limit for many pacers, processes and a cluster."""

from __future__ import annotations

import os
import time

import pytest

from perflab.db.rate_bucket import SharedPacer, drop_bucket
from perflab.measure.load import paced_load


def _pacers(engine, name: str, n: int, rate: float, waits: list[float]) -> list[SharedPacer]:
    """``n`` pacers on the bucket ``name``, each on its own connection, sleeping into ``waits`` (not for real)."""
    drop_bucket(engine, name)
    return [SharedPacer(engine, name, rate, headroom=1.0, recover=0.0, sleep=waits.append) for _ in range(n)]


def test_pacers_on_one_bucket_share_its_rate(engine):
    waits: list[float] = []
    a, b = _pacers(engine, "test:share", 2, 50.0, waits)
    other = SharedPacer(engine, "test:other", 50.0, headroom=1.0, recover=0.0, sleep=waits.append)
    try:
        started = time.monotonic()
        for _ in range(10):  # alternating: a token each, reserved from one bucket of 50/s holding 1
            a.acquire()
            b.acquire()
        elapsed = time.monotonic() - started
        # the 20th token is due 19/50 s after the first, whoever takes it (two buckets: 9/50 s)
        assert waits[-1] == pytest.approx(19 / 50 - elapsed, abs=0.03)
        waits.clear()
        other.acquire()
        assert waits == []  # another name is another bucket, full
    finally:
        for p in (a, b, other):
            p.close()


def test_a_429_slows_and_holds_every_pacer_of_the_bucket(engine):
    waits: list[float] = []
    a, b = _pacers(engine, "test:hold", 2, 100.0, waits)
    try:
        a.acquire()
        a.on_rate_limited(1.0)
        assert a.rate == pytest.approx(70.0) and a.cuts == 1
        b.acquire()
        assert waits[-1] >= 0.99  # b never saw the 429, but waits out its Retry-After
    finally:
        a.close()
        b.close()


def _warm_up() -> None:
    """Import what a request needs, so the timed part measures requests, not imports (slow on a busy machine)."""
    import perflab.api.client  # noqa: F401
    import perflab.db.engine  # noqa: F401


def test_four_worker_processes_reach_the_limit_with_few_429s(engine):
    """4 worker processes, each able to send far more than the limit alone, against a server limited to 100/s:
    together >= 90% of it with at most 5 429s (each pacing to the limit alone would send 4x too many)."""
    from distributed import Client, LocalCluster

    from perflab.simulator import SimulatorConfig, start_simulator

    rate, seconds = 100.0, 3.0
    url = os.environ["PERFLAB_DATABASE_URL"]
    drop_bucket(engine, "test:cluster")
    config = SimulatorConfig(rate_limit_per_s=rate, time_scale=0.0005, per_bar_s=0.0)
    with start_simulator(config) as sim, \
            LocalCluster(n_workers=4, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        workers = list(client.scheduler_info()["workers"])
        client.run(_warm_up)
        start_at = time.time() + 3.0  # every worker set up and its task started before the clock starts
        futures = [client.submit(paced_load, url, sim.url, "test:cluster", rate, start_at, seconds, workers=[w],
                                 pure=False) for w in workers]
        out = client.gather(futures)
    ok, limited = sum(o["ok"] for o in out), sum(o["limited"] for o in out)
    per_token_ms = 1e3 * sum(o["take_s"] for o in out) / sum(o["takes"] for o in out)
    print(f"4 processes: {ok / seconds:.1f} requests/s of {rate:g}, {limited} 429s, {per_token_ms:.2f} ms per token")
    assert len(workers) == 4 and all(o["late_s"] < 0 for o in out), out  # all four ran the whole time
    assert ok >= 0.9 * rate * seconds
    assert limited <= 5


def test_a_pacer_leaves_the_pool_as_it_found_it(engine):
    """The pacer's autocommit connection is its own: a pooled connection in autocommit would commit (and empty) a
    writer's ON COMMIT DELETE ROWS staging table statement by statement, losing the staged features."""
    pacer = SharedPacer(engine, "test:pool", 100.0)
    pacer.acquire()
    pacer.close()
    for _ in range(engine.pool.size() + 2):
        raw = engine.raw_connection()
        try:
            assert raw.driver_connection.autocommit is False
            with raw.cursor() as cur:
                cur.execute("SHOW synchronous_commit")
                assert cur.fetchone()[0] == "on"
        finally:
            raw.close()
    drop_bucket(engine, "test:pool")
