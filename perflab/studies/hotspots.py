"""Notebook 02: where a baseline backfill's time goes, by function (cProfile) and by line (line_profiler).

``profile_backfill`` runs the whole baseline under cProfile and ``top_own_time`` picks the function that
spends the most time itself; ``job_bars`` fetches one job's bars, which ``profile_writer``,
``profile_loop_features`` and ``profile_vectorized_features`` time line by line; ``stage_table``,
``seconds_table`` and ``headline`` sum it up. Profiling slows Python down: read shares, not seconds.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from perflab.db.migrate import reset_data
from perflab.db.writers import write_orm_row
from perflab.features import compute_features, loop, vectorized
from perflab.measure import profiling
from perflab.measure.profiling import Profiled
from perflab.measure.results import RunResult
from perflab.studies.lab import Lab
from perflab.timeframes import parse_timeframe

SCHEDULER = "perflab/pipeline/scheduler"
"""Where the scheduler's own frames are: the orchestration around the work, never the hotspot we look for."""


def profile_backfill(lab: Lab) -> tuple[pd.DataFrame, RunResult]:
    """The baseline backfill (no fix) under cProfile: every function as a row, and the run it measured."""
    calls, profiled = profiling.profile_calls(
        lambda: lab.backfill("none", label="baseline (profiled)", progress=False), top=None)
    return calls, profiled.value


def top_own_time(calls: pd.DataFrame) -> pd.Series:
    """The row of ``calls`` with the most own time (``tottime``), outside the scheduler's frames and built-ins."""
    own = calls[~calls["where"].str.startswith(SCHEDULER) & (calls["where"] != "built-in")]
    return own.sort_values("tottime", ascending=False).iloc[0]


def stage_table(run: RunResult, baseline_path: Path) -> pd.DataFrame:
    """Stage seconds of the profiled ``run``, beside notebook 01's unprofiled baseline at ``baseline_path`` if any."""
    stages = pd.DataFrame({"profiled": run.stage_seconds})
    if baseline_path.exists():
        stages["baseline.json (unprofiled)"] = pd.Series(RunResult.load(baseline_path).stage_seconds)
    return stages


def job_bars(lab: Lab) -> tuple[str, str, pd.DataFrame]:
    """The first job's bars (the preset's first symbol and timeframe), fetched once: symbol, timeframe, bars."""
    symbol, tf = lab.preset.symbols[0], parse_timeframe(lab.preset.timeframes[0])
    client = lab.client()
    try:
        bars = client.get_aggregates(symbol, tf.multiplier, tf.timespan, lab.preset.start, lab.preset.end).bars
    finally:
        client.close()
    return symbol, tf.name, bars


def profile_writer(lab: Lab, symbol: str, timeframe: str, bars: pd.DataFrame) -> tuple[pd.DataFrame, Profiled]:
    """The plan's baseline writer (``session.add`` + ``flush`` per row) storing ``bars`` into emptied tables,
    line by line."""
    reset_data(lab.engine)
    return profiling.profile_lines(lambda: write_orm_row(lab.engine, symbol, timeframe, bars), write_orm_row, top=8)


def profile_loop_features(bars: pd.DataFrame) -> tuple[pd.DataFrame, Profiled]:
    """The loop features on ``bars``, line by line (``loop.compute`` and its per-bar window helper)."""
    return profiling.profile_lines(lambda: compute_features(bars, "loop"), loop.compute, loop._windows, top=10)


def profile_vectorized_features(bars: pd.DataFrame) -> tuple[pd.DataFrame, Profiled]:
    """The vectorized features on ``bars``, line by line (its one function over the panel), to set beside loop's."""
    return profiling.profile_lines(lambda: compute_features(bars, "vectorized"), vectorized._block, top=8)


def seconds_table(run: RunResult, writer: Profiled, loop_features: Profiled, vectorized_features: Profiled
                  ) -> pd.DataFrame:
    """Seconds of each profiled piece: the whole run, the writer, the loop and the vectorized features."""
    return pd.Series({"run wall s": run.wall_seconds, "writer s": writer.seconds,
                      "loop features s": loop_features.seconds,
                      "vectorized features s": vectorized_features.seconds}).to_frame("seconds")


def headline(run: RunResult, calls: pd.DataFrame, loop_lines: pd.DataFrame, loop_features: Profiled,
             vectorized_features: Profiled) -> dict:
    """The report index's numbers for notebook 02: the top own-time function, loop's slowest line, loop / vectorized."""
    top = top_own_time(calls)
    return {
        "profiled wall s": round(run.wall_seconds, 2),
        "top self-time function": f"{top['function']} ({top['tottime_share']:.0%})",
        "loop features, slowest line": loop_lines.iloc[0]["code"][:60],
        "loop / vectorized (line-profiled)": f"{loop_features.seconds / vectorized_features.seconds:.0f}x",
    }
