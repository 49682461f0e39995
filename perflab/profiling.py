"""Where the time goes, as DataFrames: cProfile per function, line_profiler per line.

One line each from a notebook::

    top, result = profile_calls(lambda: lab.backfill("none"), top=15)
    lines, result = profile_lines(lambda: compute_features(bars, "loop"), loop.compute, loop._windows)

In JupyterLab the line profiler also works as a magic: ``%load_ext line_profiler`` once, then
``%lprun -f perflab.features.loop.compute compute_features(bars, "loop")`` (one ``-f`` per function
to time line by line; the report opens in a pager).
"""

from __future__ import annotations

import cProfile
import inspect
import linecache
import os
import pstats
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
from line_profiler import LineProfiler

CALL_COLUMNS = ["function", "where", "ncalls", "tottime", "cumtime", "tottime_share"]
LINE_COLUMNS = ["function", "line", "hits", "time_s", "per_hit_us", "share", "code"]


@dataclass
class Profiled:
    """What a profiled call returned, beside its profile."""

    value: Any
    seconds: float


def _where(filename: str, lineno: int) -> str:
    if filename.startswith("~") or filename == "":
        return "built-in"
    parts = filename.replace(os.sep, "/").split("/")
    for anchor in ("perflab", "site-packages"):
        if anchor in parts:
            parts = parts[parts.index(anchor) + (anchor == "site-packages"):]
            break
    else:
        parts = parts[-2:]
    return f"{'/'.join(parts)}:{lineno}"


def calls_frame(stats: pstats.Stats, top: int | None = 20, sort: str = "cumtime") -> pd.DataFrame:
    """The ``top`` functions (all with None) of a cProfile run by ``sort`` (cumtime or tottime)."""
    total = stats.total_tt or 1.0  # type: ignore[attr-defined]
    rows = []
    for (filename, lineno, name), (_cc, ncalls, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append({"function": name, "where": _where(filename, lineno), "ncalls": ncalls,
                     "tottime": tottime, "cumtime": cumtime, "tottime_share": tottime / total})
    frame = pd.DataFrame(rows, columns=CALL_COLUMNS)
    frame = frame.sort_values(sort, ascending=False, ignore_index=True)
    return frame if top is None else frame.head(top)


def profile_calls(fn: Callable[[], Any], top: int | None = 20, sort: str = "cumtime") -> tuple[pd.DataFrame, Profiled]:
    """Run ``fn()`` under cProfile; return its top functions as a DataFrame and what it returned."""
    profiler = cProfile.Profile()
    value = profiler.runcall(fn)
    stats = pstats.Stats(profiler)
    return calls_frame(stats, top, sort), Profiled(value, stats.total_tt)  # type: ignore[attr-defined]


def lines_frame(profiler: LineProfiler, top: int | None = None) -> pd.DataFrame:
    """Per-line hits and time of every function a LineProfiler watched, slowest lines first."""
    stats = profiler.get_stats()
    rows = []
    for (filename, _first, name), timings in stats.timings.items():
        for lineno, hits, raw in timings:
            seconds = raw * stats.unit
            rows.append({"function": name, "line": lineno, "hits": hits, "time_s": seconds,
                         "per_hit_us": seconds / hits * 1e6 if hits else 0.0,
                         "code": linecache.getline(filename, lineno).strip()})
    frame = pd.DataFrame(rows, columns=[c for c in LINE_COLUMNS if c != "share"])
    frame.insert(5, "share", frame["time_s"] / (frame["time_s"].sum() or 1.0))
    frame = frame.sort_values("time_s", ascending=False, ignore_index=True)
    return frame if top is None else frame.head(top)


def profile_lines(fn: Callable[[], Any], *functions: Callable, top: int | None = 20) -> tuple[pd.DataFrame, Profiled]:
    """Run ``fn()`` with ``functions`` timed line by line; return the slowest lines and what ``fn`` returned."""
    profiler = LineProfiler()
    for f in functions:
        profiler.add_function(inspect.unwrap(f))
    value = profiler.runcall(fn)
    frame = lines_frame(profiler)
    return (frame if top is None else frame.head(top)), Profiled(value, float(frame["time_s"].sum()))
