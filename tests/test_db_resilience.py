"""The database restarting between batches loses nothing; the pools stay bounded and their peak is readable."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from pgrestart import can_restart, restart_server, server_started

from perflab.db.pool import connection_meter, server_connections
from perflab.db.writers import get_writer
from perflab.simulator.bars import synthetic_bars
from perflab.studies.path_b import row_counts

restartable = pytest.mark.skipif(not can_restart(), reason="needs a server the tests can restart")


@restartable
@pytest.mark.parametrize("writer", ["copy_binary", "execute_values"])
def test_writes_after_a_server_restart_reconnect_and_keep_every_row(driver_db, writer):
    bars = synthetic_bars(400, seed=5)
    get_writer(writer).write(driver_db, "AAPL", "1m", bars.iloc[:200], None)
    before = server_started(driver_db)
    restart_server()
    get_writer(writer).write(driver_db, "AAPL", "1m", bars, None)
    assert server_started(driver_db) > before, "the server really restarted"
    assert row_counts(driver_db) == {"rows": 400, "distinct_keys": 400}


@restartable
def test_a_restart_during_a_batched_write_loses_no_batch(clean_db):
    bars = synthetic_bars(6_000, seed=6)
    watcher = sa.create_engine(clean_db.url, poolclass=sa.pool.NullPool)
    restarted = {}

    def restart_once_writing() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not restarted:
            with watcher.connect() as conn:
                stored = conn.execute(sa.text("SELECT count(*) FROM market_data")).scalar()
            if stored >= 500:
                restarted["at"] = time.monotonic()
                restart_server()
            time.sleep(0.01)

    thread = threading.Thread(target=restart_once_writing)
    thread.start()
    try:
        get_writer("execute_values").write(clean_db, "MSFT", "1m", bars, 100)
        finished = time.monotonic()
    finally:
        thread.join()
    assert restarted and restarted["at"] < finished, "the restart happened while the write was running"
    assert row_counts(clean_db) == {"rows": 6_000, "distinct_keys": 6_000}


def test_pool_peak_counts_concurrent_writers_and_stays_bounded(clean_db):
    bars = synthetic_bars(2_000, seed=7)
    connection_meter.reset()
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda s: get_writer("orm_bulk").write(clean_db, s, "1m", bars, 500),
                      [f"S{i}" for i in range(6)]))
    snap = connection_meter.snapshot()
    assert 2 <= snap.peak <= snap.bound and snap.current == 0
    assert clean_db.pool.size() + clean_db.pool._max_overflow < 10, "the plan's bound: < 10 connections per pool"
    assert 1 <= server_connections(clean_db) <= 10 + 1
