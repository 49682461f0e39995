"""api.concurrency: the AIMD in-flight limit on its own (fed latencies and 429s on a fake clock), then against the
real simulator (the rate limit reached where api.parallel cannot reach it) and the database (every bar once)."""

import threading
import time
from datetime import date

import pytest
import sqlalchemy as sa

from perflab.api.inflight import AimdPolicy, InflightLimit
from perflab.db.migrate import reset_data
from perflab.pipeline.dispatch import Dispatch
from perflab.pipeline.fixes import FixSet, client_for
from perflab.pipeline.scheduler import Workload, run_backfill
from perflab.simulator import SimulatorConfig, start_simulator
from perflab.simulator.bars import bars_between
from perflab.simulator.config import SYMBOLS_25
from perflab.studies.path_a import fetch_jobs
from perflab.timeframes import parse_timeframe


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def limiter(**policy) -> tuple[InflightLimit, FakeClock]:
    clock = FakeClock()
    return InflightLimit(AimdPolicy(**policy), clock=clock), clock


def answer(lim: InflightLimit, clock: FakeClock, wire_s: float = 0.1, queued_s: float = 0.0, *,
           rate_limited: bool = False) -> None:
    """One request alone in flight: it waits ``queued_s`` before the wire and spends ``wire_s`` on it."""
    ticket = lim.acquire()
    clock.t += queued_s + wire_s
    lim.release(ticket, wire_s, rate_limited=rate_limited)


def test_slow_start_grows_by_one_per_answer_up_to_the_maximum():
    lim, clock = limiter(initial=2, max_limit=8)
    for _ in range(10):
        answer(lim, clock)
    assert lim.history == [2, 3, 4, 5, 6, 7, 8] and lim.cuts == 0


def test_a_429_cuts_multiplicatively_then_growth_is_additive():
    lim, clock = limiter(initial=2, max_limit=64, decrease=0.5)
    for _ in range(18):
        answer(lim, clock)
    assert lim.limit == 20
    answer(lim, clock, rate_limited=True)
    assert lim.limit == 10 and lim.cuts == 1
    for _ in range(11):  # a round trip's worth of answers: one more slot (10 + 1/10 + 1/10.1 + ...), not eleven
        answer(lim, clock)
    assert lim.limit == 11
    assert lim.history[-2:] == [10, 11]


def test_one_cut_per_round_trip_however_many_429s_it_brings():
    lim, clock = limiter(initial=8, max_limit=64, decrease=0.5)
    tickets = [lim.acquire() for _ in range(8)]  # a full window in flight
    clock.t += 0.1
    for ticket in tickets:  # every one of them comes back 429: they were all sent before the cut
        lim.release(ticket, 0.1, rate_limited=True)
    assert lim.limit == 4 and lim.cuts == 1
    answer(lim, clock, rate_limited=True)  # a request sent after the cut is new news
    assert lim.limit == 2 and lim.cuts == 2


def test_the_limit_never_falls_below_its_minimum():
    lim, clock = limiter(initial=4, min_limit=2, decrease=0.5)
    for _ in range(5):
        answer(lim, clock, rate_limited=True)
    assert lim.limit == 2 and lim.history == [4, 2]


def test_queueing_before_the_wire_cuts_the_limit():
    lim, clock = limiter(initial=2, max_limit=64, decrease=0.5)
    for _ in range(10):
        answer(lim, clock, wire_s=0.1)  # flat latency: slow start only
    assert lim.limit == 12 and lim.cuts == 0
    for _ in range(3):  # each request now waits at the pacer three times as long as it travels
        answer(lim, clock, wire_s=0.1, queued_s=0.3)
    assert lim.cuts >= 1 and lim.limit < 12
    assert lim.queueing > lim.policy.queue_tolerance


def test_the_server_slowing_down_cuts_the_limit():
    lim, clock = limiter(initial=2, max_limit=64, decrease=0.5)
    for _ in range(10):
        answer(lim, clock, wire_s=0.1)
    for _ in range(10):
        answer(lim, clock, wire_s=1.0)  # ten times slower on the wire, nothing queued
    assert lim.cuts >= 1 and lim.slowdown > lim.policy.server_tolerance


def test_mixed_page_sizes_are_not_congestion():
    lim, clock = limiter(initial=2, max_limit=64)
    for i in range(200):  # the plan's pages: 0.5 s for a daily page to 1.4 s for a month of minutes
        answer(lim, clock, wire_s=(0.5, 0.9, 1.4, 0.7)[i % 4])
    assert lim.cuts == 0 and lim.limit == 64


def test_an_unanswered_request_moves_nothing():
    lim, clock = limiter(initial=4)
    ticket = lim.acquire()
    clock.t += 30.0
    lim.release(ticket, None)  # a timeout or reset: no latency to learn from
    assert lim.history == [4] and lim.in_flight == 0


