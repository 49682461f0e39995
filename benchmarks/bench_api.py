"""Path A benchmark: how close each client setup gets to the rate-limit ceiling, and whether every bar arrives once.

Runs the standard preset's jobs (25 symbols x 5 timeframes) over two weeks against a simulator with rate
limit R and latency L, once per cumulative Path A step of notebook 03 and once with ``api.concurrency`` on top (all
Path A fixes), and prints achieved requests/s (answered, not 429) as a ratio of the ceiling min(R, concurrency / L).
Target for all Path A fixes: >= 0.9 of the ceiling, 0 failed jobs, <= 5 429s, every bar the simulator holds
fetched exactly once.

Then the same jobs at full latency (``time_scale`` 1, the plan's 0.5-0.8 s base per request), where
``api.parallel``'s 4 workers hold ~4 / 0.7 s = 6 requests/s in flight: ``api.parallel`` against
``api.concurrency`` (both paced, with backoff), each as a ratio of R. Target: ``api.concurrency`` >= 0.8 of R
with <= 5 429s, every bar once. ``--quick`` runs ``api.parallel`` on 5 symbols there (it takes ~45 s on 25).

    .venv/bin/python benchmarks/bench_api.py [--quick]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from datetime import date

import numpy as np

from perflab.measure.benchrecord import save_bench
from perflab.pipeline.dispatch import Dispatch
from perflab.pipeline.fixes import FixSet, client_for
from perflab.pipeline.presets import get_preset
from perflab.simulator import SimulatorConfig, start_simulator
from perflab.simulator.bars import bars_between
from perflab.studies.path_a import PATH_A_ALL, STEPS, Step, fetch_jobs
from perflab.timeframes import parse_timeframe

RATE_PER_S = 25.0
BURST = 5
TIME_SCALE = 0.01  # base (0.5, 0.8) s x 0.01 -> L = 6.5 ms, plus per-bar and transfer costs at the same scale
START, END = date(2024, 3, 4), date(2024, 3, 15)
CONCURRENCY = Step("+ concurrency", f"{PATH_A_ALL},api.concurrency", "(beyond the plan) the limit at any latency")
FULL_LATENCY = {"full latency parallel": "api.backoff,api.pacing,api.parallel",
                "full latency concurrency": "api.backoff,api.pacing,api.concurrency"}


def exact_once(bars: dict, seed: int) -> bool:
    """Every job's bars are exactly the simulator's bars for the range: same timestamps, none twice."""
    for (symbol, timeframe), frame in bars.items():
        tf = parse_timeframe(timeframe)
        expected = bars_between(seed, symbol, tf.multiplier, tf.timespan, START, END).t
        got = frame["time"].dt.as_unit("ms").astype("int64").to_numpy()
        if len(got) != len(expected) or not np.array_equal(got, expected):
            return False
    return True


def fetch_step(sim, fixes: str, jobs: list, time_scale: float, label: str) -> tuple[dict, list]:
    """One paced run of ``jobs`` with ``fixes``: its figures (requests/s against R and the ceiling) and latencies."""
    settings = FixSet.parse(fixes).settings()
    dispatch = Dispatch.from_settings(settings, time_scale)
    latency = sum(sim.config.latency_s) / 2 * time_scale
    concurrency = settings.max_inflight or dispatch.workers or len(jobs)
    ceiling = min(RATE_PER_S, concurrency / latency)
    client = client_for(settings, sim.url, rate_limit_per_s=RATE_PER_S)
    time.sleep(BURST / RATE_PER_S)
    before = sim.stats()
    run = fetch_jobs(client, jobs, START, END, dispatch, page_limit=settings.page_limit, label=label, keep_bars=True)
    client.close()
    after = sim.stats()
    m = run.metrics()
    inflight = client.transport.inflight
    result = {
        "requests": m["requests"], "served_per_s": round(m["served_per_s"], 2),
        "ceiling_per_s": round(ceiling, 2), "ratio_of_ceiling": round(m["served_per_s"] / ceiling, 3),
        "ratio_of_limit": round(m["served_per_s"] / RATE_PER_S, 3),
        "server_429": after.get("status_429", 0) - before.get("status_429", 0), "failed_jobs": m["failed_jobs"],
        "bars_exactly_once": not run.failures and exact_once(run.bars, sim.config.seed),
        "latency_p50_ms": round(m["latency_p50_ms"], 1), "latency_p95_ms": round(m["latency_p95_ms"], 1),
        "workers": dispatch.workers, "peak_in_flight": inflight.peak_in_flight if inflight else None,
    }
    print(f"{label:24s} " + "  ".join(f"{k}={v}" for k, v in result.items()), flush=True)
    return result, run.stats.latencies


def met(result: dict, key: str, floor: float) -> bool:
    return (result[key] >= floor and result["failed_jobs"] == 0 and result["server_429"] <= 5
            and result["bars_exactly_once"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 symbols instead of 25")
    args = parser.parse_args()
    preset = get_preset("standard")
    symbols = preset.symbols[:5] if args.quick else preset.symbols
    jobs = [(s, tf) for s in symbols for tf in preset.timeframes]
    config = SimulatorConfig(latency_s=preset.latency_s, time_scale=TIME_SCALE, rate_limit_per_s=RATE_PER_S,
                             rate_limit_burst=BURST)
    results, samples = {}, {}
    with start_simulator(config) as sim:
        for step in (*STEPS, CONCURRENCY):
            results[step.label], samples[step.label] = fetch_step(sim, step.fixes, jobs, TIME_SCALE, step.label)
    all_jobs = [(s, tf) for s in preset.symbols for tf in preset.timeframes]
    with start_simulator(replace(config, time_scale=1.0)) as sim:
        for label, fixes in FULL_LATENCY.items():
            run_jobs = jobs if "parallel" in label else all_jobs
            results[label], samples[label] = fetch_step(sim, fixes, run_jobs, 1.0, label)
    final, full = results[CONCURRENCY.label], results["full latency concurrency"]
    targets = {"ratio_of_ceiling": ">= 0.9", "failed_jobs": 0, "server_429": "<= 5", "bars_exactly_once": True,
               "full latency concurrency ratio_of_limit": ">= 0.8"}
    ok = met(final, "ratio_of_ceiling", 0.9) and met(full, "ratio_of_limit", 0.8)
    print(f"all Path A fixes: {final['ratio_of_ceiling']:.3f} of the ceiling, {final['server_429']} 429s, "
          f"{final['failed_jobs']} failed jobs, bars exactly once: {final['bars_exactly_once']}; at full latency "
          f"api.concurrency {full['ratio_of_limit']:.3f} of the limit, api.parallel "
          f"{results['full latency parallel']['ratio_of_limit']:.3f} -> target {'met' if ok else 'NOT met'}")
    path = save_bench("api", results, samples=samples, targets=targets,
                      params={"rate_per_s": RATE_PER_S, "burst": BURST, "time_scale": TIME_SCALE,
                              "latency_s": sum(config.latency_s) / 2 * TIME_SCALE, "jobs": len(jobs),
                              "start": START.isoformat(), "end": END.isoformat(), "quick": args.quick})
    print(f"saved {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
