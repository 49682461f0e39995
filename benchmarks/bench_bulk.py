"""Bulk endpoints benchmark: grouped daily vs per-ticker requests, and derived vs fetched timeframes, in one run.

(a) 10,000 symbols x 1d x one year (2024): one grouped daily request per weekday, against one per-ticker request
    per symbol-year. Per-ticker for all 10,000 symbols would take long, so it runs on a random sample of symbols
    (200 by default); its requests are extrapolated exactly (one per symbol-year, checked on the sample) and its
    wall proportionally, and the sample's bars are compared with the grouped rows, bar for bar.
(b) 25 symbols x (1m, 5m, 15m, 1h, 1d) over two weeks across the spring daylight-saving change, with pages of
    50,000 base bars so every fetch is one request: fetching all five (5 requests a symbol) against fetching 1m
    and 1d and deriving 5m, 15m and 1h locally (2 a symbol); the derived bars are compared with the fetched ones.

Requests go one at a time. Latency is the simulator's cost model scaled by ``--time-scale`` (0.2: a grouped page's
modelled cost is above the server's real work for it, so wall follows the model); ``full_scale_s`` is the same
traffic's modelled cost at time_scale 1. Targets: (a) one grouped request per trading day, so the request ratio reaches
its arithmetic bound (symbols / trading days: 38x for 10,000 symbols over 262 weekdays; the issue's ">= 100x" cannot
be met by any client, since per-ticker needs one request per symbol-year), identical bars; (b) 2 requests a
symbol instead of 5, identical bars (o/h/l/c/v/n exactly, vwap to 1e-9 relative).

    .venv/bin/python benchmarks/bench_bulk.py [--sample 200] [--time-scale 0.2]
"""

from __future__ import annotations

import argparse
import random
import time
from dataclasses import asdict, dataclass, field
from datetime import date

import numpy as np
import pandas as pd

from perflab.api.client import PolygonClient
from perflab.measure.benchrecord import save_bench
from perflab.measure.results import RequestStats
from perflab.pipeline.derive import derive_timeframes
from perflab.simulator import SimulatorConfig, SimulatorProcess, start_simulator
from perflab.timeframes import parse_timeframe

UNIVERSE = 10_000
YEAR = (date(2024, 1, 1), date(2024, 12, 31))
WEEKS = (date(2024, 3, 4), date(2024, 3, 15))  # 10 trading days across the spring daylight-saving change
TIMEFRAMES = ("1m", "5m", "15m", "1h", "1d")
FETCHED_WHEN_DERIVING = ("1m", "1d")
PAGE_LIMIT = 50_000
EXACT = ["time", "open", "high", "low", "close", "volume", "transactions"]


@dataclass
class Phase:
    """What one way of fetching cost: requests, wall seconds, bars, wire bytes, and the full-scale modelled cost."""

    requests: int = 0
    wall_s: float = 0.0
    bars: int = 0
    wire_bytes: int = 0
    full_scale_s: float = 0.0
    latencies: list[float] = field(default_factory=list, repr=False)

    def scaled(self, factor: float) -> Phase:
        """This phase's wall, bars, bytes and modelled cost times ``factor`` (requests are set by the caller)."""
        return Phase(self.requests, self.wall_s * factor, round(self.bars * factor), round(self.wire_bytes * factor),
                     self.full_scale_s * factor)

    def record(self) -> dict:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items() if k != "latencies"}


class Meter:
    """Times a block of requests against the simulator and reads its counters before and after."""

    def __init__(self, sim: SimulatorProcess):
        self.sim, self.stats, self.phase = sim, RequestStats(), Phase()

    def __enter__(self) -> Meter:
        self.before, self.started = self.sim.stats(), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.phase.wall_s = time.perf_counter() - self.started
        after = self.sim.stats()
        self.phase.requests = self.stats.requests
        self.phase.bars = after.get("bars_served", 0) - self.before.get("bars_served", 0)
        self.phase.wire_bytes = after.get("bytes_sent", 0) - self.before.get("bytes_sent", 0)
        self.phase.full_scale_s = self.sim.config.full_scale_s(self.phase.requests, self.phase.bars,
                                                               self.phase.wire_bytes)
        self.phase.latencies = list(self.stats.latencies)