def test_acquire_waits_for_a_free_slot():
    lim, _ = limiter(initial=2)
    held = [lim.acquire(), lim.acquire()]
    got = threading.Event()
    waiter = threading.Thread(target=lambda: (lim.acquire(), got.set()))
    waiter.start()
    assert not got.wait(0.2) and lim.in_flight == 2
    lim.release(held.pop(), 0.1)
    assert got.wait(5)
    waiter.join()
    assert lim.in_flight == 2 and lim.peak_in_flight == 2


def test_the_fix_gives_the_client_a_limit_and_a_connection_for_each_request_it_allows():
    settings = FixSet.parse("api.concurrency").settings()
    client = client_for(settings, "http://127.0.0.1:9")
    try:
        assert client.transport.inflight.policy.max_limit == 64
        assert client.transport.session.get_adapter("http://127.0.0.1:9")._pool_maxsize >= 64
    finally:
        client.close()
    assert client_for(FixSet().settings(), "http://127.0.0.1:9").transport.inflight is None


RATE = 50.0
LATENCY = 0.2  # 4 workers keep 4 / 0.2 s = 20 requests/s in flight: less than half the limit
JOBS = [(s, tf) for s in SYMBOLS_25 for tf in ("5m", "15m", "1h", "1d")]
START, END = date(2024, 3, 4), date(2024, 3, 6)


@pytest.fixture(scope="module")
def limited_sim():
    config = SimulatorConfig(latency_s=(LATENCY, LATENCY), time_scale=1.0, rate_limit_per_s=RATE)
    with start_simulator(config) as s:
        yield s


def fetch(sim, fixes: str, jobs=JOBS):
    """Fetch ``jobs`` with ``fixes`` (pages of 1000 base bars: several per job); the run and the server's 429s."""
    settings = FixSet.parse(fixes).settings()
    client = client_for(settings, sim.url, rate_limit_per_s=RATE)
    time.sleep(1.0)  # the server's bucket refills between runs
    before = sim.stats()
    try:  # time_scale 0.01: the plan's 5 s between workers' starts do not count against api.parallel
        run = fetch_jobs(client, jobs, START, END, Dispatch.from_settings(settings, time_scale=0.01),
                         page_limit=1000, keep_bars=True)
    finally:
        client.close()
    return run, sim.stats().get("status_429", 0) - before.get("status_429", 0), client.transport.inflight


def test_concurrency_reaches_the_rate_limit_where_parallel_cannot(limited_sim):
    run, server_429, inflight = fetch(limited_sim, "api.backoff,api.pacing,api.concurrency")
    assert run.stats.requests >= 200 and not run.failures
    assert run.served_per_s >= 0.8 * RATE, (run.served_per_s, inflight.history)
    assert server_429 <= 3
    assert inflight.peak_in_flight >= RATE * LATENCY  # it found the in-flight count the limit needs
    for (symbol, timeframe), frame in run.bars.items():  # every bar exactly once, in order
        tf = parse_timeframe(timeframe)
        expected = bars_between(limited_sim.config.seed, symbol, tf.multiplier, tf.timespan, START, END).t
        assert frame["time"].dt.as_unit("ms").astype("int64").tolist() == expected.tolist()

    parallel, _, _ = fetch(limited_sim, "api.backoff,api.pacing,api.parallel", JOBS[:40])
    assert not parallel.failures
    assert parallel.served_per_s <= 0.5 * RATE  # 4 in flight / 0.2 s: the latency, not the limit, is its ceiling


def stored(engine) -> list[tuple]:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT symbol, timeframe, time, open, high, low, close, volume, vwap, "
                                    "transactions FROM market_data ORDER BY symbol, timeframe, time")).all()


def test_a_concurrent_backfill_stores_what_a_sequential_one_does(clean_db, limited_sim):
    workload = Workload(SYMBOLS_25[:6], ("1m", "1h", "1d"), date(2024, 3, 4), date(2024, 3, 12))  # 1m: two pages
    common = "db.copy,compute.vectorized"
    results, rows = {}, {}
    for fixes in (common, f"api.backoff,api.pacing,api.concurrency,{common}"):
        reset_data(clean_db)
        fs = FixSet.parse(fixes)
        client = client_for(fs.settings(), limited_sim.url, rate_limit_per_s=RATE)
        try:
            results[fixes] = run_backfill(workload, client, clean_db, fs)
        finally:
            client.close()
        rows[fixes] = stored(clean_db)
    sequential, concurrent = results.values()
    assert sequential.failures == concurrent.failures == 0
    assert concurrent.requests > len(workload.jobs())  # the 1m jobs followed next_url
    assert len(rows[common]) == sequential.rows_written > 0
    assert list(rows.values())[1] == rows[common]
