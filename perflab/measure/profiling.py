"""Where the time goes, as DataFrames: cProfile per function, line_profiler per line.

One line each from a notebook::

    top, result = profile_calls(lambda: lab.backfill("none"), top=15)
    lines, result = profile_lines(lambda: compute_features(bars, "loop"), loop.compute, loop._windows)

In JupyterLab the line profiler also works as a magic: ``%load_ext line_profiler`` once, then
``%lprun -f perflab.features.loop.compute compute_features(bars, "loop")`` (one ``-f`` per function
to time line by line; the report opens in a pager). ``%lprun`` reports each function on its own, a line
that calls another profiled function including that call; :func:`profile_lines` counts every second once
(see :func:`lines_frame`).
"""

from __future__ import annotations

import ast
import builtins
import cProfile
import inspect
import linecache
import os
import pstats
import textwrap
import types
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from line_profiler import LineProfiler

CALL_COLUMNS = ["function", "where", "ncalls", "tottime", "cumtime", "tottime_share"]
LINE_COLUMNS = ["function", "line", "hits", "time_s", "incl_s", "per_hit_us", "share", "code"]


@dataclass
class Profiled:
    """What a profiled call returned, beside its profile, and the seconds the profile accounts for."""

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


Site = tuple[str, int]
"""A profiled function as line_profiler keys it, without the name: (file, first line)."""


def _site(code: types.CodeType) -> Site:
    return code.co_filename, code.co_firstlineno


def _function(f: Callable) -> types.FunctionType | None:
    try:
        f = inspect.unwrap(f)
    except ValueError:  # a wrapper cycle: nothing to read
        return None
    f = getattr(f, "__func__", f)
    return f if isinstance(f, types.FunctionType) else None


def _own_calls(node: ast.AST) -> Iterator[ast.Call]:
    """Calls in ``node`` that run under its function's lines (comprehensions too), not in nested defs or lambdas."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
        return
    if isinstance(node, ast.Call):
        yield node
    for child in ast.iter_child_nodes(node):
        yield from _own_calls(child)


def _resolve(node: ast.expr, fn: types.FunctionType) -> object | None:
    """What a called name or ``module.attr`` / ``Class.attr`` chain refers to in ``fn``'s scope (None: unknown)."""
    if isinstance(node, ast.Name):
        code = fn.__code__
        if node.id in code.co_freevars:
            try:
                return fn.__closure__[code.co_freevars.index(node.id)].cell_contents
            except ValueError:  # an empty cell
                return None
        if node.id in code.co_varnames or node.id in code.co_cellvars:
            return None  # a local: whatever it holds is known only at run time
        return fn.__globals__.get(node.id, getattr(builtins, node.id, None))
    if isinstance(node, ast.Attribute):
        base = _resolve(node.value, fn)
        if isinstance(base, (types.ModuleType, type)):
            return getattr(base, node.attr, None)
    return None


def call_sites(functions: Sequence[Callable]) -> dict[Site, dict[int, set[Site]]]:
    """For each of ``functions``, its lines that call another of them, and which (read from the source).

    A call counts when it names the callee: ``g(...)``, ``module.g(...)``, ``Class.g(...)``, or
    ``obj.g(...)`` where ``obj`` is unknown and ``g`` is the name of one of the functions (a method).
    Calls through a variable (a callback passed in) are not seen.
    """
    fns = [f for f in map(_function, functions) if f is not None]
    sites = {f.__code__: _site(f.__code__) for f in fns}
    by_name: dict[str, set[Site]] = defaultdict(set)
    for f in fns:
        by_name[f.__name__].add(sites[f.__code__])
    found: dict[Site, dict[int, set[Site]]] = {}
    for f in fns:
        try:
            lines, first = inspect.getsourcelines(f)
            tree = ast.parse(textwrap.dedent("".join(lines)))
        except (OSError, TypeError, SyntaxError):  # no source (built at run time, a lambda inside an expression)
            continue
        own = found.setdefault(sites[f.__code__], {})
        body = tree.body[0].body if isinstance(tree.body[0], (ast.FunctionDef, ast.AsyncFunctionDef)) else []
        for call in (call for statement in body for call in _own_calls(statement)):
            target = _function(_resolve(call.func, f))
            if target is not None and target.__code__ in sites:
                callees = {sites[target.__code__]}
            elif isinstance(call.func, ast.Attribute) and _resolve(call.func.value, f) is None:
                callees = by_name.get(call.func.attr, set())
            else:
                continue
            callees = callees - {sites[f.__code__]}  # recursion: each level is its own frame
            if callees:
                own.setdefault(first + call.lineno - 1, set()).update(callees)
    return found