def same_bars(got: pd.DataFrame, want: pd.DataFrame) -> bool:
    """Equal bar for bar: times and o/h/l/c/v/n exactly, vwap to 1e-9 relative."""
    if len(got) != len(want):
        return False
    exact = all(np.array_equal(got[c].to_numpy(), want[c].to_numpy()) for c in EXACT)
    return exact and np.allclose(got["vwap"].to_numpy(), want["vwap"].to_numpy(), rtol=1e-9, atol=0.0)


def grouped_vs_per_ticker(sim: SimulatorProcess, sample_size: int, seed: int) -> dict:
    """Part (a): the year by grouped daily (every weekday) and, on a sample, by per-ticker requests."""
    client = PolygonClient(sim.url)
    days = pd.bdate_range(*YEAR).date
    sample = sorted(random.Random(seed).sample(sim.config.universe, sample_size))
    wanted, symbols = set(sample), set()
    kept = []
    with Meter(sim) as grouped:
        for day in days:
            frame = client.get_grouped_daily(day, stats=grouped.stats).bars
            symbols.update(frame["symbol"])
            kept.append(frame[frame["symbol"].isin(wanted)])
    rows = pd.concat(kept, ignore_index=True)
    identical, per_symbol_requests = True, set()
    with Meter(sim) as per_ticker:
        for symbol in sample:
            before = per_ticker.stats.requests
            bars = client.get_aggregates(symbol, 1, "day", *YEAR, stats=per_ticker.stats).bars
            per_symbol_requests.add(per_ticker.stats.requests - before)
            mine = rows[rows["symbol"] == symbol].drop(columns="symbol").reset_index(drop=True)
            identical = identical and same_bars(mine, bars) and len(bars) == len(days)
    client.close()
    all_tickers = per_ticker.phase.scaled(UNIVERSE / sample_size)
    all_tickers.requests = UNIVERSE * max(per_symbol_requests)  # one request per symbol-year, checked on the sample
    return {"grouped": grouped.phase, "per_ticker_sample": per_ticker.phase, "per_ticker_all": all_tickers,
            "symbols_in_grouped": len(symbols), "trading_days": len(days), "bars_identical": identical,
            "requests_per_symbol_year": sorted(per_symbol_requests)}


