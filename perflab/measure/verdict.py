"""Which path to fix: the plan's bottleneck rules as small rule objects, first match wins.

    API share > 60%  -> Path A (API)
    DB share  > 60%  -> Path B (DB)
    otherwise        -> Path C (balanced: computation is the lever)

Shares are of busy stage time by default (what a sequential baseline spends), or of wall-clock
attribution (``basis="wall"``) for runs whose stages overlap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from perflab.measure.results import RunResult, RunSet
from perflab.pipeline.fixes import FIXES

PATH_NAMES = {"A": "API bottleneck", "B": "DB bottleneck", "C": "computation (balanced)"}


class Rule(Protocol):
    path: str

    def matches(self, shares: dict[str, float]) -> bool: ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class ShareAbove:
    """Matches when one stage's share is above a threshold."""

    stage: str
    threshold: float
    path: str

    def matches(self, shares: dict[str, float]) -> bool:
        return shares.get(self.stage, 0.0) > self.threshold

    def describe(self) -> str:
        return f"{self.stage} > {self.threshold:.0%}"


@dataclass(frozen=True)
class Balanced:
    """The fallback: neither API nor DB dominates."""

    path: str = "C"

    def matches(self, shares: dict[str, float]) -> bool:
        return True

    def describe(self) -> str:
        return "no stage above 60% (balanced)"


PLAN_RULES: tuple[Rule, ...] = (ShareAbove("api", 0.6, "A"), ShareAbove("db", 0.6, "B"), Balanced())


@dataclass(frozen=True)
class Verdict:
    """The path to fix, the rule that chose it and the numbers behind it."""

    path: str
    rule: str
    shares: dict[str, float]
    seconds: dict[str, float]
    basis: str
    fixes: tuple[str, ...] = field(default=())

    @property
    def name(self) -> str:
        return PATH_NAMES[self.path]

    def __str__(self) -> str:
        parts = ", ".join(f"{s} {self.seconds[s]:.2f}s ({v:.0%})" for s, v in self.shares.items())
        return f"Path {self.path} ({self.name}): {self.rule}; {parts} [{self.basis} time]"


def classify(result: RunResult | RunSet, rules: tuple[Rule, ...] = PLAN_RULES, basis: str = "busy") -> Verdict:
    """Apply ``rules`` in order to the run's stage shares (medians over a run set)."""
    runs = result.runs if isinstance(result, RunSet) else [result]
    stages = ("api", "db", "compute")
    if basis == "busy":
        per_run = [r.stage_seconds for r in runs]
    elif basis == "wall":
        per_run = [r.wall_stage_seconds for r in runs]
    else:
        raise ValueError(f"basis must be 'busy' or 'wall', not {basis!r}")
    seconds = {s: sorted(p.get(s, 0.0) for p in per_run)[len(per_run) // 2] for s in stages}
    total = sum(seconds.values()) or 1.0
    shares = {s: seconds[s] / total for s in stages}
    rule = next(r for r in rules if r.matches(shares))
    fixes = tuple(name for name, fix in FIXES.items() if fix.path == rule.path)
    return Verdict(rule.path, rule.describe(), shares, seconds, basis, fixes)
