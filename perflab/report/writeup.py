"""``PERFORMANCE_RESULTS.md``: the plan's results document, written from measured numbers only."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from perflab.measure.compare import Comparison
from perflab.measure.plan import EXPECTED_PROGRESSION
from perflab.measure.results import RunSet
from perflab.measure.verdict import Verdict


def progression_table(baseline: RunSet, steps: list[RunSet]) -> pd.DataFrame:
    """Measured median wall seconds (and spread) per step beside the plan's expected progression."""
    base = baseline.median("wall_seconds")
    rows = []
    for i, s in enumerate([baseline, *steps]):
        med = s.median("wall_seconds")
        lo, hi = s.spread("wall_seconds")
        plan = EXPECTED_PROGRESSION[i] if i < len(EXPECTED_PROGRESSION) else None
        rows.append({
            "step": s.label, "runs": len(s.runs), "wall s (median)": med, "min": lo, "max": hi,
            "improvement": (base - med) / base, "speedup": base / med if med else float("nan"),
            "plan step": plan[0] if plan else "", "plan s": plan[1] if plan else float("nan"),
            "plan improvement": plan[2] if plan else float("nan"),
        })
    return pd.DataFrame(rows).set_index("step")


def _md_table(df: pd.DataFrame) -> str:
    cols = [df.index.name or "", *df.columns]
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for idx, row in df.iterrows():
        cells = [idx, *row.tolist()]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def _cell(v) -> str:
    if isinstance(v, float):
        return "" if v != v else f"{v:.3g}"
    return "" if v is None else str(v)


def write_results(path: Path, *, preset: str, verdict: Verdict, progression: pd.DataFrame,
                  comparison: Comparison, criteria: pd.DataFrame) -> Path:
    """Write the results document; every number comes from the arguments (this run's measurements)."""
    total = comparison.total
    passed = criteria["passed"].dropna()
    text = f"""# Phase 3 performance results ({preset} preset)

All numbers were measured in one perflab run; medians over repeated runs, spread as min-max; a change is called
only when a Mann-Whitney rank test says so at the 5% level and it is at least 5% (docs/runbook.md).

## Bottleneck
{verdict}

## Before / after
Baseline {total.before:.2f}s -> all fixes {total.after:.2f}s: {total.improvement:.1%} less time
({total.speedup:.1f}x): {total.verdict} ({comparison.n_before} vs {comparison.n_after} runs).
Stage rows are busy seconds, summed over parallel workers (so they can grow while the run shrinks);
the `(wall)` rows split the wall clock among the stages active at each instant and add up to it.

{_md_table(comparison.table()[["before", "after", "improvement", "speedup", "noise", "verdict"]])}

## Progression (measured vs the plan's expectation)
{_md_table(progression)}

## Success criteria ({int(passed.sum())} of {len(passed)} measurable passed)
{_md_table(criteria[["measured", "target", "passed", "note"]])}
"""
    path.write_text(text)
    return path