def derived_vs_fetched(sim: SimulatorProcess) -> dict:
    """Part (b): 25 symbols x 5 timeframes fetched, against 1m and 1d fetched and the rest derived."""
    client = PolygonClient(sim.url)
    symbols = sim.config.tickers[:25]
    fetched: dict[tuple[str, str], pd.DataFrame] = {}
    derived: dict[tuple[str, str], pd.DataFrame] = {}

    def fetch(symbol: str, name: str, stats: RequestStats) -> pd.DataFrame:
        tf = parse_timeframe(name)
        return client.get_aggregates(symbol, tf.multiplier, tf.timespan, *WEEKS, limit=PAGE_LIMIT, stats=stats).bars

    with Meter(sim) as fetching:
        for symbol in symbols:
            for name in TIMEFRAMES:
                fetched[symbol, name] = fetch(symbol, name, fetching.stats)
    with Meter(sim) as deriving:
        for symbol in symbols:
            got = {name: fetch(symbol, name, deriving.stats) for name in FETCHED_WHEN_DERIVING}
            got.update(derive_timeframes(got["1m"], [n for n in TIMEFRAMES if n not in got]))
            derived.update({(symbol, name): frame for name, frame in got.items()})
    client.close()
    identical = all(same_bars(derived[key], fetched[key]) for key in fetched)
    bars = sum(len(f) for f in fetched.values())
    return {"fetched": fetching.phase, "derived": deriving.phase, "symbols": len(symbols), "bars": bars,
            "bars_identical": identical}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=200, help="symbols fetched per ticker in part (a)")
    parser.add_argument("--time-scale", type=float, default=0.2, help="the simulator's latency scale")
    parser.add_argument("--seed", type=int, default=7, help="picks the per-ticker sample")
    args = parser.parse_args(argv)
    config = SimulatorConfig(time_scale=args.time_scale, universe_size=UNIVERSE)
    with start_simulator(config) as sim:
        a = grouped_vs_per_ticker(sim, args.sample, args.seed)
        b = derived_vs_fetched(sim)
    g, s, p = a["grouped"], a["per_ticker_sample"], a["per_ticker_all"]
    a_ratio = p.requests / g.requests
    print(f"(a) {UNIVERSE:,} symbols x 1d x 2024 ({a['trading_days']} weekdays), requests one at a time, "
          f"time_scale {args.time_scale}")
    print(f"    grouped daily : {g.requests:6,} requests  {g.wall_s:8.1f} s wall  {g.bars:,} bars  "
          f"full scale {g.full_scale_s:,.0f} s")
    print(f"    per-ticker    : {p.requests:6,} requests  {p.wall_s:8.1f} s wall  {p.bars:,} bars  "
          f"full scale {p.full_scale_s:,.0f} s   (measured on {args.sample} random symbols: {s.requests} requests, "
          f"{s.wall_s:.1f} s; requests exact at {a['requests_per_symbol_year']} per symbol-year, wall and bars "
          f"x{UNIVERSE / args.sample:g})")
    print(f"    -> {a_ratio:.1f}x fewer requests (at most {UNIVERSE:,} / {a['trading_days']} trading days), "
          f"{p.wall_s / g.wall_s:.1f}x less wall, {p.full_scale_s / g.full_scale_s:.1f}x less at full scale; "
          f"{a['symbols_in_grouped']:,} symbols in the grouped answers; sample bars identical: {a['bars_identical']}")
    f, d = b["fetched"], b["derived"]
    per_symbol = (f.requests / b["symbols"], d.requests / b["symbols"])
    print(f"(b) {b['symbols']} symbols x {', '.join(TIMEFRAMES)} over {WEEKS[0]}..{WEEKS[1]} (limit {PAGE_LIMIT:,})")
    print(f"    fetched all   : {f.requests:4} requests ({per_symbol[0]:g} a symbol)  {f.wall_s:6.1f} s wall  "
          f"full scale {f.full_scale_s:,.1f} s")
    print(f"    1m+1d, derived: {d.requests:4} requests ({per_symbol[1]:g} a symbol)  {d.wall_s:6.1f} s wall  "
          f"full scale {d.full_scale_s:,.1f} s")
    print(f"    -> {f.wall_s / d.wall_s:.2f}x less wall, {f.full_scale_s / d.full_scale_s:.2f}x less at full scale; "
          f"{b['bars']:,} bars identical: {b['bars_identical']}")
    bound = UNIVERSE / a["trading_days"]
    checks = {"a_request_ratio": g.requests == a["trading_days"] and a_ratio >= 0.999 * bound,
              "a_bars_identical": a["bars_identical"],
              "a_universe_served": a["symbols_in_grouped"] == UNIVERSE,
              "b_requests_per_symbol": per_symbol == (5.0, 2.0), "b_bars_identical": b["bars_identical"]}
    missed = [k for k, ok in checks.items() if not ok]
    print("targets " + ("met" if not missed else f"NOT met: {', '.join(missed)}"))
    results = {"a": {"grouped": g.record(), "per_ticker_sample": s.record(), "per_ticker_all": p.record(),
                     "request_ratio": round(a_ratio, 2), "wall_ratio": round(p.wall_s / g.wall_s, 2),
                     "full_scale_ratio": round(p.full_scale_s / g.full_scale_s, 2),
                     "bars_identical": a["bars_identical"], "symbols_in_grouped": a["symbols_in_grouped"],
                     "trading_days": a["trading_days"]},
               "b": {"fetched": f.record(), "derived": d.record(), "requests_per_symbol": list(per_symbol),
                     "wall_ratio": round(f.wall_s / d.wall_s, 3),
                     "full_scale_ratio": round(f.full_scale_s / d.full_scale_s, 3),
                     "bars": b["bars"], "bars_identical": b["bars_identical"]},
               "checks": checks}
    samples = {"a_grouped_latency_s": g.latencies, "a_per_ticker_latency_s": s.latencies,
               "b_fetched_latency_s": f.latencies, "b_derived_latency_s": d.latencies}
    targets = {"a_request_ratio": f"one request per trading day: {bound:.1f}x (symbols / trading days)",
               "a_bars_identical": True,
               "b_requests_per_symbol": [5, 2], "b_bars_identical": True}
    params = {"universe": UNIVERSE, "sample": args.sample, "seed": args.seed, "time_scale": args.time_scale,
              "year": [x.isoformat() for x in YEAR], "weeks": [x.isoformat() for x in WEEKS], "page_limit": PAGE_LIMIT,
              "per_ticker_extrapolation": "requests exact (one per symbol-year); wall, bars and bytes proportional"}
    print(f"saved {save_bench('bulk', results, samples=samples, targets=targets, params=params)}")
    return 0 if not missed else 1


if __name__ == "__main__":
    raise SystemExit(main())
