"""Before/after comparison: medians of repeated runs, their spread, and whether a change beats the noise.

A change counts as significant only when it is bigger than the spread (max - min) of either side
*and* bigger than ``min_effect`` of the before median. With one run on a side its noise is unknown:
then only a change above ``single_run_effect`` (25%) counts, and the table says the noise is unknown.
Runs of different workloads or environments are refused unless forced: their difference would not be the fix's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd

from perflab.errors import InputError
from perflab.measure.results import RunSet

METRICS = ("wall_seconds", "api", "db", "compute", "api (wall)", "db (wall)", "compute (wall)")
"""Stages twice: busy seconds (summed over parallel workers) and wall-clock attribution (adds up to the wall)."""
ENV_KEYS = ("cpu_model", "cpu_count", "python")


@dataclass(frozen=True)
class Change:
    """One metric before vs after (seconds: lower is better)."""

    metric: str
    before: float
    before_spread: tuple[float, float]
    after: float
    after_spread: tuple[float, float]
    significant: bool
    noise_known: bool = True

    @property
    def delta(self) -> float:
        return self.after - self.before

    @property
    def improvement(self) -> float:
        """Fraction of the before time saved (0.3 = 30% faster); negative is a regression."""
        return -self.delta / self.before if self.before else 0.0

    @property
    def speedup(self) -> float:
        return self.before / self.after if self.after else float("inf")

    @property
    def noise(self) -> float:
        return max(self.before_spread[1] - self.before_spread[0], self.after_spread[1] - self.after_spread[0])


@dataclass(frozen=True)
class Comparison:
    before: str
    after: str
    n_before: int
    n_after: int
    changes: tuple[Change, ...]

    @property
    def total(self) -> Change:
        return next(c for c in self.changes if c.metric == "wall_seconds")

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([{
            "metric": c.metric, "before": c.before, "after": c.after, "delta": c.delta,
            "improvement": c.improvement, "speedup": c.speedup, "noise": c.noise,
            "verdict": ("faster" if c.delta < 0 else "slower") if c.significant
            else "not significant" if c.noise_known else "not significant (1 run: noise unknown)",
        } for c in self.changes]).set_index("metric")


def differences(before: RunSet, after: RunSet) -> list[str]:
    """Why two run sets are not comparable (empty when they are)."""
    out = []
    wb, wa = (json.loads(json.dumps(s.params.get("workload"), default=str)) for s in (before, after))
    if wb != wa:
        both_dicts = isinstance(wb, dict) and isinstance(wa, dict)
        keys = sorted(k for k in set(wb) | set(wa) if wb.get(k) != wa.get(k)) if both_dicts else []
        out.append(f"workload differs{' in ' + ', '.join(keys) if keys else ''}")
    for key in ENV_KEYS:
        if before.environment.get(key) != after.environment.get(key):
            out.append(f"environment {key} differs ({before.environment.get(key)} vs {after.environment.get(key)})")
    vb = before.environment.get("db", {}).get("server_version")
    va = after.environment.get("db", {}).get("server_version")
    if vb != va:
        out.append(f"database server differs ({vb} vs {va})")
    return out


def compare(before: RunSet, after: RunSet, *, force: bool = False, min_effect: float = 0.05,
            single_run_effect: float = 0.25) -> Comparison:
    """Per-stage and total deltas of ``after`` against ``before``; refuses incomparable runs unless ``force``."""
    problems = differences(before, after)
    if problems and not force:
        raise InputError("runs are not comparable: " + "; ".join(problems) + " (pass --force to compare anyway)")
    changes = []
    for metric in METRICS:
        b, a = before.median(metric), after.median(metric)
        bs, as_ = before.spread(metric), after.spread(metric)
        noise_known = min(len(before.runs), len(after.runs)) > 1
        floor = min_effect if noise_known else single_run_effect
        noise = max(bs[1] - bs[0], as_[1] - as_[0])
        significant = abs(a - b) > noise and (abs(a - b) > floor * b if b else a != b)
        changes.append(Change(metric, b, bs, a, as_, significant, noise_known))
    return Comparison(before.label, after.label, len(before.runs), len(after.runs), tuple(changes))
