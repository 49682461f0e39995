"""Notebook 06: the baseline, the chosen path's fixes one at a time, then all fixes, judged against the plan.

``measure_baseline`` repeats the baseline and lets the plan's rules pick the path; ``progression_runs``
repeats that path's cumulative fixes and then every fix; ``headline`` gives the report index its numbers;
``typical`` picks the run of a set whose timeline stands for it; ``significance`` is the comparison's footer.
Each configuration runs ``preset.repeats`` times (runs already in ``out_dir``, notebook 01's baseline
among them, count toward that); the baseline and all fixes at least as many times as the significance test
needs to call a change at all (``decisive_repeats``: 4), since the headline compares those two.
"""

from __future__ import annotations

import pandas as pd

from perflab.measure import calibration
from perflab.measure.compare import Comparison, decisive_repeats
from perflab.measure.results import RunResult, RunSet
from perflab.measure.verdict import Verdict, classify
from perflab.pipeline.fixes import progression
from perflab.studies.lab import Lab


def measure_baseline(lab: Lab) -> tuple[RunSet, Verdict]:
    """The repeated baseline (saved as ``baseline_runs.json``) and the path the plan's rules pick from it."""
    baseline = lab.repeat("none", "baseline", n=max(lab.preset.repeats, decisive_repeats()))
    baseline.save(lab.out_dir / "baseline_runs.json")
    return baseline, classify(baseline)


def progression_runs(lab: Lab, path: str) -> list[RunSet]:
    """``path``'s fix 1, fixes 1-2, ... (the plan's Expected Progression, cumulative), then all fixes last
    (saved as ``after_all.json``), each repeated."""
    steps = [lab.repeat(fixes, f"path {path}: {fixes.spec}") for fixes in progression(path)]
    steps.append(lab.repeat("all", "all fixes", n=max(lab.preset.repeats, decisive_repeats())))
    steps[-1].save(lab.out_dir / "after_all.json")
    return steps


def headline(verdict: Verdict, comparison: Comparison, criteria: pd.DataFrame) -> dict:
    """The report index's numbers for notebook 06: the path, baseline and all-fixes seconds, speed-up, criteria
    passed out of those measurable at this preset."""
    passed = criteria.passed.dropna()
    return {
        "verdict": f"Path {verdict.path}", "baseline s": comparison.total.before, "all fixes s": comparison.total.after,
        "speedup": f"{comparison.total.speedup:.1f}x", "criteria passed": f"{int(passed.sum())}/{len(passed)}",
    }


def typical(runs: RunSet) -> RunResult:
    """The run of ``runs`` with the median wall time among those that recorded spans (a timeline to show for the
    set); a ValueError when none did (all saved before spans were kept)."""
    timed = sorted((r for r in runs.runs if r.spans), key=lambda r: r.wall_seconds)
    if not timed:
        raise ValueError(f"no run of {runs.label} recorded spans: re-run it to get its timeline")
    return timed[(len(timed) - 1) // 2]


def significance(comparison: Comparison) -> str:
    """What the comparison's test can tell at its runs a side: too few to decide (if so), and this machine's
    calibrated false-positive rate and power, at the calibrated repeats and at the comparison's own."""
    return "\n".join(filter(None, [comparison.repeats_note(),
                                    calibration.footer(repeats=min(comparison.n_before, comparison.n_after))]))
