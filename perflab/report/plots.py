"""Matplotlib figures the notebooks show; each takes results and returns a Figure."""

from __future__ import annotations

import base64
import io

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from perflab.errors import PerflabError
from perflab.measure.results import RunResult, RunSet
from perflab.measure.timing import STAGES
from perflab.pipeline.fixes import FixSet

STAGE_COLORS = {"api": "#4C72B0", "db": "#DD8452", "compute": "#55A868", "idle": "#BBBBBB"}


def breakdown_bar(result: RunResult, title: str | None = None) -> Figure:
    """Horizontal bars of busy seconds per stage, labelled with seconds and share."""
    table = result.breakdown()
    fig, ax = plt.subplots(figsize=(7, 2.6))
    bars = ax.barh(table.index, table["seconds"], color=[STAGE_COLORS[s] for s in table.index])
    for rect, (secs, share) in zip(bars, zip(table["seconds"], table["share"])):
        ax.text(rect.get_width(), rect.get_y() + rect.get_height() / 2, f" {secs:.2f}s ({share:.0%})",
                va="center")
    ax.invert_yaxis()
    ax.set_xlabel("busy seconds")
    ax.set_xlim(0, max(table["seconds"].max() * 1.3, 1e-3))
    ax.set_title(title or f"{result.label}: {result.wall_seconds:.2f}s wall, {len(result.jobs)} jobs")
    fig.tight_layout()
    return fig


def stacked_breakdown(runs: list[RunSet | RunResult], title: str = "Where the time goes",
                      basis: str = "wall") -> Figure:
    """One stacked bar per run set: median seconds per stage, whiskers spanning the wall-time spread.

    ``basis="wall"`` stacks wall-clock attribution (overlapping stages split, plus idle), so a bar's
    length is the run's wall time even with parallel workers; ``"busy"`` stacks busy seconds, which
    add up to more than the wall time when stages overlap.
    """
    sets = [r if isinstance(r, RunSet) else RunSet(r.label, [r]) for r in runs]
    stages = (*STAGES, "idle") if basis == "wall" else STAGES
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(sets) + 2.0))
    labels = [s.label for s in sets]
    left = [0.0] * len(sets)
    for stage in stages:
        vals = [float(np.median([(r.wall_stage_seconds if basis == "wall" else r.stage_seconds).get(stage, 0.0)
                                 for r in s.runs])) for s in sets]
        ax.barh(labels, vals, left=left, label=stage, color=STAGE_COLORS[stage])
        left = [a + b for a, b in zip(left, vals)]
    walls = [s.median("wall_seconds") for s in sets]
    lo = [w - s.spread("wall_seconds")[0] for w, s in zip(walls, sets)]
    hi = [s.spread("wall_seconds")[1] - w for w, s in zip(walls, sets)]
    ax.errorbar(walls, labels, xerr=[lo, hi], fmt="k|", capsize=4, label="wall (median, min-max)")
    ax.invert_yaxis()
    ax.set_xlabel("wall seconds, split among the stages active" if basis == "wall" else "busy seconds per stage")
    ax.set_title(title)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=5, fontsize="small", frameon=False)
    fig.tight_layout()
    return fig


def timeline(result: RunResult, title: str | None = None, critical: bool = True) -> Figure:
    """A Gantt of the run: one row per thread that ran stages, each stage interval a bar in its colour over wall
    time; with ``critical`` the critical path (what the wall clock waited on) is outlined in black."""
    from perflab.measure.critical_path import critical_path

    if not result.spans:
        raise ValueError(f"run {result.label} ({result.run_id}) recorded no spans: it has no timeline")
    rows: dict[int, str] = {}
    for span in sorted(result.spans, key=lambda s: s["start"]):
        rows.setdefault(span["tid"], span["thread"])
    seen: dict[str, int] = {}
    labels = []
    for name in rows.values():
        seen[name] = seen.get(name, 0) + 1
        labels.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    row = {tid: i for i, tid in enumerate(rows)}
    height = min(12.0, 0.45 * len(rows) + 1.8)
    fig, ax = plt.subplots(figsize=(9, height))
    for stage in STAGES:
        for tid in rows:
            bars = [(s["start"], s["end"] - s["start"]) for s in result.spans
                    if s["stage"] == stage and s["tid"] == tid]
            if bars:
                ax.broken_barh(bars, (row[tid] - 0.4, 0.8), facecolors=STAGE_COLORS[stage])
    if critical:
        path = critical_path(result)
        for s in path.spans:
            ax.add_patch(plt.Rectangle((s.start, row[s.tid] - 0.4), s.seconds, 0.8, fill=False, edgecolor="black",
                                       linewidth=0.8))
    ax.set_yticks(range(len(rows)), labels, fontsize="small" if len(rows) <= 24 else "xx-small")
    ax.invert_yaxis()
    ax.set_xlim(0, max(result.wall_seconds, max(s["end"] for s in result.spans)))
    ax.set_xlabel("seconds since the run started")
    handles = [plt.Rectangle((0, 0), 1, 1, color=STAGE_COLORS[s]) for s in STAGES]
    names = list(STAGES)
    if critical:
        handles.append(plt.Rectangle((0, 0), 1, 1, fill=False, edgecolor="black"))
        names.append("critical path")
    ax.set_title(title or f"{result.label}: {result.wall_seconds:.2f}s wall, {len(result.jobs)} jobs, "
                 f"{len(rows)} thread{'s' if len(rows) > 1 else ''}")
    fig.tight_layout(rect=(0, 0.4 / height, 1, 1))  # room for the legend below
    fig.legend(handles, names, loc="lower center", ncol=len(names), fontsize="small", frameon=False)
    return fig


