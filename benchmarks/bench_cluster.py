"""The backfill on 1, 2 and 4 dask worker processes, where its scaling stops and why, and the cluster's one rate limit.

Scaling: the same workload (25 symbols x 5m..1d over a week, every fix a cluster runs, pacing from the shared bucket
toward the simulator's 100 requests/s) on a LocalCluster of 1, 2 and 4 worker processes, tables emptied before each,
plus the thread path on the same workload as the reference. Per run: jobs/s, bars/s, requests/s, 429s, the workers'
CPU and the machine's, the db stage's share. Each doubling's speedup is judged: rate-limit-bound (requests/s at the
pacing ceiling), CPU-bound (the machine's CPU near 100%, or the workers' near the core count) or database-bound (the
db stage over half the stage time); the first step that gains less than 1.4x is where scaling stopped, and the
reasons measured there are printed, so the figure extrapolates only as far as they allow.

Global limit (target): 4 worker processes x 4 request loops, each alone able to exceed the limit, against a simulator
limited to 100 requests/s, paced by one bucket in PostgreSQL: >= 90% of the limit with <= 5 429s over 4 s. The
cost of one token (one UPDATE .. RETURNING) is measured alone and under the 4 processes.

Exits non-zero on a correctness failure (a failed job; stored bars differing between runs or from the thread path;
a bar stored twice) or on a missed global-limit target. The runs use a database of their own
(``perflab_bench_cluster`` on the configured server), dropped at the end.

    .venv/bin/python benchmarks/bench_cluster.py [--days N]
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import date, timedelta

import psutil
import sqlalchemy as sa

from perflab.db.engine import drop_database, get_engine, scratch_database
from perflab.db.migrate import apply_schema
from perflab.db.rate_bucket import SharedPacer, drop_bucket
from perflab.measure.benchrecord import save_bench
from perflab.measure.load import paced_load
from perflab.measure.results import RunResult
from perflab.pipeline.cluster import run_backfill_cluster
from perflab.pipeline.fixes import FixSet, client_for
from perflab.pipeline.presets import get_preset
from perflab.pipeline.scheduler import Workload, run_backfill
from perflab.simulator import SimulatorConfig, start_simulator

DATABASE = "perflab_bench_cluster"
WORKERS = (1, 2, 4)
LIMIT_PER_S = 100.0
LIMIT_SHARE, MAX_429 = 0.9, 5
LIMIT_SECONDS = 4.0
FIXES = FixSet.parse("all,-db.group_commit,-compute.parallel,-api.grouped_daily,-api.derived_timeframes")
SCALING = 1.4  # a doubling of workers that gains less than this has stopped scaling
CHECKSUM = ("SELECT count(*), count(DISTINCT (symbol, timeframe, time)), round(sum(close)::numeric, 6), "
            "(SELECT count(*) FROM quant_features) FROM market_data")


def empty(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE market_data, quant_features, fetch_coverage")


def stored(engine: sa.Engine) -> tuple:
    """(bars, distinct bar keys, sum of closes, feature rows): equal for runs that stored the same rows."""
    with engine.connect() as conn:
        return tuple(str(v) for v in conn.execute(sa.text(CHECKSUM)).one())


def figures(result: RunResult, machine_cpu_pct: float) -> dict:
    """The run's throughput, 429s and where its time went."""
    wall = result.wall_seconds
    shares = result.stage_shares
    workers = result.resources.get("workers", {})
    return {"wall_s": wall, "jobs_per_s": len(result.jobs) / wall, "bars_per_s": result.rows_written / wall,
            "requests_per_s": result.requests / wall, "requests": result.requests,
            "rate_limited": sum(j.rate_limited for j in result.jobs), "failures": result.failures,
            "rows": result.rows_written, "db_share": shares["db"], "api_share": shares["api"],
            "compute_share": shares["compute"], "machine_cpu_pct": machine_cpu_pct,
            "worker_cores": sum(w["cpu_pct"] for w in workers.values()) / 100 if workers else None,
            "token_ms": 1e3 * sum(w.get("take_s", 0.0) for w in workers.values())
            / max(1, sum(w.get("takes", 0) for w in workers.values()))}


def measured(run) -> tuple[RunResult, float]:
    """``run()``'s result and the machine's CPU busy % (all cores, everyone's processes) while it ran."""
    psutil.cpu_percent(None)
    result = run()
    return result, psutil.cpu_percent(None)


