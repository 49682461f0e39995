"""Matplotlib figures the notebooks show; each takes results and returns a Figure."""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from perflab.measure.results import RunResult
from perflab.measure.timing import STAGES

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


def stacked_breakdown(results: list[RunResult], title: str = "Where the time goes") -> Figure:
    """One stacked bar of busy seconds per run, stages in a fixed order and colour."""
    fig, ax = plt.subplots(figsize=(8, 0.6 * len(results) + 1.5))
    left = [0.0] * len(results)
    labels = [r.label for r in results]
    for stage in STAGES:
        vals = [r.stage_seconds.get(stage, 0.0) for r in results]
        ax.barh(labels, vals, left=left, label=stage, color=STAGE_COLORS[stage])
        left = [a + b for a, b in zip(left, vals)]
    ax.invert_yaxis()
    ax.set_xlabel("busy seconds")
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig
