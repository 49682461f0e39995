"""Notebook 01: the baseline backfill (no fix), its stage breakdown and its headline numbers.

``measure_baseline`` runs it and saves it as ``baseline.json`` (notebooks 02 and 06 reuse it from the same
``out_dir``); ``headline``, ``metrics_table`` and ``server_table`` read what it recorded.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from perflab.measure.results import RunResult
from perflab.studies.lab import Lab

BASELINE = "baseline"
"""The label of the baseline run and the name of its file in ``out_dir``."""


def measure_baseline(lab: Lab) -> tuple[RunResult, Path]:
    """One measured backfill with no fix, saved as ``<out_dir>/baseline.json`` for the notebooks after this one."""
    run = lab.backfill("none", label=BASELINE)
    return run, lab.save(run, BASELINE)


def headline(run: RunResult) -> dict:
    """The report index's numbers for notebook 01: wall seconds, rows, requests and each stage's share."""
    metrics = run.metrics()
    return {
        "wall s": metrics["wall_seconds"], "rows": int(metrics["rows_written"]), "requests": int(metrics["requests"]),
        **{f"{stage} share": f"{share:.0%}" for stage, share in run.stage_shares.items()},
    }


def metrics_table(run: RunResult) -> pd.DataFrame:
    """Every headline metric of ``run`` (latency percentiles, insert rate, resources) as one column."""
    return pd.Series(run.metrics()).to_frame("value")


def server_table(run: RunResult) -> pd.DataFrame:
    """What the simulator counted serving ``run`` (its own view, beside the client's)."""
    return pd.Series(run.server_stats, dtype="float64").to_frame("simulator")
