"""Matplotlib figures of the DB studies (notebook 04): rows/s per strategy and the batch-size curve."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from perflab.db.study import BatchSweep


def writer_rates(table: pd.DataFrame, reference: str = "psql \\copy", title: str = "Rows/s per strategy") -> Figure:
    """Horizontal bars of rows/s (log scale) per strategy, each labelled with its ratio to ``reference``."""
    rates = table["rows_per_s"].sort_values()
    ref = rates.get(reference)
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rates) + 1.2))
    colors = ["#BBBBBB" if name == reference else "#DD8452" for name in rates.index]
    bars = ax.barh(rates.index, rates.to_numpy(), color=colors)
    for rect, rate in zip(bars, rates):
        note = f" {rate:,.0f}/s" + (f"  ({rate / ref:.2f}x {reference})" if ref else "")
        ax.text(rect.get_width(), rect.get_y() + rect.get_height() / 2, note, va="center", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(rates.min() / 2, rates.max() * 15)
    ax.set_xlabel("rows per second (log scale, median of repeats)")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def batch_curve(sweeps: list[BatchSweep], fix_value: int | None = None) -> Figure:
    """Rows/s against batch size per writer (median line, min-max band), the fix's size marked."""
    fig, ax = plt.subplots(figsize=(8, 3.2))
    for sweep in sweeps:
        curve = sweep.curve
        lo, hi = curve["rows"] / curve["max_s"], curve["rows"] / curve["min_s"]
        line, = ax.plot(curve.index, curve["rows_per_s"], marker="o", label=f"{sweep.writer} (best {sweep.best:,})")
        ax.fill_between(curve.index, lo, hi, color=line.get_color(), alpha=0.15)
    if fix_value:
        ax.axvline(fix_value, color="#555555", linestyle="--", label=f"db.batch_size fix: {fix_value:,}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("rows per batch (one transaction each)")
    ax.set_ylabel("rows per second")
    ax.set_title("Batch-size sweep")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
