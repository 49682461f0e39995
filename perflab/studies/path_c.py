"""The standard feature panel and one timing of the implementations on it (benchmark and notebook 05).

A panel is symbols x timeframes, each series the last ``bars`` bars (``daily_bars`` for 1d: a day
of history costs a day of simulated minutes, so 4000 daily bars would take minutes to generate)
ending at ``end``, from the simulator's deterministic bar generator.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import partial
from typing import TypeVar

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from perflab.features import compute_panel, parallel
from perflab.features.equality import compare_panels
from perflab.measure.results import RunSet
from perflab.measure.timing import STAGES
from perflab.pipeline.presets import SYMBOLS_25, TIMEFRAMES_5
from perflab.simulator.bars import day_bars
from perflab.simulator.config import SimulatorConfig
from perflab.timeframes import parse_timeframe

T = TypeVar("T")


@dataclass(frozen=True)
class PanelSpec:
    """Which series a feature panel holds and how long each is."""

    symbols: tuple[str, ...]
    timeframes: tuple[str, ...]
    bars: int
    daily_bars: int
    end: date = date(2024, 3, 29)
    seed: int = SimulatorConfig().seed

    @property
    def jobs(self) -> int:
        return len(self.symbols) * len(self.timeframes)


PANELS: dict[str, PanelSpec] = {
    "smoke": PanelSpec(SYMBOLS_25[:3], ("5m", "1h", "1d"), bars=1000, daily_bars=120),
    "standard": PanelSpec(SYMBOLS_25, TIMEFRAMES_5, bars=4000, daily_bars=500),
    "plan": PanelSpec(SYMBOLS_25, TIMEFRAMES_5, bars=4000, daily_bars=500),
}


@dataclass
class Panel:
    """Series of bars with their (symbol, timeframe) keys, in the same order."""

    keys: list[tuple[str, str]]
    series: list[pd.DataFrame]

    @property
    def bars(self) -> int:
        return sum(len(s) for s in self.series)

    def subset(self, symbols: Sequence[str]) -> Panel:
        idx = [i for i, (s, _) in enumerate(self.keys) if s in symbols]
        return Panel([self.keys[i] for i in idx], [self.series[i] for i in idx])

    def summary(self) -> pd.DataFrame:
        """Bars per series, by timeframe."""
        rows = [(tf, len(s)) for (_, tf), s in zip(self.keys, self.series)]
        frame = pd.DataFrame(rows, columns=["timeframe", "bars"])
        return frame.groupby("timeframe", sort=False)["bars"].agg(["count", "min", "max"])


def _series(spec: PanelSpec, symbol: str, timeframe: str) -> pd.DataFrame:
    tf = parse_timeframe(timeframe)
    want = spec.daily_bars if tf.timespan == "day" else spec.bars
    parts, count, day = [], 0, spec.end
    while count < want:
        part = day_bars(spec.seed, symbol, tf.multiplier, tf.timespan, day)
        parts.append(part)
        count += len(part)
        day -= timedelta(days=1)
    arrays = {f: np.concatenate([getattr(p, f) for p in reversed(parts)])[-want:]
              for f in ("t", "o", "h", "l", "c", "v", "vw", "n")}
    return pd.DataFrame({
        "time": pd.to_datetime(arrays["t"], unit="ms", utc=True), "open": arrays["o"], "high": arrays["h"],
        "low": arrays["l"], "close": arrays["c"], "volume": arrays["v"], "vwap": arrays["vw"],
        "transactions": arrays["n"].astype("int64"),
    })


def build_panel(spec: PanelSpec) -> Panel:
    """Generate every series of ``spec`` (deterministic: same spec, same bars)."""
    keys = [(s, tf) for s in spec.symbols for tf in spec.timeframes]
    return Panel(keys, [_series(spec, s, tf) for s, tf in keys])


@dataclass
class Timing:
    """Seconds of each repeat of one implementation on one panel."""

    impl: str
    panel: str
    symbols: int
    bars: int
    samples: list[float] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return statistics.median(self.samples)

    def row(self) -> dict:
        return {"impl": self.impl, "panel": self.panel, "symbols": self.symbols, "bars": self.bars,
                "seconds": self.seconds, "min": min(self.samples), "max": max(self.samples),
                "ms_per_symbol": self.seconds / self.symbols * 1e3, "us_per_bar": self.seconds / self.bars * 1e6}


def time_call(fn: Callable[[], T], repeats: int, warmup: int = 1) -> tuple[list[float], T]:
    """Wall seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones, and what the last call returned.

    The warm-up pays one-off costs (the process's first touch of that much memory, lazy imports) that
    would otherwise land on whichever implementation happens to be timed first. As in ``timeit``, the
    garbage collector is off while a call is timed, so a collection owed to what a notebook kernel
    allocated earlier does not land on whichever call happens to be running.
    """
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        enabled = gc.isenabled()
        gc.disable()
        try:
            start = time.perf_counter()
            value = fn()
            samples.append(time.perf_counter() - start)
        finally:
            if enabled:
                gc.enable()
    return samples, value


FORCED_POOL = "parallel (pool forced)"


def compare_implementations(panel: Panel, loop_symbols: int, repeats: int = 3) -> tuple[pd.DataFrame, dict]:
    """Time every implementation on the full panel and on a subset small enough for ``loop``.

    ``loop`` runs once, on the first ``loop_symbols`` symbols only; the fast implementations run on
    that subset too (so the ratios compare like with like, in the same run) and on the full panel.
    Speed-ups are per bar against loop (exactly like for like on the subset rows). Returns the
    timings and facts: pool start-up seconds, worst relative error against loop.
    """
    symbols = list(dict.fromkeys(s for s, _ in panel.keys))
    small = panel.subset(symbols[:loop_symbols])
    forced = parallel.ParallelPolicy(min_rows=1, min_cpus=1)
    parallel.shutdown()
    start = time.perf_counter()
    parallel.pool(forced.workers)
    facts: dict = {"pool_start_s": time.perf_counter() - start, "workers": forced.workers,
                   "usable_cpus": parallel.usable_cpus(), "min_rows_per_worker": parallel.DEFAULT_POLICY.min_rows,
                   "min_cpus_for_pool": parallel.DEFAULT_POLICY.min_cpus}
    runs: dict[str, Callable[[list[pd.DataFrame]], list[pd.DataFrame]]] = {
        "vectorized": lambda s: compute_panel(s, "vectorized"),
        "parallel": lambda s: compute_panel(s, "parallel"),
        FORCED_POOL: lambda s: parallel.compute_panel(s, policy=forced),
    }
    loop_timing = Timing("loop", "subset", len(symbols[:loop_symbols]), small.bars)
    loop_timing.samples, reference = time_call(partial(compute_panel, small.series, "loop"), 1, warmup=0)
    timings = [loop_timing]
    worst = 0.0
    for name, run in runs.items():
        for label, part in (("subset", small), ("full", panel)):
            t = Timing(name, label, len({s for s, _ in part.keys}), part.bars)
            t.samples, output = time_call(partial(run, part.series), repeats)
            timings.append(t)
            if label == "subset":
                diff = compare_panels(reference, output)
                if not diff.ok():
                    raise AssertionError(f"{name} differs from loop: {diff}")
                worst = max([worst, *diff.max_rel_error.values()])
    facts["max_rel_error_vs_loop"] = worst
    table = pd.DataFrame([t.row() for t in timings])
    table["speedup_vs_loop"] = loop_timing.seconds / loop_timing.bars / (table["seconds"] / table["bars"])
    facts["samples"] = {f"{t.impl}/{t.panel}": t.samples for t in timings}
    return table, facts


IMPLEMENTATION_FORMATS = {"seconds": "{:.4f}", "min": "{:.4f}", "max": "{:.4f}", "ms_per_symbol": "{:.2f}",
                          "us_per_bar": "{:.2f}", "speedup_vs_loop": "{:,.0f}x"}
"""How notebook 05 displays :func:`compare_implementations`'s table: seconds to 0.1 ms, speed-ups as ``200x``."""

STAGE_FORMATS = {"api s": "{:.2f}", "db s": "{:.2f}", "compute s": "{:.3f}", "compute spread s": "{:.3f}",
                 "compute vs loop": "{:.1f}x"}
"""How notebook 05 displays :func:`backfill_stages`."""


def implementation_chart(table: pd.DataFrame, plan_ms: float = 1000.0, target_ms: float = 10.0) -> Figure:
    """Milliseconds per symbol of each (implementation, panel) row, log scale, against the plan's and issue's marks."""
    per_symbol = table.assign(run=table["impl"] + " / " + table["panel"]).set_index("run")["ms_per_symbol"]
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.barh(per_symbol.index, per_symbol.to_numpy(), color="#4C72B0")
    ax.set_xscale("log")
    ax.axvline(plan_ms, ls=":", c="k", label=f"plan: {plan_ms / 1000:g} s")
    ax.axvline(target_ms, ls="--", c="r", label=f"issue: {target_ms:g} ms")
    ax.invert_yaxis()
    ax.set_xlabel("ms per symbol (log scale, median of repeats)")
    ax.set_title("ms per symbol")
    ax.legend()
    fig.tight_layout()
    return fig


def backfill_stages(sets: dict[str, RunSet], reference: str = "loop") -> pd.DataFrame:
    """Median seconds per stage of each configuration's runs, the compute stage's min-max spread, and how many
    times faster its compute stage is than ``reference``'s."""
    rows = {name: {**{f"{st} s": s.median(st) for st in STAGES},
                   "compute spread s": s.spread("compute")[1] - s.spread("compute")[0]} for name, s in sets.items()}
    stages = pd.DataFrame(rows).T
    stages["compute vs loop"] = stages.loc[reference, "compute s"] / stages["compute s"]
    return stages


def headline(table: pd.DataFrame, facts: dict, stages: pd.DataFrame) -> dict:
    """Notebook 05's published numbers, from :func:`compare_implementations` (full-panel rows) and
    :func:`backfill_stages`."""
    full = table[table["panel"] == "full"].set_index("impl")
    return {
        "vectorized vs loop (per bar)": f"{full.loc['vectorized', 'speedup_vs_loop']:.0f}x",
        "vectorized ms/symbol": round(float(full.loc["vectorized", "ms_per_symbol"]), 2),
        "pool vs vectorized": f"{full.loc['vectorized', 'seconds'] / full.loc[FORCED_POOL, 'seconds']:.2f}x",
        "backfill compute stage": f"{stages.loc['vectorized', 'compute vs loop']:.0f}x faster",
        "max rel error vs loop": f"{facts['max_rel_error_vs_loop']:.0e}",
    }


def facts_table(facts: dict) -> pd.DataFrame:
    """The facts of :func:`compare_implementations` but the raw samples, one value per row."""
    return pd.Series({k: v for k, v in facts.items() if k != "samples"}, dtype=object).to_frame("value")
