"""Many series' bars, features and coverage in one transaction (the ``db.group_commit`` fix).

A job's own writes cost a handful of round trips each (lock, check, COPY, upsert, coverage) for a few
dozen rows; a group of jobs pays them once. Bars go in by binary COPY, straight into the table when none
of the group's ranges holds rows yet, else through a staging table merged with ``ON CONFLICT DO NOTHING``.
Features go the same way: straight into quant_features by binary COPY (NaN as NULL, labels as text) when
none of the group's ranges holds features yet, the common case of a backfill, which skips the merge's
per-row conflict check (about half the database time of a new range). Where features are stored they
go through a staging table (they replace what is stored): NaN travels as float NaN and the text
features as small integer codes, so every row of a series has one binary layout (cheap to build), and
the merge turns them into NULLs and labels. One transaction, so a retry after a lost
connection rewrites the whole group and nothing lands twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
import pandas as pd
from sqlalchemy.engine import Engine

from perflab.db import binary_copy as bc
from perflab.db import driver
from perflab.db.coverage import day_start, final_range
from perflab.db.transactions import RETRY, raw_transaction
from perflab.db.writers import COLUMNS as BAR_COLUMNS
from perflab.db.writers import bar_copy_columns, create_stage, merge_stage


@dataclass
class SeriesWrite:
    """One (symbol, timeframe)'s part of a group: its bars (sorted, one per time, as the client or
    ``writers.prepare`` returns them), its features (``None`` for none) and the day ranges to record complete."""

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
    return bc.encode(bar_copy_columns(bars, *_keys(items, frames)), len(bars))


def feature_columns(items: Sequence[SeriesWrite]) -> list[str]:
    """The feature columns the frames carry (every column but ``time``; all frames alike)."""
    return [c for c in items[0].features.columns if c != "time"]


@dataclass(frozen=True)
class FeaturePayload:
    """Features of a group as binary COPY rows for the staging table, and how to merge them."""

    payload: bytes
    numeric: list[str]
    labels: dict[str, list[str]]  # text column -> its labels; staged as code (0 = NULL, k = labels[k - 1])


def features_payload(items: Sequence[SeriesWrite]) -> FeaturePayload:
    """Object columns become int2 codes, numeric ones stay doubles with NaN (no NULL): one layout per series."""
    frames = [i.features for i in items]
    feats = pd.concat(frames, ignore_index=True)
    names = feature_columns(items)
    numeric = [c for c in names if feats[c].dtype != object]
    labels, cols = {}, [bc.float8(feats[c], nan_is_null=False) for c in numeric]
    for c in names:
        if feats[c].dtype == object:
            codes, uniques = pd.factorize(feats[c].to_numpy(dtype=object), use_na_sentinel=True)
            labels[c] = [str(u) for u in uniques]
            cols.append(bc.CopyColumn(">i2", (codes + 1).astype(np.int16)))
    payload = bc.encode([*_keys(items, frames), bc.timestamptz(feats["time"]), *cols], len(feats))
    return FeaturePayload(payload, numeric, labels)


def features_copy_payload(items: Sequence[SeriesWrite]) -> tuple[list[str], bytes]:
    """The group's features as quant_features rows for a straight binary COPY: NaN and missing labels are NULL."""
    frames = [i.features for i in items]
    feats = pd.concat(frames, ignore_index=True)
    names = feature_columns(items)
    cols = [bc.text(_labels(feats[c])) if feats[c].dtype == object else bc.float8(feats[c]) for c in names]
    return names, bc.encode([*_keys(items, frames), bc.timestamptz(feats["time"]), *cols], len(feats))


def _labels(column: pd.Series) -> np.ndarray:
    """A text feature's values with every missing one (NaN or None) as None, COPY's NULL."""
    values = column.to_numpy(dtype=object)
    return np.where(pd.isna(values), None, values)


def _write_features(cur, items: Sequence[SeriesWrite], spans: list[tuple], staged: Callable[[], FeaturePayload],
                    updates: str) -> None:
    """COPY the features into quant_features when the spans hold none there, else merge them through staging."""
    if _any_stored(cur, spans, "quant_features"):
        _stage_features(cur, staged(), updates)
        return
    names, payload = features_copy_payload(items)
    driver.copy_in(cur, f"COPY quant_features (symbol, timeframe, time, {', '.join(names)}) FROM STDIN "
                   "(FORMAT binary)", payload)


