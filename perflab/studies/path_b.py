"""Measurements of the write path on the same rows: strategies side by side, the batch-size sweep, the indexes.

Every study empties ``market_data`` and ``quant_features`` before each timed write (as a measured backfill
does), so every strategy and setting starts from the same state. Times are medians of repeats with the
spread kept beside them.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from perflab.db.migrate import index_statements, reset_data, set_indexes
from perflab.db.psql import psql_binary
from perflab.db.writers import COLUMNS, WRITERS, Batch, copy_text_payload, get_writer, prepare
from perflab.errors import PerflabError
from perflab.simulator.bars import synthetic_bars

if TYPE_CHECKING:
    from perflab.measure.results import RunSet
import matplotlib.pyplot as plt
from matplotlib.figure import Figure


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


SWEEP_SIZES = (100, 250, 500, 1000, 2000, 5000, 10_000, 20_000)


@dataclass(frozen=True)
class StudySize:
    """How many rows each study writes at a preset: small enough for CI at smoke, telling at standard
    (``benchmarks/bench_db.py`` runs the big sizes).

    ``caps`` bounds the rows of the slow strategies, whose rate is measured on the first rows only.
    """

    rows: int
    caps: dict[str, int]
    sweep_rows: int
    sweep_sizes: tuple[int, ...]
    index_series: int
    index_rows_per_series: int
    repeats: int

    @classmethod
    def for_preset(cls, preset: str) -> StudySize:
        if preset == "smoke":
            return cls(rows=5_000, caps={"orm_row": 300, "orm_bulk": 1_000, "execute_values": 2_000},
                       sweep_rows=10_000, sweep_sizes=(100, 250, 500, 1000, 2000, 5000, 10_000),
                       index_series=10, index_rows_per_series=500, repeats=2)
        return cls(rows=25_000, caps={"orm_row": 1_000, "orm_bulk": 5_000, "execute_values": 15_000},
                   sweep_rows=20_000, sweep_sizes=SWEEP_SIZES, index_series=20, index_rows_per_series=1_000,
                   repeats=2)


@dataclass(frozen=True)
class Timing:
    """Seconds of one measured thing over repeats."""

    rows: int
    seconds: list[float]

    @property
    def median_s(self) -> float:
        return float(np.median(self.seconds))

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.median_s if self.median_s else float("nan")

    def row(self) -> dict:
        return {"rows": self.rows, "median_s": self.median_s, "min_s": min(self.seconds),
                "max_s": max(self.seconds), "rows_per_s": self.rows_per_s}


def time_write(engine: Engine, writer: str, bars: pd.DataFrame, *, batch_size: int | None = None, repeats: int = 3,
               rewrite: bool = False, symbol: str = "BENCH", timeframe: str = "1m") -> Timing:
    """Seconds to write ``bars`` into an empty table (or, with ``rewrite``, again over the same stored rows)."""
    write = get_writer(writer).write
    seconds = []
    for _ in range(repeats):
        reset_data(engine)
        if rewrite:
            get_writer("copy_binary").write(engine, symbol, timeframe, bars, None)
        start = time.perf_counter()
        write(engine, symbol, timeframe, bars, batch_size)
        seconds.append(time.perf_counter() - start)
    reset_data(engine)
    return Timing(len(bars), seconds)


def compare_writers(engine: Engine, bars: pd.DataFrame, names: Iterable[str] = tuple(WRITERS), *,
                    caps: dict[str, int] | None = None, batch_size: int | None = None,
                    repeats: int = 3) -> pd.DataFrame:
    """Rows/s of each strategy on the same rows: into an empty table, and re-writing rows already stored.

    ``caps`` limits the rows for slow strategies (``orm_row``): their rate is measured on the first rows.
    """
    caps = caps or {}
    out = []
    for name in names:
        rows = bars.iloc[:caps.get(name, len(bars))]
        fresh = time_write(engine, name, rows, batch_size=batch_size, repeats=repeats)
        again = time_write(engine, name, rows, batch_size=batch_size, repeats=1, rewrite=True)
        out.append({"writer": name, **fresh.row(), "rewrite_rows_per_s": again.rows_per_s})
    return pd.DataFrame(out).set_index("writer")


@dataclass(frozen=True)
class BatchSweep:
    """The plan's ``find_optimal_batch_size`` made real: the measured curve and the size with the best median."""

    writer: str
    curve: pd.DataFrame

    @property
    def best(self) -> int:
        return int(self.curve["rows_per_s"].idxmax())


