"""Many series' bars, features and coverage in one transaction (the ``db.group_commit`` fix).

A job's own writes cost a handful of round trips each (lock, check, COPY, upsert, coverage) for a few
dozen rows; a group of jobs pays them once. Bars and features go in by binary COPY: straight into the
table when none of the group's ranges holds rows yet, else through a temporary staging table merged with
``ON CONFLICT`` (bars: keep the stored row; features: replace). One transaction, so a retry after a lost
connection rewrites the whole group and nothing lands twice.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
import pandas as pd
from psycopg2.extras import execute_values
from sqlalchemy.engine import Engine

from perflab.db import binary_copy as bc
from perflab.db.coverage import day_start, final_range
from perflab.db.transactions import RETRY, raw_transaction
from perflab.db.writers import COLUMNS as BAR_COLUMNS
from perflab.db.writers import FLOAT_FIELDS


@dataclass
class SeriesWrite:
    """One (symbol, timeframe)'s part of a group: its bars (as ``writers.prepare`` returns them), its
    features (``None`` for none) and the day ranges to record complete."""

    symbol: str
    timeframe: str
    bars: pd.DataFrame
    features: pd.DataFrame | None = None
    ranges: list[tuple[date, date]] = field(default_factory=list)


def _keys(items: Sequence[SeriesWrite], frames: Sequence[pd.DataFrame]) -> tuple[bc.CopyColumn, bc.CopyColumn]:
    lengths = [len(f) for f in frames]
    return (bc.text(np.repeat(np.array([i.symbol for i in items], dtype=object), lengths)),
            bc.text(np.repeat(np.array([i.timeframe for i in items], dtype=object), lengths)))


def bars_payload(items: Sequence[SeriesWrite]) -> bytes:
    frames = [i.bars for i in items]
    bars = pd.concat(frames, ignore_index=True)
    return bc.encode([*_keys(items, frames), bc.timestamptz(bars["time"]),
                      *(bc.float8(bars[name]) for name in FLOAT_FIELDS), bc.int8(bars["transactions"])], len(bars))


def feature_columns(items: Sequence[SeriesWrite]) -> list[str]:
    """The feature columns the frames carry (every column but ``time``; all frames alike)."""
    return [c for c in items[0].features.columns if c != "time"]


def features_payload(items: Sequence[SeriesWrite]) -> bytes:
    """Features in :func:`feature_columns` order: object columns as text, the rest as doubles."""
    frames = [i.features for i in items]
    feats = pd.concat(frames, ignore_index=True)
    cols = [bc.text(feats[c].to_numpy(dtype=object)) if feats[c].dtype == object else bc.float8(feats[c])
            for c in feature_columns(items)]
    return bc.encode([*_keys(items, frames), bc.timestamptz(feats["time"]), *cols], len(feats))


def _any_stored(cur, table: str, spans: list[tuple]) -> bool:
    """Whether ``table`` holds a row in any (symbol, timeframe, first, last) span (one query for the group)."""
    cur.execute(f"SELECT EXISTS (SELECT 1 FROM {table} t JOIN unnest(%s::text[], %s::text[], %s::timestamptz[], "
                "%s::timestamptz[]) AS s(symbol, timeframe, a, b) ON t.symbol = s.symbol AND "
                "t.timeframe = s.timeframe AND t.time BETWEEN s.a AND s.b)", [list(c) for c in zip(*spans)])
    return cur.fetchone()[0]


def _copy(cur, table: str, columns: Sequence[str], payload: bytes, spans: list[tuple], merge: str) -> None:
    """COPY into ``table`` directly when the spans are empty there, else via a staging table and ``merge``."""
    cols = ", ".join(columns)
    target = table
    if _any_stored(cur, table, spans):
        target = f"{table}_stage"
        cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {target} (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
    cur.copy_expert(f"COPY {target} ({cols}) FROM STDIN (FORMAT binary)", io.BytesIO(payload), size=1 << 20)
    if target != table:
        cur.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {target} ON CONFLICT {merge}")


def _utc(moment) -> np.datetime64:
    return np.datetime64(pd.Timestamp(moment).tz_convert("UTC").tz_localize(None), "us")


def _coverage_rows(items: Sequence[SeriesWrite], today: date | None) -> list[tuple]:
    """(symbol, timeframe, first day, last day, bars in those days) for every final range of every item."""
    rows = []
    for item in items:
        times = item.bars["time"].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype="datetime64[us]")
        for first, last in item.ranges:
            span = final_range(first, last, today)
            if span is None:
                continue
            a, b = np.searchsorted(times, [_utc(day_start(span[0])), _utc(day_start(span[1] + timedelta(days=1)))])
            rows.append((item.symbol, item.timeframe, span[0], span[1], int(b - a)))
    return rows


def write_group(engine: Engine, items: Sequence[SeriesWrite], today: date | None = None) -> None:
    """Write every item's bars, features and coverage in one transaction (retried whole when transient)."""
    with_bars = [i for i in items if len(i.bars)]
    with_feats = [i for i in items if i.features is not None and len(i.features)]
    coverage = _coverage_rows(items, today)
    bar_spans = [(i.symbol, i.timeframe, i.bars["time"].iloc[0], i.bars["time"].iloc[-1]) for i in with_bars]
    feat_spans = [(i.symbol, i.timeframe, i.features["time"].iloc[0], i.features["time"].iloc[-1]) for i in with_feats]
    bars = bars_payload(with_bars) if with_bars else b""
    feats = features_payload(with_feats) if with_feats else b""
    names = feature_columns(with_feats) if with_feats else []
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in names)

    def attempt() -> int:
        with raw_transaction(engine) as cur:
            if with_bars:
                _copy(cur, "market_data", BAR_COLUMNS, bars, bar_spans, "DO NOTHING")
            if with_feats:
                _copy(cur, "quant_features", ["symbol", "timeframe", "time", *names], feats, feat_spans,
                      f"(symbol, timeframe, time) DO UPDATE SET {updates}, computed_at = now()")
            if coverage:
                execute_values(cur, "INSERT INTO fetch_coverage (symbol, timeframe, first_day, last_day, rows) "
                               "VALUES %s ON CONFLICT (symbol, timeframe, first_day, last_day) DO UPDATE SET "
                               "rows = EXCLUDED.rows, recorded_at = now()", coverage)
        return len(items)

    RETRY.run(attempt)

