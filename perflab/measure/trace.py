"""A run's timeline as a Chrome trace-event JSON that ui.perfetto.dev and chrome://tracing open as they are.

Every stage interval is a complete (``"X"``) event on the thread that ran it, named by stage, with its job in
``args``; each HTTP request is an ``"X"`` event nested in its api stage. Threads are named with ``"M"`` events.
Counters (``"C"``) are derived from what the run recorded, so tracing costs the run nothing extra: requests in
flight and 429s so far (from the requests), threads in a db stage (each holds a pooled connection), the group
committer's queue (jobs handed over and not yet taken), DB connections checked out of perflab's pools (at every
checkout and checkin; runs saved before it was recorded have none), and the sampler's CPU % and open server
connections.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

from perflab.measure.results import RunResult

PID = 1
US = 1e6
"""Trace timestamps are microseconds; the run's clock is seconds."""


def _us(seconds: float) -> float:
    return round(seconds * US, 3)


def _job_args(jobs: list) -> dict:
    if len(jobs) == 1:
        return {"symbol": jobs[0][0], "timeframe": jobs[0][1]}
    return {"jobs": len(jobs), "symbols": ", ".join(f"{s}/{tf}" for s, tf in jobs)}


def handovers(spans: list[dict]) -> dict[tuple[str, str], tuple[float, float]]:
    """Jobs handed to another thread (the group committer): job -> (handed over, taken), in run seconds.

    A job's first span runs on its worker; a span of the same job on another thread is the committer's, which took
    the job when that span began; the worker handed it over when its own last span of the job ended.
    """
    worker: dict[tuple[str, str], int] = {}
    handed: dict[tuple[str, str], float] = {}
    taken: dict[tuple[str, str], float] = {}
    for span in sorted(spans, key=lambda s: s["start"]):
        for job in map(tuple, span["jobs"]):
            tid = worker.setdefault(job, span["tid"])
            if span["tid"] == tid:
                handed[job] = max(handed.get(job, 0.0), span["end"])
            else:
                taken[job] = min(taken.get(job, span["start"]), span["start"])
    return {job: (handed[job], t) for job, t in taken.items() if job in handed}


def _steps(deltas: list[tuple[float, int]]) -> list[tuple[float, int]]:
    """Running totals of (time, +/-n) changes, one value per distinct time."""
    out: list[tuple[float, int]] = []
    level = 0
    for t, d in sorted(deltas, key=lambda x: (x[0], x[1])):
        level += d
        if out and out[-1][0] == t:
            out[-1] = (t, level)
        else:
            out.append((t, level))
    return out


def _counter(name: str, series: list[tuple[float, float]], key: str) -> list[dict]:
    return [{"ph": "C", "name": name, "ts": _us(t), "pid": PID, "tid": 0, "args": {key: value}} for t, value in series]


def counters(result: RunResult) -> list[dict]:
    """The ``"C"`` events of ``result``: what the run had in flight over time (see the module's docstring)."""
    requests = [r for s in result.spans for r in s.get("requests", [])]
    out = _counter("requests in flight", _steps([(r[0], 1) for r in requests] + [(r[1], -1) for r in requests]),
                   "requests")
    limited = sorted(r[1] for r in requests if r[2] == 429)
    out += _counter("429s", [(0.0, 0)] + [(t, n) for n, t in enumerate(limited, 1)], "429s")
    db = [s for s in result.spans if s["stage"] == "db"]
    out += _counter("threads in a db stage", _steps([(s["start"], 1) for s in db] + [(s["end"], -1) for s in db]),
                    "threads")
    moved = handovers(result.spans)
    if moved:
        out += _counter("committer queue", _steps([(h, 1) for h, _ in moved.values()]
                                                  + [(t, -1) for _, t in moved.values()]), "jobs")
    checked_out = result.resources.get("pool_checkouts") or []
    out += _counter("DB connections checked out", [(t, n) for t, n in checked_out], "connections")
    timeline = result.resources.get("timeline") or []
    out += _counter("CPU %", [(row[0], row[1]) for row in timeline], "cpu")
    out += _counter("DB connections open (server)", [(row[0], row[3]) for row in timeline], "connections")
    return out


def to_trace_events(result: RunResult) -> dict:
    """``result``'s spans, requests, threads and counters as a trace-event JSON object (``{"traceEvents": [...]}``)."""
    events: list[dict] = [{"ph": "M", "name": "process_name", "pid": PID, "tid": 0,
                           "args": {"name": f"perflab backfill: {result.label} ({result.run_id})"}}]
    names: dict[int, str] = {}
    for span in result.spans:
        names.setdefault(span["tid"], span["thread"])
        tid = span["tid"]
        events.append({"ph": "X", "cat": "stage", "name": span["stage"], "ts": _us(span["start"]),
                       "dur": _us(span["end"] - span["start"]), "pid": PID, "tid": tid,
                       "args": _job_args(span["jobs"])})
        for start, end, status in span.get("requests", []):
            events.append({"ph": "X", "cat": "request", "name": "request", "ts": _us(start), "dur": _us(end - start),
                           "pid": PID, "tid": tid, "args": {"status": status}})
    workers = defaultdict(int)
    for tid, name in names.items():
        workers[name] += 1
        label = name if workers[name] == 1 else f"{name} ({workers[name]})"  # batch groups reuse pool thread names
        events.append({"ph": "M", "name": "thread_name", "pid": PID, "tid": tid, "args": {"name": label}})
    events += counters(result)
    return {"traceEvents": events, "displayTimeUnit": "ms",
            "otherData": {"run_id": result.run_id, "label": result.label, "wall_seconds": result.wall_seconds}}


def trace_name(result: RunResult) -> str:
    """A file name for ``result``'s trace: its label made safe for a path, and its run id."""
    return f"{re.sub(r'[^A-Za-z0-9_.+-]+', '_', result.label).strip('_') or 'run'}-{result.run_id}.trace.json"


def write_trace(result: RunResult, path: str | Path) -> Path:
    """Write ``result``'s trace to ``path`` (a ``.json`` file, else a folder to put ``<label>-<run_id>.trace.json``
    in) and return the file."""
    path = Path(path)
    if path.suffix != ".json":
        path = path / trace_name(result)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_trace_events(result), allow_nan=False))
    return path
