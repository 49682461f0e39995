"""Path A benchmark: how close each client setup gets to the rate-limit ceiling, and whether every bar arrives once.

Runs the standard preset's jobs (25 symbols x 5 timeframes) over two weeks against a simulator with rate
limit R and latency L, once per cumulative Path A step, and prints achieved requests/s (answered, not 429)
as a ratio of the
ceiling min(R, concurrency / L). Target for all fixes: >= 0.9 of the ceiling, 0 failed jobs, <= 5 429s,
every bar the simulator holds fetched exactly once.

    .venv/bin/python benchmarks/bench_api.py [--quick]
"""

from __future__ import annotations

import argparse
import time
from datetime import date

import numpy as np

from perflab.measure.benchrecord import save_bench
from perflab.pipeline.dispatch import Dispatch
from perflab.pipeline.fixes import FixSet, client_for
from perflab.pipeline.presets import get_preset
from perflab.simulator import SimulatorConfig, start_simulator
from perflab.simulator.bars import bars_between
from perflab.studies.path_a import STEPS, fetch_jobs
from perflab.timeframes import parse_timeframe

RATE_PER_S = 25.0
BURST = 5
TIME_SCALE = 0.01  # latency (2, 4) s x 0.01 -> L = 30 ms
START, END = date(2024, 3, 4), date(2024, 3, 15)


def exact_once(bars: dict, seed: int) -> bool:
    """Every job's bars are exactly the simulator's bars for the range: same timestamps, none twice."""
    for (symbol, timeframe), frame in bars.items():
        tf = parse_timeframe(timeframe)
        expected = bars_between(seed, symbol, tf.multiplier, tf.timespan, START, END).t
        got = frame["time"].dt.as_unit("ms").astype("int64").to_numpy()
        if len(got) != len(expected) or not np.array_equal(got, expected):
            return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 symbols instead of 25")
    args = parser.parse_args()
    preset = get_preset("standard")
    symbols = preset.symbols[:5] if args.quick else preset.symbols
    jobs = [(s, tf) for s in symbols for tf in preset.timeframes]
    config = SimulatorConfig(latency_s=preset.latency_s, time_scale=TIME_SCALE, rate_limit_per_s=RATE_PER_S,
                             rate_limit_burst=BURST)
    latency = sum(config.latency_s) / 2 * TIME_SCALE
    results, samples = {}, {}
    with start_simulator(config) as sim:
        for step in STEPS:
            settings = FixSet.parse(step.fixes).settings()
            dispatch = Dispatch.from_settings(settings, TIME_SCALE)
            concurrency = dispatch.workers or len(jobs)
            ceiling = min(RATE_PER_S, concurrency / latency)
            client = client_for(settings, sim.url, rate_limit_per_s=RATE_PER_S)
            time.sleep(BURST / RATE_PER_S)
            before = sim.stats()
            run = fetch_jobs(client, jobs, START, END, dispatch, page_limit=settings.page_limit, label=step.label,
                             keep_bars=True)
            client.close()
            after = sim.stats()
            server_429 = after.get("status_429", 0) - before.get("status_429", 0)
            m = run.metrics()
            results[step.label] = {
                "requests": m["requests"], "served_per_s": round(m["served_per_s"], 2),
                "ceiling_per_s": round(ceiling, 2), "ratio_of_ceiling": round(m["served_per_s"] / ceiling, 3),
                "server_429": server_429, "failed_jobs": m["failed_jobs"],
                "bars_exactly_once": not run.failures and exact_once(run.bars, config.seed),
                "latency_p50_ms": round(m["latency_p50_ms"], 1), "latency_p95_ms": round(m["latency_p95_ms"], 1),
            }
            samples[step.label] = run.stats.latencies
            print(f"{step.label:16s} " + "  ".join(f"{k}={v}" for k, v in results[step.label].items()), flush=True)
    final = results[STEPS[-1].label]
    targets = {"ratio_of_ceiling": ">= 0.9", "failed_jobs": 0, "server_429": "<= 5", "bars_exactly_once": True}
    met = (final["ratio_of_ceiling"] >= 0.9 and final["failed_jobs"] == 0 and final["server_429"] <= 5
           and final["bars_exactly_once"])
    print(f"all Path A fixes: {final['ratio_of_ceiling']:.3f} of the ceiling, {final['server_429']} 429s, "
          f"{final['failed_jobs']} failed jobs, bars exactly once: {final['bars_exactly_once']} -> "
          f"target {'met' if met else 'NOT met'}")
    path = save_bench("api", results, samples=samples, targets=targets,
                      params={"rate_per_s": RATE_PER_S, "burst": BURST, "latency_s": latency, "jobs": len(jobs),
                              "start": START.isoformat(), "end": END.isoformat(), "quick": args.quick})
    print(f"saved {path}")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
