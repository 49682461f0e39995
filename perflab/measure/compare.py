"""Before/after comparison: medians of repeated runs, and whether a change beats the noise at a known error rate.

How significance is decided (asv's rule: a rank test plus a factor):

1. **Mann-Whitney U test** on the runs of each side (exact: the rank-sum's distribution over every way the pooled
   runs could have split, ties given mid-ranks; a normal approximation only when both sides are large). It assumes
   nothing about the shape of the timings, and under "no change" it calls a difference with probability at most
   ``alpha`` (5%): that is its false-positive rate, by construction. ``perflab bench calibration`` measures the
   rate on this machine too, where drift between runs can break the test's assumption of exchangeable runs.
2. **Factor**: the medians must also differ by at least ``min_effect`` (5%) of the before median, so a tiny but
   consistent difference is not reported as a change.
3. **Enough repeats**: too few runs cannot reach ``alpha`` whatever they measure (1 vs 1, 2 vs 2, and 3 vs 3 runs:
   even the most lopsided ordering of 3 and 3 runs happens by chance 1 time in 10). Then the verdict is
   "not enough repeats", never a guess.

``compare`` asks "did it change?" (two-sided); ``alternative="slower"`` asks only "is it slower?" (one-sided,
the regression gate's question: ``perflab check``). Runs of different workloads or environments are refused
unless forced: their difference would not be the fix's.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from perflab.errors import InputError
from perflab.measure.results import RunSet

METRICS = ("wall_seconds", "api", "db", "compute", "api (wall)", "db (wall)", "compute (wall)")
"""Stages twice: busy seconds (summed over parallel workers) and wall-clock attribution (adds up to the wall)."""
ENV_KEYS = ("cpu_model", "cpu_count", "python")
ALPHA = 0.05
"""The false-positive rate the test is built for: a change is called when p <= ALPHA."""
Alternative = Literal["two-sided", "slower"]
_EXACT_WORK = 20_000_000  # above this many DP cell updates the normal approximation is as good and far cheaper


def smallest_p(n1: int, n2: int, alternative: Alternative = "two-sided") -> float:
    """The smallest p-value any ordering of ``n1`` and ``n2`` runs can give: above alpha the test cannot decide."""
    if n1 < 1 or n2 < 1:
        return 1.0
    return min(1.0, (2 if alternative == "two-sided" else 1) / math.comb(n1 + n2, n1))


def enough_repeats(n1: int, n2: int, alpha: float = ALPHA, alternative: Alternative = "two-sided") -> bool:
    return smallest_p(n1, n2, alternative) <= alpha


def repeats_for(n_before: int, alpha: float = ALPHA, alternative: Alternative = "two-sided") -> int | None:
    """The fewest after-runs that can show a change against ``n_before`` runs (None: not with any number)."""
    for n in range(1, 1000):
        if enough_repeats(n_before, n, alpha, alternative):
            return n
    return None


def decisive_repeats(alpha: float = ALPHA, alternative: Alternative = "two-sided") -> int:
    """The fewest runs a side with which the test can call a change at all (4 for two-sided 5%)."""
    return next(n for n in range(1, 100) if enough_repeats(n, n, alpha, alternative))


def mann_whitney(before: np.ndarray | list[float], after: np.ndarray | list[float],
                 alternative: Alternative = "two-sided") -> float:
    """p-value of the Mann-Whitney U test that ``after`` differs from (``"slower"``: is larger than) ``before``."""
    b = np.asarray(before, dtype=float)
    a = np.asarray(after, dtype=float)
    n1, n2 = len(b), len(a)
    if n1 == 0 or n2 == 0:
        return 1.0
    pooled = np.concatenate([b, a])
    ranks2 = _midranks(pooled) * 2  # doubled mid-ranks are integers, so the rank sums are exact
    small = ranks2[n1:] if n2 <= n1 else ranks2[:n1]
    observed = int(round(small.sum()))
    mean2 = len(small) * (n1 + n2 + 1)  # twice the expected rank sum of the smaller side
    tail_is_after = n2 <= n1
    if len(small) * (n1 + n2) * int(ranks2.sum()) <= _EXACT_WORK:
        dist = _rank_sum_distribution(ranks2.astype(np.int64), len(small))
        sums = np.arange(len(dist))
        if alternative == "two-sided":
            return float(min(1.0, dist[np.abs(sums - mean2) >= abs(observed - mean2)].sum()))
        upper = sums >= observed if tail_is_after else sums <= observed
        return float(dist[upper].sum())
    return _normal_p(ranks2 / 2, len(small), observed / 2, alternative, tail_is_after)


def _midranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, tied values sharing the mean of their ranks."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    sorted_x = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _rank_sum_distribution(ranks2: np.ndarray, k: int) -> np.ndarray:
    """Probability of each (doubled) rank sum of ``k`` runs drawn from the pooled ranks, every split equally likely."""
    top = int(np.sort(ranks2)[-k:].sum())
    ways = np.zeros((k + 1, top + 1))
    ways[0, 0] = 1.0
    for r in ranks2:  # 0/1 knapsack: numpy evaluates the right side before adding, so each run is used once
        ways[1:, r:] += ways[:-1, :top + 1 - r]
    return ways[k] / ways[k].sum()


def _normal_p(ranks: np.ndarray, k: int, observed: float, alternative: Alternative, tail_is_after: bool) -> float:
    """Normal approximation of the rank-sum test (tie-corrected variance, continuity correction) for large samples."""
    n = len(ranks)
    mean = k * (n + 1) / 2
    _, counts = np.unique(ranks, return_counts=True)
    var = k * (n - k) / 12 * ((n + 1) - float((counts ** 3 - counts).sum()) / (n * (n - 1)))
    if var <= 0:
        return 1.0
    if alternative == "two-sided":
        z = max(abs(observed - mean) - 0.5, 0.0) / math.sqrt(var)
        return min(1.0, math.erfc(z / math.sqrt(2)))
    z = ((observed - mean) if tail_is_after else (mean - observed)) - 0.5
    return 0.5 * math.erfc(z / math.sqrt(var) / math.sqrt(2))


@dataclass(frozen=True)
class Change:
    """One metric before vs after (seconds: lower is better)."""

    metric: str
    before: float
    before_spread: tuple[float, float]
    after: float
    after_spread: tuple[float, float]
    significant: bool
    enough_repeats: bool = True
    p_value: float = float("nan")

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
        """The larger min-max spread of the two sides (seconds): what the runs of one configuration vary by."""
        return max(self.before_spread[1] - self.before_spread[0], self.after_spread[1] - self.after_spread[0])

    @property
    def verdict(self) -> str:
        if self.significant:
            return "faster" if self.delta < 0 else "slower"
        return "not significant" if self.enough_repeats else "not enough repeats"


@dataclass(frozen=True)
class Comparison:
    before: str
    after: str
    n_before: int
    n_after: int
    changes: tuple[Change, ...]
    alpha: float = ALPHA
    alternative: Alternative = "two-sided"

    @property
    def total(self) -> Change:
        return next(c for c in self.changes if c.metric == "wall_seconds")

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([{
            "metric": c.metric, "before": c.before, "after": c.after, "delta": c.delta,
            "improvement": c.improvement, "speedup": c.speedup, "noise": c.noise, "p": c.p_value,
            "verdict": c.verdict,
        } for c in self.changes]).set_index("metric")

    def repeats_note(self) -> str | None:
        """Why the test could not decide, and how many runs it needs (None when it had enough)."""
        if enough_repeats(self.n_before, self.n_after, self.alpha, self.alternative):
            return None
        best = smallest_p(self.n_before, self.n_after, self.alternative)
        balanced = decisive_repeats(self.alpha, self.alternative)
        need = repeats_for(self.n_before, self.alpha, self.alternative)
        more = f" (or {need} against these {self.n_before})" if need and need < balanced else ""
        return (f"not enough repeats: {self.n_before} vs {self.n_after} runs cannot show a change at the "
                f"{self.alpha:.0%} level whatever they measure (the smallest possible p is {best:.2f}); "
                f"use at least {balanced} runs on each side{more}")


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


def judge(before: list[float], after: list[float], *, min_effect: float = 0.05, alpha: float = ALPHA,
          alternative: Alternative = "two-sided") -> tuple[bool, bool, float]:
    """``(significant, enough_repeats, p)`` for one metric's runs: the rank test at ``alpha`` plus the factor rule."""
    b = [x for x in before if x is not None and np.isfinite(x)]
    a = [x for x in after if x is not None and np.isfinite(x)]
    if not enough_repeats(len(b), len(a), alpha, alternative):
        return False, False, float("nan")
    p = mann_whitney(b, a, alternative)
    mb, ma = float(np.median(b)), float(np.median(a))
    big = abs(ma - mb) >= min_effect * mb if mb else ma != mb
    direction = ma > mb if alternative == "slower" else True
    return bool(p <= alpha and big and direction), True, p


def compare(before: RunSet, after: RunSet, *, force: bool = False, min_effect: float = 0.05, alpha: float = ALPHA,
            alternative: Alternative = "two-sided") -> Comparison:
    """Per-stage and total deltas of ``after`` against ``before``; refuses incomparable runs unless ``force``."""
    problems = differences(before, after)
    if problems and not force:
        raise InputError("runs are not comparable: " + "; ".join(problems) + " (pass --force to compare anyway)")
    changes = []
    for metric in METRICS:
        vb, va = before.values(metric), after.values(metric)
        significant, enough, p = judge(vb, va, min_effect=min_effect, alpha=alpha, alternative=alternative)
        changes.append(Change(metric, before.median(metric), before.spread(metric), after.median(metric),
                              after.spread(metric), significant, enough, p))
    return Comparison(before.label, after.label, len(before.runs), len(after.runs), tuple(changes), alpha,
                      alternative)
