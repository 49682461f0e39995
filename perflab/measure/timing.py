"""Stage timers: how long each job spent in api / db / compute, as intervals on one clock.

Busy seconds add up each stage's intervals; when stages overlap (parallel workers), the wall-clock
attribution splits every instant among the stages active then, so the shares add up to the wall time.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

STAGES = ("api", "db", "compute")


@dataclass
class StageTimer:
    """Collects (stage, start, end) intervals relative to ``origin`` (a perf_counter reading).

    With ``enabled=False`` it records nothing, so the cost of instrumentation itself can be measured.
    """

    origin: float = field(default_factory=time.perf_counter)
    intervals: list[tuple[str, float, float]] = field(default_factory=list)
    enabled: bool = True

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        start = time.perf_counter()
        try:
            yield
        finally:
            self.intervals.append((name, start - self.origin, time.perf_counter() - self.origin))

    def child(self) -> StageTimer:
        """A timer on the same clock for one job (merge back with ``intervals.extend``)."""
        return StageTimer(origin=self.origin, enabled=self.enabled)

    def busy(self) -> dict[str, float]:
        """Seconds per stage, summed over intervals."""
        out: dict[str, float] = defaultdict(float)
        for name, start, end in self.intervals:
            out[name] += end - start
        return dict(out)


def busy_seconds(intervals: list[tuple[str, float, float]]) -> dict[str, float]:
    out = {s: 0.0 for s in STAGES}
    for name, start, end in intervals:
        out[name] = out.get(name, 0.0) + (end - start)
    return out


def wall_attribution(intervals: list[tuple[str, float, float]], wall: float) -> dict[str, float]:
    """Split wall time among stages: each instant goes equally to the stages active; the rest is ``idle``."""
    events = sorted([(s, 1, n) for n, s, _ in intervals] + [(e, -1, n) for n, _, e in intervals])
    active: dict[str, int] = defaultdict(int)
    out = {s: 0.0 for s in STAGES}
    covered, last = 0.0, 0.0
    for t, delta, name in events:
        live = [n for n, c in active.items() if c > 0]
        if live and t > last:
            share = (t - last) / len(live)
            for n in live:
                out[n] = out.get(n, 0.0) + share
            covered += t - last
        active[name] += delta
        last = max(last, t)
    out["idle"] = max(0.0, wall - covered)
    return out
