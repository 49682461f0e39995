"""perflab against the official client: the same plan-shaped workload fetched and stored three ways, in one run.

(a) ``massive`` (the official Python client, formerly polygon-api-client) in a plain loop: ``list_aggs`` per
    symbol/timeframe with its default page size, a DataFrame of the ``Agg`` objects, ``DataFrame.to_sql`` into a
    scratch table: the way most users start.
(b) ``massive`` with the official bulk-download pattern: a ``ThreadPoolExecutor(50)`` of ``list_aggs(limit=50000)``
    calls (the client's pool sized to the 50 threads) and psycopg 3 ``COPY`` (``cursor.copy``) into a scratch table
    with market_data's primary key (each bar stored once, as in perflab's table).
(c) perflab with all fixes (:func:`perflab.pipeline.measured.measured_backfill`), which also computes and stores
    the features the two peers skip.

All three talk to one simulator (the ``plan`` preset's workload: 25 symbols x 1m/5m/15m/1h/1d over 2024-03-04..
2024-03-29, latency scaled by ``--time-scale`` so the run takes minutes) and write into one database. Each is timed
from its first request to its rows committed (creating the empty scratch table is not timed). ``massive``'s ``Agg``
carries ``open, high, low, close, volume, vwap, timestamp`` (epoch ms), ``transactions`` and ``otc``; the stored
(symbol, timeframe, time, o, h, l, c, v, vwap, n) sets are compared exactly across all three.

Targets: perflab faster than both peers, and the three stored bar sets identical.

    .venv/bin/pip install -e '.[peers]' && .venv/bin/python benchmarks/bench_peers.py [--time-scale 0.05]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from datetime import date
from importlib.metadata import version

import pandas as pd
import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from perflab.db.engine import get_engine, own_database
from perflab.db.migrate import apply_schema, reset_data
from perflab.errors import PerflabError
from perflab.measure.benchrecord import save_bench
from perflab.pipeline.fixes import FixSet
from perflab.pipeline.measured import measured_backfill
from perflab.pipeline.presets import Preset, get_preset
from perflab.pipeline.scheduler import Workload
from perflab.simulator import LOCAL_API_KEY, SimulatorProcess, start_simulator
from perflab.timeframes import parse_timeframe

LOOP_TABLE, BULK_TABLE, PERFLAB_TABLE = "peers_massive_loop", "peers_massive_bulk", "market_data"
BULK_THREADS, BULK_LIMIT = 50, 50_000
BAR_COLUMNS = ("symbol", "timeframe", "time", "open", "high", "low", "close", "volume", "vwap", "transactions")


@dataclass
class Way:
    """One way of fetching and storing the workload: its wall seconds, requests and the rows it stored."""

    name: str
    wall_s: float = 0.0
    requests: int = 0
    rows: int = 0
    missing: int = 0
    extra: int = 0
    notes: str = ""

    def record(self) -> dict:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass
class PeersResult:
    """The three ways on one workload, and whether they stored the same bars."""

    loop: Way
    bulk: Way
    perflab: Way
    identical: bool
    bars: int
    differences: list[str] = field(default_factory=list)


def api_key() -> str:
    """The key our client would send: ``POLYGON_API_KEY``, or the one a local simulator accepts when it is unset."""
    return os.environ.get("POLYGON_API_KEY") or LOCAL_API_KEY


def massive_client(base_url: str, **kw):
    """The official client pointed at ``base_url`` (its ``base`` override); raises when ``massive`` is missing."""
    try:
        from massive import RESTClient
    except ImportError:
        raise PerflabError("the peers benchmark needs the official client: pip install -e '.[peers]'") from None
    return RESTClient(api_key=api_key(), base=base_url.rstrip("/"), **kw)


def _requests(sim: SimulatorProcess, before: dict) -> int:
    return sim.stats().get("requests", 0) - before.get("requests", 0)


def massive_loop(sim: SimulatorProcess, engine: Engine, workload: Workload) -> Way:
    """(a) One ``list_aggs`` after another, each job's Aggs as a DataFrame appended with ``to_sql``."""
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {LOOP_TABLE}"))
    client = massive_client(sim.url)
    before, started = sim.stats(), time.perf_counter()
    for symbol, name in workload.jobs():
        tf = parse_timeframe(name)
        aggs = list(client.list_aggs(symbol, tf.multiplier, tf.timespan, workload.start.isoformat(),
                                     workload.end.isoformat()))
        frame = pd.DataFrame(aggs)
        if frame.empty:
            continue
        frame.insert(0, "timeframe", name)
        frame.insert(0, "symbol", symbol)
        frame["time"] = pd.to_datetime(frame.pop("timestamp"), unit="ms", utc=True)
        frame.to_sql(LOOP_TABLE, engine, if_exists="append", index=False)
    wall = time.perf_counter() - started
    return Way("massive loop + to_sql", wall, _requests(sim, before),
               notes="list_aggs with the default page size, one job after another, DataFrame.to_sql(append)")