def _stage_features(cur, feats: FeaturePayload, updates: str) -> None:
    stage = "quant_features_codes_stage"
    defs = ", ".join([*(f"{c} float8" for c in feats.numeric), *(f"{c} int2" for c in feats.labels)])
    cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {stage} (symbol text, timeframe text, time timestamptz, {defs}) "
                "ON COMMIT DELETE ROWS")
    staged = ["symbol", "timeframe", "time", *feats.numeric, *feats.labels]
    driver.copy_in(cur, f"COPY {stage} ({', '.join(staged)}) FROM STDIN (FORMAT binary)", feats.payload)
    values = [*(f"NULLIF({c}, 'NaN'::float8)" for c in feats.numeric),
              *(f"(%s::text[])[NULLIF({c}, 0)]" for c in feats.labels)]
    cur.execute(f"INSERT INTO quant_features (symbol, timeframe, time, {', '.join([*feats.numeric, *feats.labels])}) "
                f"SELECT symbol, timeframe, time, {', '.join(values)} FROM {stage} "
                f"ON CONFLICT (symbol, timeframe, time) DO UPDATE SET {updates}, computed_at = now()",
                list(feats.labels.values()))


def _any_stored(cur, spans: list[tuple], table: str = "market_data") -> bool:
    """Whether ``table`` holds a row in any (symbol, timeframe, first, last) span (one query for the group)."""
    cur.execute(f"SELECT EXISTS (SELECT 1 FROM {table} t JOIN unnest(%s::text[], %s::text[], %s::timestamptz[], "
                "%s::timestamptz[]) AS s(symbol, timeframe, a, b) ON t.symbol = s.symbol AND "
                "t.timeframe = s.timeframe AND t.time BETWEEN s.a AND s.b)", [list(c) for c in zip(*spans)])
    return cur.fetchone()[0]


def _copy_bars(cur, payload: bytes, spans: list[tuple]) -> None:
    """COPY into market_data directly when the spans are empty there, else via the writers' staging merge."""
    target = create_stage(cur) if _any_stored(cur, spans) else "market_data"
    driver.copy_in(cur, f"COPY {target} ({', '.join(BAR_COLUMNS)}) FROM STDIN (FORMAT binary)", payload)
    if target != "market_data":
        merge_stage(cur)


def _coverage_rows(items: Sequence[SeriesWrite], today: date | None) -> list[tuple]:
    """(symbol, timeframe, first day, last day, bars in those days) for every final range of every item."""
    rows = []
    for item in items:
        for first, last in item.ranges:
            span = final_range(first, last, today)
            if span is None:
                continue
            bounds = [pd.Timestamp(day_start(span[0])), pd.Timestamp(day_start(span[1] + timedelta(days=1)))]
            a, b = item.bars["time"].searchsorted(bounds) if len(item.bars) else (0, 0)
            rows.append((item.symbol, item.timeframe, span[0], span[1], int(b - a)))
    return rows


def write_group(engine: Engine, items: Sequence[SeriesWrite], today: date | None = None) -> None:
    """Write every item's bars, features and coverage in one transaction (retried whole when transient)."""
    with_bars = [i for i in items if len(i.bars)]
    with_feats = [i for i in items if i.features is not None and len(i.features)]
    coverage = _coverage_rows(items, today)
    bar_spans = [(i.symbol, i.timeframe, i.bars["time"].iloc[0], i.bars["time"].iloc[-1]) for i in with_bars]
    feat_spans = [(i.symbol, i.timeframe, i.features["time"].iloc[0], i.features["time"].iloc[-1])
                  for i in with_feats]
    bars = bars_payload(with_bars) if with_bars else b""
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in feature_columns(with_feats)) if with_feats else ""
    staged: list[FeaturePayload] = []  # built on the first attempt that needs it, kept for a retry

    def staged_features() -> FeaturePayload:
        if not staged:
            staged.append(features_payload(with_feats))
        return staged[0]

    def attempt() -> int:
        with raw_transaction(engine) as cur:
            if with_bars:
                _copy_bars(cur, bars, bar_spans)
            if with_feats:
                _write_features(cur, with_feats, feat_spans, staged_features, updates)
            if coverage:
                driver.insert_values(cur, "INSERT INTO fetch_coverage (symbol, timeframe, first_day, last_day, rows) "
                                     "VALUES %s ON CONFLICT (symbol, timeframe, first_day, last_day) DO UPDATE SET "
                                     "rows = EXCLUDED.rows, recorded_at = now()", coverage)
        return len(items)

    RETRY.run(attempt)