def find_optimal_batch_size(engine: Engine, bars: pd.DataFrame, writer: str = "copy_binary",
                            sizes: Sequence[int] = SWEEP_SIZES, repeats: int = 3) -> BatchSweep:
    """Write the same rows at each batch size (one transaction per batch) and keep rows/s per size."""
    rows = [{"batch_size": size, **time_write(engine, writer, bars, batch_size=size, repeats=repeats).row()}
            for size in sizes if size <= len(bars)]
    return BatchSweep(writer, pd.DataFrame(rows).set_index("batch_size"))


INDEX_CONFIGS = {
    "primary key only": (),
    "pk + (symbol, timeframe, time DESC)": ("idx_symbol_timeframe_time",),
    "pk + the plan's three indexes": ("idx_symbol_timeframe_time", "idx_symbol_timeframe_created",
                                      "idx_quant_features_symbol_timeframe"),
}

INDEX_QUERIES = {
    "latest bar of one series": "SELECT * FROM market_data WHERE symbol = 'S0001' AND timeframe = '1m' "
                                "ORDER BY time DESC LIMIT 1",
    "latest bar of every series": "SELECT DISTINCT ON (symbol, timeframe) * FROM market_data "
                                  "ORDER BY symbol, timeframe, time DESC",
    "last 100 inserted of one series": "SELECT * FROM market_data WHERE symbol = 'S0001' AND timeframe = '1m' "
                                       "ORDER BY created_at DESC LIMIT 100",
    "features of one series (read_features)": "SELECT * FROM quant_features WHERE symbol = 'S0001' AND "
                                              "timeframe = '1m' ORDER BY time",
    "latest computed features of one series": "SELECT * FROM quant_features WHERE symbol = 'S0001' AND "
                                              "timeframe = '1m' ORDER BY computed_at DESC LIMIT 1",
}


def explain(engine: Engine, sql: str) -> tuple[float, list[str]]:
    """EXPLAIN ANALYZE: the server's execution milliseconds and the indexes the plan used."""
    with engine.connect() as conn:
        plan = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}").scalar()
    plan = plan if isinstance(plan, list) else json.loads(plan)

    def indexes(node: dict) -> list[str]:
        own = [node["Index Name"]] if "Index Name" in node else []
        return own + [i for child in node.get("Plans", []) for i in indexes(child)]

    return float(plan[0]["Execution Time"]), indexes(plan[0]["Plan"]) or ["(seq scan)"]


def _use_indexes(engine: Engine, names: Sequence[str]) -> None:
    set_indexes(engine, False)
    statements = index_statements()
    with engine.begin() as conn:
        for name in names:
            conn.exec_driver_sql(statements[name])


def _load_series(engine: Engine, writer: str, series: int, rows_per_series: int) -> float:
    bars = synthetic_bars(rows_per_series)
    start = time.perf_counter()
    for i in range(series):
        get_writer(writer).write(engine, f"S{i:04d}", "1m", bars, None)
    seconds = time.perf_counter() - start
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO quant_features (symbol, timeframe, time, log_return) "
                             "SELECT symbol, timeframe, time, ln(close / open) FROM market_data")
        conn.exec_driver_sql("ANALYZE market_data")
        conn.exec_driver_sql("ANALYZE quant_features")
    return seconds