def _psycopg_url(engine: Engine) -> str:
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


def massive_bulk(sim: SimulatorProcess, engine: Engine, workload: Workload) -> Way:
    """(b) ``ThreadPoolExecutor(50)`` of ``list_aggs(limit=50000)``; each finished job COPYed in (psycopg 3)."""
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {BULK_TABLE}"))
        # market_data's primary key, as perflab's table has: without one a re-run stores every bar twice, and the
        # COPY skips the index upkeep that storing each bar exactly once costs.
        conn.execute(sa.text(f"CREATE TABLE {BULK_TABLE} (LIKE market_data INCLUDING DEFAULTS, "
                             "PRIMARY KEY (symbol, timeframe, time))"))
    client = massive_client(sim.url, maxsize=BULK_THREADS)

    def fetch(symbol: str, name: str) -> tuple[str, str, list]:
        tf = parse_timeframe(name)
        return symbol, name, list(client.list_aggs(symbol, tf.multiplier, tf.timespan, workload.start.isoformat(),
                                                   workload.end.isoformat(), limit=BULK_LIMIT))

    copy_sql = f"COPY {BULK_TABLE} ({', '.join(BAR_COLUMNS)}) FROM STDIN"
    before, started = sim.stats(), time.perf_counter()
    with psycopg.connect(_psycopg_url(engine)) as conn, ThreadPoolExecutor(BULK_THREADS) as pool:
        futures = [pool.submit(fetch, symbol, name) for symbol, name in workload.jobs()]
        with conn.cursor() as cur:
            for future in as_completed(futures):
                symbol, name, aggs = future.result()
                with cur.copy(copy_sql) as copy:
                    for a in aggs:
                        copy.write_row((symbol, name, pd.Timestamp(a.timestamp, unit="ms", tz="UTC"), a.open, a.high,
                                        a.low, a.close, a.volume, a.vwap, a.transactions))
        conn.commit()
    wall = time.perf_counter() - started
    return Way("massive bulk + COPY", wall, _requests(sim, before),
               notes=f"ThreadPoolExecutor({BULK_THREADS}), list_aggs(limit={BULK_LIMIT}), client maxsize "
                     f"{BULK_THREADS}, psycopg 3 cursor.copy write_row per bar, one commit")


def perflab_all(sim: SimulatorProcess, engine: Engine, workload: Workload, preset: Preset) -> Way:
    """(c) perflab with all fixes: bars and features, through the one measured backfill."""
    apply_schema(engine)
    reset_data(engine)
    before, started = sim.stats(), time.perf_counter()
    result = measured_backfill(workload, FixSet.parse("all"), engine, preset=preset, base_url=sim.url, label="peers",
                               store=False)
    wall = time.perf_counter() - started
    if result.failures:
        raise PerflabError(f"perflab's run failed {result.failures} jobs: {'; '.join(result.failure_summary())}")
    return Way("perflab all fixes", wall, _requests(sim, before),
               notes=f"measured_backfill --fixes all ({result.wall_seconds:.2f} s inside), bars and features")


def stored_bars(engine: Engine, table: str) -> set[tuple]:
    """The (symbol, timeframe, epoch ms, o, h, l, c, v, vwap, n) rows of ``table``, as a set."""
    sql = (f"SELECT symbol, timeframe, (extract(epoch FROM time) * 1000)::bigint, open, high, low, close, volume, "
           f"vwap, transactions FROM {table}")
    with engine.connect() as conn:
        return {tuple(row) for row in conn.execute(sa.text(sql))}


