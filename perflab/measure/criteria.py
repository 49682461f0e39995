"""The plan's success criteria and metric targets, evaluated on measured runs: value, target, pass/fail.

Each criterion is a small object reading a :class:`Context` (baseline and after run sets); one that
cannot be measured at this preset says so (``passed`` is None) instead of guessing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from perflab.measure.results import RunSet


@dataclass(frozen=True)
class Context:
    baseline: RunSet
    after: RunSet

    @property
    def preset(self) -> str | None:
        return self.after.params.get("preset")


@dataclass(frozen=True)
class Criterion:
    """A named target: how to measure it, how to judge it, how to show the value."""

    name: str
    target: str
    measure: Callable[[Context], float | None]
    passes: Callable[[float], bool]
    unit: str = ""
    note: str = ""


def _after(metric: str) -> Callable[[Context], float]:
    return lambda c: c.after.median(metric)


def _improvement(c: Context) -> float:
    b = c.baseline.median("wall_seconds")
    return (b - c.after.median("wall_seconds")) / b


def _error_rate_delta(c: Context) -> float:
    return (1 - c.after.median("success_rate")) - (1 - c.baseline.median("success_rate"))


def _plan_scale_backfill(c: Context) -> float | None:
    return c.after.median("wall_seconds") if c.preset == "plan" else None


CRITERIA: tuple[Criterion, ...] = (
    Criterion("improvement", ">= 30% (plan: 30-40%)", _improvement, lambda v: v >= 0.30, "%"),
    Criterion("success rate", "> 99% (target 99.5%)", _after("success_rate"), lambda v: v > 0.99, "%"),
    Criterion("error-rate increase", "none", _error_rate_delta, lambda v: v <= 0, "%"),
    Criterion("memory (peak RSS)", "< 2 GB", _after("rss_peak_mb"), lambda v: v < 2048, "MB"),
    Criterion("CPU utilisation (avg)", "< 80%", _after("cpu_avg_pct"), lambda v: v < 80, "pct"),
    Criterion("API latency p95", "< 1 s", _after("api_latency_p95_s"), lambda v: v < 1.0, "s",
              "latency is the simulator's, scaled by the preset's time_scale"),
    Criterion("API latency avg", "< 1 s", _after("api_latency_avg_s"), lambda v: v < 1.0, "s"),
    Criterion("DB insert rate", "> 2,000 records/s", _after("db_records_per_s"), lambda v: v > 2000, "records/s",
              "bars + feature rows per wall second attributed to the db stage"),
    Criterion("features per symbol", "< 1 s", _after("compute_s_per_symbol"), lambda v: v < 1.0, "s"),
    Criterion("failed symbols", "< 1", _after("failed_symbols"), lambda v: v < 1, ""),
    Criterion("timeouts", "0", _after("timeouts"), lambda v: v == 0, ""),
    Criterion("rate limits (429)", "< 5", _after("rate_limited"), lambda v: v < 5, ""),
    Criterion("DB connections (peak)", "< 10", _after("db_connections_peak"), lambda v: v < 10, ""),
    Criterion("backfill 25x5 at plan scale", "< 350 s", _plan_scale_backfill, lambda v: v < 350, "s",
              "only measured with --preset plan"),
)


def _show(value: float | None, unit: str) -> str:
    if value is None or value != value:
        return "n/a"
    if unit == "%":
        return f"{value:.1%}"
    if unit == "pct":
        return f"{value:.0f}%"
    if unit == "records/s":
        return f"{value:,.0f} records/s"
    if unit == "s":
        return f"{value:.3g} s"
    if unit == "MB":
        return f"{value:,.0f} MB"
    return f"{value:g}"


def evaluate(baseline: RunSet, after: RunSet, criteria: tuple[Criterion, ...] = CRITERIA) -> pd.DataFrame:
    """One row per criterion: measured value, target, pass (True/False, None when not measurable here)."""
    ctx = Context(baseline, after)
    rows = []
    for c in criteria:
        value = c.measure(ctx)
        measurable = value is not None and value == value
        rows.append({"criterion": c.name, "measured": _show(value, c.unit), "target": c.target,
                     "passed": c.passes(value) if measurable else None, "value": value, "note": c.note})
    return pd.DataFrame(rows).set_index("criterion")