def limits(f: dict, cores: int) -> list[str]:
    """What bounds a run, from its own figures."""
    out = []
    if f["requests_per_s"] >= 0.9 * 0.95 * LIMIT_PER_S:
        out.append(f"rate-limit-bound: {f['requests_per_s']:.0f} requests/s at the pacing ceiling "
                   f"({0.95 * LIMIT_PER_S:.0f}/s)")
    if f["machine_cpu_pct"] >= 90 or (f["worker_cores"] or 0.0) >= 0.8 * cores:
        out.append(f"CPU-bound: the machine's {cores} cores {f['machine_cpu_pct']:.0f}% busy (everyone's processes: "
                   f"workers, their database backends, the simulator, other users), the workers themselves using "
                   f"{f['worker_cores']:.2f} cores")
    if f["db_share"] >= 0.5:
        out.append(f"database-bound: the db stage {f['db_share']:.0%} of stage time")
    return out


def _connect(url: str) -> None:
    """Import what a request needs and open this process's pool, so the timed part measures requests."""
    import perflab.api.client  # noqa: F401

    get_engine(url)


def token_cost_alone(engine: sa.Engine, n: int = 300) -> float:
    """Milliseconds per token for one pacer alone (no waiting: a rate no loop reaches)."""
    drop_bucket(engine, "bench:alone")
    pacer = SharedPacer(engine, "bench:alone", 1e9, sleep=lambda s: None)
    try:
        started = time.perf_counter()
        for _ in range(n):
            pacer.acquire()
        return 1e3 * (time.perf_counter() - started) / n
    finally:
        pacer.close()
        drop_bucket(engine, "bench:alone")