def lines_frame(profiler: LineProfiler, functions: Sequence[Callable] = (), top: int | None = None) -> pd.DataFrame:
    """Per-line hits and time of every function a LineProfiler watched, slowest lines first.

    line_profiler times a line including whatever it calls, so a line that calls another watched function
    holds that function's time too, and adding up lines counted it twice. Here ``incl_s`` is that
    inclusive time and ``time_s`` the line's own: ``incl_s`` minus the time of the watched functions it
    calls (:func:`call_sites` of ``functions``). A callee's time (the sum of its lines) is shared among
    the lines that call it in proportion to their ``incl_s``, never more than a line's own ``incl_s``:
    exact for a callee called from one line, and across lines close (each call line keeps its own
    argument and call overhead in proportion). So ``time_s`` adds up to the time spent in the watched
    functions, each second once, and ``share`` (of that sum) adds up to 1. A callee called through a
    variable is not seen and keeps being counted in its caller's line too.
    """
    stats = profiler.get_stats()
    rows, incl = [], {}
    for (filename, first, name), timings in stats.timings.items():
        for lineno, hits, raw in timings:
            incl[(filename, first), lineno] = raw * stats.unit
            rows.append({"function": name, "site": (filename, first), "line": lineno, "hits": hits,
                         "incl_s": raw * stats.unit, "code": linecache.getline(filename, lineno).strip()})
    total: dict[Site, float] = defaultdict(float)
    for (site, _line), seconds in incl.items():
        total[site] += seconds
    callers: dict[Site, list[tuple[Site, int]]] = defaultdict(list)
    for site, lines in call_sites(functions).items():
        for lineno, callees in lines.items():
            for callee in callees:
                if (site, lineno) in incl and callee in total:
                    callers[callee].append((site, lineno))
    in_callees: dict[tuple[Site, int], float] = defaultdict(float)
    for callee, lines in callers.items():
        calling = sum(incl[line] for line in lines)
        for line in lines:
            in_callees[line] += min(incl[line], total[callee] * incl[line] / calling) if calling else 0.0
    for row in rows:
        row["time_s"] = max(0.0, row["incl_s"] - in_callees[row.pop("site"), row["line"]])
        row["per_hit_us"] = row["time_s"] / row["hits"] * 1e6 if row["hits"] else 0.0
    frame = pd.DataFrame(rows, columns=[c for c in LINE_COLUMNS if c != "share"])
    frame.insert(LINE_COLUMNS.index("share"), "share", frame["time_s"] / (frame["time_s"].sum() or 1.0))
    frame = frame.sort_values("time_s", ascending=False, ignore_index=True)
    return frame if top is None else frame.head(top)


def profile_lines(fn: Callable[[], Any], *functions: Callable, top: int | None = 20) -> tuple[pd.DataFrame, Profiled]:
    """Run ``fn()`` with ``functions`` timed line by line; return the slowest lines and what ``fn`` returned.

    ``Profiled.seconds`` is the time spent in ``functions``, each second once (a function called from
    another one counts in itself, not again in its caller): the sum of ``time_s``, see :func:`lines_frame`.
    """
    profiler = LineProfiler()
    for f in functions:
        profiler.add_function(inspect.unwrap(f))
    value = profiler.runcall(fn)
    frame = lines_frame(profiler, functions)
    return (frame if top is None else frame.head(top)), Profiled(value, float(frame["time_s"].sum()))
