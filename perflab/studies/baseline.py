"""Notebook 01: the baseline backfill (no fix), its stage breakdown and its headline numbers.

``measure_baseline`` runs it and saves it as ``baseline.json`` (notebooks 02 and 06 reuse it from the same
``out_dir``); ``headline``, ``metrics_table`` and ``server_table`` read what it recorded; ``views`` sets the
plan's busy shares beside the critical path, and ``what_if`` predicts the wall time with one stage faster.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from perflab.measure import critical_path
from perflab.measure.results import RunResult
from perflab.pipeline.presets import Preset
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


@dataclass
class Views:
    """The plan's busy shares beside the critical path's, per stage, and the sentence saying whether they agree."""

    table: pd.DataFrame
    sentence: str

    @property
    def agree(self) -> bool:
        return self.table.attrs["busy_path"] == self.table.attrs["critical_path"]


def views(run: RunResult) -> Views:
    """Busy-share rule and critical path side by side for ``run`` (see :mod:`perflab.measure.critical_path`)."""
    return Views(critical_path.compare_views(run), critical_path.views_sentence(run))


@dataclass
class WhatIf:
    """Predicted wall seconds per stage and speed-up, and one sentence per stage for ``k`` = 2."""

    table: pd.DataFrame
    sentences: list[str]
    predictions: list[critical_path.Prediction]


def what_if(run: RunResult, preset: Preset) -> WhatIf:
    """Replay ``run`` with each stage 1.5x, 2x, 4x faster and free, through ``preset``'s rate limit."""
    config = preset.simulator_config()
    predictions = critical_path.what_if(run, config.rate_limit_per_s, config.burst)
    return WhatIf(critical_path.what_if_table(predictions), critical_path.what_if_sentences(predictions),
                  predictions)