HISTORY_SERIES = {"baseline": ("o", "#C44E52"), "all fixes": ("s", "#55A868"), "other fixes": ("^", "#4C72B0")}
"""How the history chart tells configurations apart: marker and colour per kind of run."""


def history_kind(fixes: str | None) -> str:
    """Which series of the history chart a run with fixes spec ``fixes`` belongs to (a run stored without one,
    NaN in the history frame, is an unknown configuration: "other fixes")."""
    if not isinstance(fixes, str):
        return "other fixes"
    if fixes in ("", "none"):
        return "baseline"
    try:
        all_fixes = FixSet.parse(fixes).names == FixSet.parse("all").names
    except PerflabError:
        return "other fixes"
    return "all fixes" if all_fixes else "other fixes"


def history_chart(runs: pd.DataFrame, title: str = "Every run on this machine") -> Figure:
    """Wall seconds of stored runs over time: baselines (no fix), all fixes and other configurations as three marked
    series in a legend that counts runs and presets, so a fixed run is never read as a baseline."""
    fig, ax = plt.subplots(figsize=(8, 3.2))
    kinds = runs["fixes"].map(history_kind)
    when = pd.to_datetime(runs["started_at"], utc=True)
    for kind, (marker, color) in HISTORY_SERIES.items():
        group = runs[kinds == kind]
        if group.empty:
            continue
        presets = ", ".join(sorted({str(p) for p in group["preset"].dropna()})) or "no preset"
        specs = group["fixes"].nunique()
        what = f"{specs} configuration{'s' if specs > 1 else ''}, " if kind == "other fixes" else ""
        ax.plot(when[group.index], group["wall_seconds"], marker, color=color, alpha=0.8,
                label=f"{kind} ({what}{len(group)} run{'s' if len(group) > 1 else ''}; preset {presets})")
    ax.set_xlabel(f"run started ({when.min():%Y-%m-%d} to {when.max():%Y-%m-%d}, UTC)")
    ax.set_ylabel("wall seconds")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
    ax.set_title(title)
    ax.legend(fontsize="x-small", loc="best")
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def to_png_base64(fig: Figure) -> str:
    """A figure as a base64 PNG, for embedding in a standalone HTML page."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def breaker_timeline(report: dict, outage: tuple[float, float] | None = None,
                     title: str = "Circuit breaker through an API outage") -> Figure:
    """Breaker state over time (a step line) above each guarded call as a bar coloured by its outcome."""
    colors = {"success": "#55A868", "failure": "#C44E52", "refused": "#DD8452", "gave_up": "#8172B2"}
    levels = {"closed": 0, "half_open": 1, "open": 2}
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 3.6), sharex=True, height_ratios=[1, 1.3])
    events = report["events"]
    calls = report["calls"]
    end = max([c["end"] for c in calls] + [e["t"] for e in events] + [outage[1] if outage else 0.0])
    times = [e["t"] for e in events] + [end]
    states = [levels[e["state"]] for e in events]
    top.step(times, states + states[-1:], where="post", color="#333")
    top.set_yticks(list(levels.values()), list(levels))
    top.set_ylim(-0.5, 2.5)
    for i, c in enumerate(calls):
        bottom.barh(i % 12, c["end"] - c["start"], left=c["start"], color=colors.get(c["outcome"], "#999"),
                    height=0.8)
    for ax in (top, bottom):
        if outage:
            ax.axvspan(*outage, color="#C44E52", alpha=0.12, label="API down")
    bottom.set_yticks([])
    bottom.set_xlabel("seconds since the run started")
    handles = [plt.Rectangle((0, 0), 1, 1, color=col) for col in colors.values()]
    bottom.legend(handles, list(colors), loc="upper right", fontsize=8, ncol=4)
    top.set_title(title)
    fig.tight_layout()
    return fig