def compare_stored(reference: set[tuple], others: Iterable[tuple[Way, set[tuple]]]) -> list[str]:
    """Fill each way's rows, missing and extra against ``reference``; a line per difference (empty: identical)."""
    lines = []
    for way, rows in others:
        way.rows, way.missing, way.extra = len(rows), len(reference - rows), len(rows - reference)
        if way.missing or way.extra:
            example = sorted(reference ^ rows)[:1]
            lines.append(f"{way.name}: {way.missing} bars missing, {way.extra} extra (e.g. {example})")
    return lines


def run_peers(sim: SimulatorProcess, engine: Engine, preset: Preset) -> PeersResult:
    """The three ways on ``preset``'s workload against ``sim`` and ``engine``, their stored bars compared."""
    workload = Workload.from_preset(preset)
    loop = massive_loop(sim, engine, workload)
    bulk = massive_bulk(sim, engine, workload)
    mine = perflab_all(sim, engine, workload, preset)
    reference = stored_bars(engine, PERFLAB_TABLE)
    mine.rows = len(reference)
    differences = compare_stored(reference, [(loop, stored_bars(engine, LOOP_TABLE)),
                                             (bulk, stored_bars(engine, BULK_TABLE))])
    with engine.begin() as conn:
        for table in (LOOP_TABLE, BULK_TABLE):
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
    return PeersResult(loop, bulk, mine, not differences and bool(reference), len(reference), differences)


def peers_preset(time_scale: float, symbols: int | None = None, end: date | None = None) -> Preset:
    """The ``plan`` preset's workload with its latency scaled (and optionally fewer symbols or an earlier end)."""
    plan = get_preset("plan")
    return plan.with_overrides(time_scale=time_scale, symbols=plan.symbols[: symbols or len(plan.symbols)],
                               end=end or plan.end)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-scale", type=float, default=0.05, help="the simulator's latency scale")
    parser.add_argument("--symbols", type=int, default=None, help="the first N of the plan's 25 symbols")
    args = parser.parse_args(argv)
    preset = peers_preset(args.time_scale, args.symbols)
    print(f"workload: {len(preset.symbols)} symbols x {', '.join(preset.timeframes)} x {preset.start}..{preset.end}; "
          f"{preset.compression_note}", flush=True)
    engine = get_engine()
    apply_schema(engine)
    with start_simulator(preset.simulator_config()) as sim:
        result = run_peers(sim, engine, preset)
    ways = (result.loop, result.bulk, result.perflab)
    for way in ways:
        print(f"  {way.name:<22} {way.wall_s:8.2f} s  {way.requests:4} requests  {way.rows:,} bars  "
              f"{result.loop.wall_s / way.wall_s:6.1f}x the plain loop   ({way.notes})")
    faster = {w.name: w.wall_s / result.perflab.wall_s for w in (result.loop, result.bulk)}
    print("perflab vs " + ", ".join(f"{n}: {x:.1f}x faster" if x > 1 else f"{n}: {1 / x:.2f}x SLOWER"
                                    for n, x in faster.items()))
    print(f"bars identical in all three ({result.bars:,} bars): {result.identical}"
          + "".join(f"\n  {line}" for line in result.differences))
    checks = {"faster_than_loop": faster[result.loop.name] > 1, "faster_than_bulk": faster[result.bulk.name] > 1,
              "bars_identical": result.identical}
    missed = [k for k, ok in checks.items() if not ok]
    print("targets " + ("met" if not missed else f"NOT met: {', '.join(missed)}"))
    path = save_bench("peers", {"ways": [w.record() for w in ways], "perflab_speedup": faster,
                                "bars": result.bars, "bars_identical": result.identical,
                                "differences": result.differences, "checks": checks},
                      targets={"perflab_speedup": "> 1 against each peer", "bars_identical": True},
                      params={**vars(args), "preset": preset.to_dict(), "massive": version("massive"),
                              "bulk_threads": BULK_THREADS, "bulk_limit": BULK_LIMIT}, engine=engine)
    print(f"saved {path}")
    return 0 if not missed else 1


if __name__ == "__main__":
    with own_database("perflab_bench_peers"):  # it empties the tables run after run: not under another run
        raise SystemExit(main())