@dataclass(frozen=True)
class IndexStudy:
    """Insert cost and query times per index configuration, measured on the same rows."""

    inserts: pd.DataFrame
    queries: pd.DataFrame


def index_study(engine: Engine, *, series: int = 20, rows_per_series: int = 1_000,
                writers: Sequence[str] = ("execute_values", "copy_binary"), repeats: int = 3,
                configs: dict[str, Sequence[str]] | None = None) -> IndexStudy:
    """For each index configuration: rows/s loading ``series`` series with each writer, and EXPLAIN ANALYZE
    milliseconds of the "latest bar" and feature queries. Leaves the optional indexes dropped."""
    configs = configs or INDEX_CONFIGS
    inserts, queries = [], []
    try:
        for config, names in configs.items():
            _use_indexes(engine, names)
            for writer in writers:
                seconds = []
                for _ in range(repeats):
                    reset_data(engine)
                    seconds.append(_load_series(engine, writer, series, rows_per_series))
                timing = Timing(series * rows_per_series, seconds)
                inserts.append({"indexes": config, "writer": writer, **timing.row()})
            for query, sql in INDEX_QUERIES.items():
                runs = [explain(engine, sql) for _ in range(repeats)]
                ms = [r[0] for r in runs]
                queries.append({"indexes": config, "query": query, "median_ms": float(np.median(ms)),
                                "min_ms": min(ms), "max_ms": max(ms), "index used": ", ".join(runs[-1][1])})
    finally:
        set_indexes(engine, False)
        reset_data(engine)
    return IndexStudy(pd.DataFrame(inserts), pd.DataFrame(queries))


def row_counts(engine: Engine) -> dict[str, int]:
    """Rows and distinct keys in market_data: equal when nothing was duplicated."""
    with engine.connect() as conn:
        rows, keys = conn.execute(sa.text(
            "SELECT count(*), count(DISTINCT (symbol, timeframe, time)) FROM market_data")).one()
    return {"rows": int(rows), "distinct_keys": int(keys)}


def psql_copy(engine: Engine, bars: pd.DataFrame, csv_path: Path, *, repeats: int = 3, symbol: str = "BENCH",
              timeframe: str = "1m") -> Timing:
    """The physical reference: psql's ``\\copy`` of the same rows from a CSV file into the empty table.

    The file is written once, untimed; each timing is psql's whole run (process start included).
    """
    csv_path.write_bytes(copy_text_payload(Batch(symbol, timeframe, prepare(bars))))
    url = engine.url.set(drivername="postgresql")
    env = {**os.environ, "PGPASSWORD": url.password or ""}
    uri = url.set(password=None).render_as_string(hide_password=False)
    command = [str(psql_binary()), uri, "-v", "ON_ERROR_STOP=1", "-q", "-c",
               f"\\copy market_data ({', '.join(COLUMNS)}) FROM '{csv_path}' WITH (FORMAT csv)"]
    seconds = []
    for _ in range(repeats):
        reset_data(engine)
        start = time.perf_counter()
        subprocess.run(command, env=env, check=True, capture_output=True)
        seconds.append(time.perf_counter() - start)
    stored = row_counts(engine)["rows"]
    reset_data(engine)
    if stored != len(prepare(bars)):
        raise PerflabError(f"psql \\copy stored {stored} rows of {len(bars)}: check the server log")
    return Timing(stored, seconds)


def _progress_row(spec: str, runs: list) -> dict:
    db = [r.wall_stage_seconds["db"] for r in runs]
    settings = runs[-1].params["settings"]
    return {"fixes": spec, "writer": settings["writer"], "batch_size": settings["batch_size"],
            "indexes": settings["indexes"], "rows": runs[-1].rows_written, "db s (median)": float(np.median(db)),
            "min": min(db), "max": max(db), "db rows/s": runs[-1].rows_written / float(np.median(db)),
            "wall s": float(np.median([r.wall_seconds for r in runs])), "failures": sum(r.failures for r in runs),
            "peak connections": max(r.resources.get("pool_checkouts_peak", np.nan) for r in runs)}