def global_limit(engine: sa.Engine, url: str) -> dict:
    """4 worker processes x 4 loops through one bucket against a server limited to LIMIT_PER_S."""
    from distributed import Client, LocalCluster

    drop_bucket(engine, "bench:limit")
    config = SimulatorConfig(rate_limit_per_s=LIMIT_PER_S, time_scale=0.0005, per_bar_s=0.0)
    with start_simulator(config) as sim, \
            LocalCluster(n_workers=4, threads_per_worker=1, processes=True, dashboard_address=None,
                         silence_logs=40) as cluster, Client(cluster) as client:
        workers = list(client.scheduler_info()["workers"])
        client.run(_connect, url)  # imports and a pool in every worker before the clock starts
        start_at = time.time() + 3.0
        out = client.gather([client.submit(paced_load, url, sim.url, "bench:limit", LIMIT_PER_S, start_at,
                                           LIMIT_SECONDS, 4, workers=[w], pure=False) for w in workers])
    drop_bucket(engine, "bench:limit")
    ok, limited = sum(o["ok"] for o in out), sum(o["limited"] for o in out)
    return {"requests_per_s": ok / LIMIT_SECONDS, "share_of_limit": ok / LIMIT_SECONDS / LIMIT_PER_S,
            "rate_limited": limited, "all_on_time": all(o["late_s"] < 0 for o in out),
            "token_ms_contended": 1e3 * sum(o["take_s"] for o in out) / max(1, sum(o["takes"] for o in out))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=5, help="the workload's days from 2024-03-04 (default 5)")
    args = parser.parse_args()
    preset = get_preset("standard")
    start = date(2024, 3, 4)
    workload = Workload(preset.symbols, preset.timeframes, start, start + timedelta(days=args.days - 1))
    cores = psutil.cpu_count() or 1

    admin = get_engine()
    url = scratch_database(admin, DATABASE)
    engine = get_engine(url)
    runs: dict[str, dict] = {}
    sums: dict[str, tuple] = {}
    try:
        apply_schema(engine)
        sim_config = preset.simulator_config(rate_limit_per_s=LIMIT_PER_S)
        with start_simulator(sim_config) as sim:
            empty(engine)
            client = client_for(FIXES.settings(), sim.url, rate_limit_per_s=LIMIT_PER_S)
            try:
                threads, cpu = measured(lambda: run_backfill(workload, client, engine, FIXES,
                                                             time_scale=preset.time_scale))
            finally:
                client.close()
            runs["threads"], sums["threads"] = figures(threads, cpu), stored(engine)
            for n in WORKERS:
                empty(engine)
                result, cpu = measured(lambda n=n: run_backfill_cluster(
                    workload, FIXES, url, sim.url, cluster="local", n_workers=n, rate_limit_per_s=LIMIT_PER_S,
                    bucket=f"bench:scaling:{n}"))
                drop_bucket(engine, f"bench:scaling:{n}")
                runs[f"{n} workers"], sums[f"{n} workers"] = figures(result, cpu), stored(engine)
                print(f"{n} worker process{'es' if n > 1 else ''} done: {result.wall_seconds:.2f}s", flush=True)
        alone_ms = token_cost_alone(engine)
        limit = global_limit(engine, url)
    finally:
        engine.dispose()
        drop_database(admin, DATABASE)

    print(f"\nworkload: {len(workload.symbols)} symbols x {','.join(workload.timeframes)} x {args.days} days "
          f"({len(workload.jobs())} jobs), fixes {FIXES.spec}; simulator limited to {LIMIT_PER_S:g} requests/s, "
          f"paced to 95% of it; {cores} cores, load average {os.getloadavg()[0]:.1f} at the end")
    print(f"{'run':<11}{'wall s':>8}{'jobs/s':>8}{'bars/s':>10}{'req/s':>8}{'429s':>6}{'db':>6}{'api':>6}"
          f"{'machine CPU':>13}{'worker cores':>14}")
    for name, f in runs.items():
        print(f"{name:<11}{f['wall_s']:>8.2f}{f['jobs_per_s']:>8.1f}{f['bars_per_s']:>10,.0f}"
              f"{f['requests_per_s']:>8.1f}{f['rate_limited']:>6}{f['db_share']:>6.0%}{f['api_share']:>6.0%}"
              f"{f['machine_cpu_pct']:>12.0f}%" + (f"{f['worker_cores']:>14.2f}" if f["worker_cores"] is not None
                                                   else f"{'(one process)':>14}"))

    stopped = None
    for a, b in zip(WORKERS, WORKERS[1:]):
        fa, fb = runs[f"{a} workers"], runs[f"{b} workers"]
        speedup = fb["jobs_per_s"] / fa["jobs_per_s"]
        why = limits(fb, cores)
        print(f"{a} -> {b} workers: {speedup:.2f}x jobs/s" + (f"; {'; '.join(why)}" if why else ""))
        if stopped is None and speedup < SCALING:
            stopped = {"from": a, "to": b, "speedup": speedup, "why": why}
    if stopped:
        print(f"scaling stopped at {stopped['from']} -> {stopped['to']} worker processes "
              f"({stopped['speedup']:.2f}x): " + ("; ".join(stopped["why"]) or "no single bound measured (noise of "
                                                 "a shared machine?)") + "; more workers on this machine add "
              "nothing, so extrapolate per worker only from the runs before this step, or on more cores")
    else:
        print(f"no doubling gained less than {SCALING}x up to {WORKERS[-1]} worker processes")

    print(f"\nglobal limit: 4 processes x 4 loops reached {limit['requests_per_s']:.1f} requests/s of "
          f"{LIMIT_PER_S:g} ({limit['share_of_limit']:.0%}) with {limit['rate_limited']} 429s; a token costs "
          f"{alone_ms:.2f} ms alone and {limit['token_ms_contended']:.2f} ms among the 4 processes (at 100 tokens/s "
          f"that is {alone_ms * LIMIT_PER_S / 10:.1f}% of one core's time alone)")

    base = sums["threads"]
    checks = {
        "no failed job": all(f["failures"] == 0 for f in runs.values()),
        "every run stored the thread path's bars and features": all(s == base for s in sums.values()),
        "no bar stored twice": all(s[0] == s[1] for s in sums.values()),
        f"global limit >= {LIMIT_SHARE:.0%} of {LIMIT_PER_S:g}/s": limit["share_of_limit"] >= LIMIT_SHARE,
        f"global limit <= {MAX_429} 429s": limit["rate_limited"] <= MAX_429,
        "global limit: all 4 processes ran the whole time": limit["all_on_time"],
    }
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    path = save_bench("cluster", {"runs": runs, "stored": sums, "scaling_stopped": stopped, "global_limit": limit,
                                  "token_ms_alone": alone_ms, "checks": checks},
                      targets={"global_limit_share": LIMIT_SHARE, "global_limit_max_429": MAX_429,
                               "scaling_step": SCALING},
                      params={"workload": workload.to_dict(), "fixes": FIXES.spec, "workers": list(WORKERS),
                              "limit_per_s": LIMIT_PER_S, "cores": cores, "load_avg_end": os.getloadavg()})
    print(f"saved {path}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