def fix_progression(steps: Sequence[RunSet], baseline: RunSet) -> pd.DataFrame:
    """Tabulate the db stage of each step's repeated runs (same workload): median seconds with spread, rows/s,
    speed-up over ``baseline``, failures and the peak of connections checked out of the pools.

    Seconds are wall-clock attribution, not busy time: a group committer's threads overlap the fetching
    (and each other), so their busy seconds add up to more than the time they cost the run."""
    rows = [_progress_row(f"{s.label}", s.runs) for s in (baseline, *steps)]
    table = pd.DataFrame(rows).set_index("fixes")
    table["db speed-up"] = table["db s (median)"].iloc[0] / table["db s (median)"]
    return table


WRITER_FORMATS = {"median_s": "{:.3f}", "min_s": "{:.3f}", "max_s": "{:.3f}", "rows_per_s": "{:,.0f}",
                  "rewrite_rows_per_s": "{:,.0f}", "x psql_copy": "{:.2f}x", "x orm_row": "{:,.0f}x"}
"""How notebook 04 displays :func:`writer_table`: seconds to the millisecond, rates whole, ratios as ``1.5x``."""

PROGRESS_FORMATS = {"db s (median)": "{:.3f}", "min": "{:.3f}", "max": "{:.3f}", "db rows/s": "{:,.0f}",
                    "wall s": "{:.2f}", "db speed-up": "{:.1f}x", "peak connections": "{:.0f}"}
"""How notebook 04 displays :func:`fix_progression`."""


def writer_table(writers: pd.DataFrame, reference: Timing, slowest: str = "orm_row") -> pd.DataFrame:
    """The strategies' table with the ``psql \\copy`` reference as a row and each strategy's rows/s as a ratio to
    the reference (``x psql_copy``) and to ``slowest`` (``x orm_row``): the yardsticks the notebook judges by."""
    table = writers.copy()
    table.loc["psql \\copy"] = reference.row()
    table["x psql_copy"] = table["rows_per_s"] / reference.rows_per_s
    table["x orm_row"] = table["rows_per_s"] / table.loc[slowest, "rows_per_s"]
    return table


def headline(writers: pd.DataFrame, progress: pd.DataFrame, sweeps: Sequence[BatchSweep], *, plan_steps: int,
             default_writer: str) -> dict:
    """Notebook 04's published numbers: COPY's rate and ratios (from :func:`writer_table`), the db speed-up after
    the plan's ``plan_steps`` fixes and after copy + group commit (rows of :func:`fix_progression`, baseline
    first), the copy_binary sweep's best size and the peak of connections."""
    copy = writers.loc["copy_binary"]
    best = {s.writer: s.best for s in sweeps}
    return {
        "default writer": default_writer,
        "copy_binary rows/s": f"{copy['rows_per_s']:,.0f}",
        "copy_binary x psql_copy": f"{copy['x psql_copy']:.2f}",
        "copy_binary x orm_row": f"{copy['x orm_row']:,.0f}x",
        "path B db speed-up": f"{progress['db speed-up'].iloc[plan_steps]:.1f}x",
        "copy + group commit db speed-up": f"{progress['db speed-up'].iloc[-1]:.1f}x",
        "sweep best (copy_binary)": best["copy_binary"],
        "peak connections": int(progress["peak connections"].max()),
    }


def index_ratios(study: IndexStudy) -> pd.DataFrame:
    """Insert rows/s per index configuration (rows) and writer (columns) relative to the first configuration."""
    inserts = index_rates(study)
    return inserts / inserts.iloc[0]


def index_rates(study: IndexStudy) -> pd.DataFrame:
    """Median insert rows/s per index configuration (rows, in study order) and writer (columns)."""
    order = list(dict.fromkeys(study.inserts["indexes"]))
    return study.inserts.pivot(index="indexes", columns="writer", values="rows_per_s").loc[order]
