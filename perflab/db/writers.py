"""Ways to write bars into ``market_data``, in a registry chosen by name; all write the same rows.

Every strategy is idempotent and atomic per batch: a batch is one transaction, re-writing rows that are
already stored is a no-op, and a batch that fails is rolled back whole and retried whole when the failure
is transient (lost connection, server restart, a concurrent writer). The COPY strategies write straight
into the table when the batch's time range holds no rows yet, and merge through a temporary staging table
(``INSERT ... SELECT ... ON CONFLICT DO NOTHING``) only where it overlaps. ``orm_row`` is the plan's
baseline (``session.add`` + ``flush`` per row) and ``orm_bulk`` its fix 2 (``bulk_insert_mappings``); both
skip the rows of the batch's range already stored, read in the same transaction.

``write`` returns the rows of the input now stored (one per time; rows that were already there count).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from perflab.db import binary_copy, driver
from perflab.db.engine import driver_engine
from perflab.db.models import MarketData
from perflab.db.transactions import RETRY, raw_transaction
from perflab.errors import InputError

BAR_FIELDS = ("time", "open", "high", "low", "close", "volume", "vwap", "transactions")
COLUMNS = ("symbol", "timeframe", *BAR_FIELDS)
FLOAT_FIELDS = ("open", "high", "low", "close", "volume", "vwap")
_LOCK_SPACE = 7_300_302  # advisory locks (space, hash(symbol|timeframe)) serialise COPY writers of one series
_STAGE = "market_data_stage"


@dataclass(frozen=True)
class Writer:
    """A named write strategy: ``write(engine, symbol, timeframe, bars, batch_size) -> rows stored``."""

    name: str
    summary: str
    write: Callable[[Engine, str, str, pd.DataFrame, int | None], int]


@dataclass(frozen=True)
class Batch:
    """One transaction's rows of one (symbol, timeframe), sorted by time, one row per time."""

    symbol: str
    timeframe: str
    frame: pd.DataFrame

    @property
    def first(self) -> datetime:
        return self.frame["time"].iloc[0].to_pydatetime()

    @property
    def last(self) -> datetime:
        return self.frame["time"].iloc[-1].to_pydatetime()

    def __len__(self) -> int:
        return len(self.frame)

    def columns(self) -> dict[str, list]:
        """Python values per bar column, NaN as None (SQL NULL)."""
        out: dict[str, list] = {"time": list(self.frame["time"].dt.to_pydatetime())}
        for name in BAR_FIELDS[1:]:
            col = self.frame[name]
            out[name] = col.astype(object).where(col.notna(), None).tolist() if col.hasnans else col.tolist()
        return out

    def tuples(self) -> list[tuple]:
        cols = self.columns()
        n = len(self)
        return list(zip([self.symbol] * n, [self.timeframe] * n, *(cols[f] for f in BAR_FIELDS)))

    def dicts(self) -> list[dict]:
        return [dict(zip(COLUMNS, row)) for row in self.tuples()]


def in_order(bars: pd.DataFrame) -> bool:
    """Sorted by time with one bar per time, as the client returns them."""
    times = bars["time"]
    return times.is_monotonic_increasing and times.is_unique


def prepare(bars: pd.DataFrame) -> pd.DataFrame:
    """The bar columns, one row per time (the last wins), oldest first: every strategy writes exactly these.

    Bars from the client are already sorted and unique; checking that is far cheaper than sorting again.
    """
    missing = [f for f in BAR_FIELDS if f not in bars.columns]
    if missing:
        raise InputError(f"bars lack column(s) {', '.join(missing)}: pass the client's bars frame")
    if not in_order(bars):
        bars = bars.drop_duplicates("time", keep="last").sort_values("time")
    data = {"time": pd.to_datetime(bars["time"], utc=True).array}
    data.update({f: bars[f].to_numpy(dtype=np.float64) for f in FLOAT_FIELDS})
    data["transactions"] = bars["transactions"].astype("Int64").array
    return pd.DataFrame(data)


def batches(symbol: str, timeframe: str, bars: pd.DataFrame, batch_size: int | None) -> Iterator[Batch]:
    frame = prepare(bars)
    size = batch_size or len(frame) or 1
    if size < 1:
        raise InputError(f"batch_size {batch_size} must be a positive number of rows")
    for i in range(0, len(frame), size):
        yield Batch(symbol, timeframe, frame.iloc[i:i + size])


def _write_batched(engine: Engine, symbol: str, timeframe: str, bars: pd.DataFrame, batch_size: int | None,
                   write_batch: Callable[[Engine, Batch], None]) -> int:
    rows = 0
    for batch in batches(symbol, timeframe, bars, batch_size):
        RETRY.run(lambda b=batch: write_batch(engine, b))
        rows += len(batch)
    return rows


def _stored_times(session: Session, batch: Batch) -> set[datetime]:
    """Times of the batch's range already stored: the ORM strategies skip them (same transaction)."""
    return set(session.scalars(sa.select(MarketData.time).where(
        MarketData.symbol == batch.symbol, MarketData.timeframe == batch.timeframe,
        MarketData.time.between(batch.first, batch.last))))


def _orm_row_batch(engine: Engine, batch: Batch) -> None:
    with Session(engine) as session, session.begin():
        stored = _stored_times(session, batch)
        for row in batch.dicts():
            if row["time"] not in stored:
                session.add(MarketData(**row))
                session.flush()


def _orm_bulk_batch(engine: Engine, batch: Batch) -> None:
    with Session(engine) as session, session.begin():
        stored = _stored_times(session, batch)
        session.bulk_insert_mappings(MarketData, [r for r in batch.dicts() if r["time"] not in stored])


def _execute_values_batch(engine: Engine, batch: Batch) -> None:
    sql = f"INSERT INTO market_data ({', '.join(COLUMNS)}) VALUES %s ON CONFLICT DO NOTHING"
    with raw_transaction(engine) as cur:
        driver.insert_values(cur, sql, batch.tuples(), page_size=len(batch))


def copy_text_payload(batch: Batch) -> bytes:
    """The batch as CSV (COPY's text path): NULL is an empty field, floats as ``repr`` so they round-trip."""
    naive = batch.frame["time"].dt.tz_localize(None).to_numpy(dtype="datetime64[us]")
    n = len(batch)
    fields = [[batch.symbol] * n, [batch.timeframe] * n, [f"{t}Z" for t in np.datetime_as_string(naive)]]
    for name in BAR_FIELDS[1:]:
        col = batch.frame[name]
        text = repr if name in FLOAT_FIELDS else str
        fields.append(["" if v is None else text(v) for v in col.astype(object).where(col.notna(), None).tolist()]
                      if col.hasnans else [text(v) for v in col.tolist()])
    return ("\n".join(map(",".join, zip(*fields))) + "\n").encode()


def bar_copy_columns(frame: pd.DataFrame, symbol: binary_copy.CopyColumn,
                     timeframe: binary_copy.CopyColumn) -> list[binary_copy.CopyColumn]:
    """The market_data columns (``COLUMNS`` order) of ``frame`` for a binary COPY, keys given as columns."""
    return [symbol, timeframe, binary_copy.timestamptz(frame["time"]),
            *(binary_copy.float8(frame[name]) for name in FLOAT_FIELDS), binary_copy.int8(frame["transactions"])]


def copy_binary_payload(batch: Batch) -> bytes:
    """The batch in COPY's binary format (see :mod:`perflab.db.binary_copy`)."""
    keys = binary_copy.text(batch.symbol), binary_copy.text(batch.timeframe)
    return binary_copy.encode(bar_copy_columns(batch.frame, *keys), len(batch))


def _copy_target(cur, batch: Batch, placeholder: str) -> str:
    """Lock the series, then COPY straight into market_data when the range is new, else into staging."""
    cur.execute(f"SELECT pg_advisory_xact_lock({_LOCK_SPACE}, hashtext({placeholder}))",
                (f"{batch.symbol}|{batch.timeframe}",))
    cur.execute(f"SELECT EXISTS (SELECT 1 FROM market_data WHERE symbol = {placeholder} AND timeframe = "
                f"{placeholder} AND time BETWEEN {placeholder} AND {placeholder})",
                (batch.symbol, batch.timeframe, batch.first, batch.last))
    return create_stage(cur) if cur.fetchone()[0] else "market_data"


def create_stage(cur) -> str:
    """The connection's staging table for bars (emptied at each commit); returns its name."""
    cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} (LIKE market_data INCLUDING DEFAULTS) "
                "ON COMMIT DELETE ROWS")
    return _STAGE


def merge_stage(cur) -> None:
    """Move the staged bars into market_data, keeping any already stored."""
    cols = ", ".join(COLUMNS)
    cur.execute(f"INSERT INTO market_data ({cols}) SELECT {cols} FROM {_STAGE} ON CONFLICT DO NOTHING")


def _copy(fmt: str, payload: Callable[[Batch], bytes]) -> Callable[[Engine, Batch], None]:
    options = "FORMAT csv" if fmt == "csv" else "FORMAT binary"

    def write_batch(engine: Engine, batch: Batch) -> None:
        with raw_transaction(engine) as cur:
            target = _copy_target(cur, batch, "%s")
            driver.copy_in(cur, f"COPY {target} ({', '.join(COLUMNS)}) FROM STDIN ({options})", payload(batch))
            if target == _STAGE:
                merge_stage(cur)

    return write_batch


_PSYCOPG_TYPES = ("text", "text", "timestamptz", "float8", "float8", "float8", "float8", "float8", "float8",
                  "int8")


def _psycopg_copy_batch(engine: Engine, batch: Batch) -> None:
    with raw_transaction(driver_engine(engine, "psycopg")) as cur:
        target = _copy_target(cur, batch, "%s")
        with cur.copy(f"COPY {target} ({', '.join(COLUMNS)}) FROM STDIN (FORMAT binary)") as copy:
            copy.set_types(_PSYCOPG_TYPES)
            for row in batch.tuples():
                copy.write_row(row)
        if target == _STAGE:
            merge_stage(cur)


def _strategy(write_batch: Callable[[Engine, Batch], None]) -> Callable[..., int]:
    def write(engine: Engine, symbol: str, timeframe: str, bars: pd.DataFrame, batch_size: int | None = None) -> int:
        return _write_batched(engine, symbol, timeframe, bars, batch_size, write_batch)

    return write


write_orm_row = _strategy(_orm_row_batch)

WRITERS: dict[str, Writer] = {
    w.name: w for w in (
        Writer("orm_row", "session.add + flush per row, skipping stored rows (the plan's baseline)", write_orm_row),
        Writer("orm_bulk", "session.bulk_insert_mappings of the rows not stored yet (the plan's fix 2)",
               _strategy(_orm_bulk_batch)),
        Writer("execute_values", "one multi-row INSERT per batch (psycopg2's execute_values or its psycopg 3 "
               "equivalent), ON CONFLICT DO NOTHING", _strategy(_execute_values_batch)),
        Writer("copy_text", "COPY FROM STDIN, CSV built by pandas", _strategy(_copy("csv", copy_text_payload))),
        Writer("copy_binary", "COPY FROM STDIN, binary format built with numpy",
               _strategy(_copy("binary", copy_binary_payload))),
        Writer("psycopg_copy", "psycopg 3 binary COPY, typed rows via write_row", _strategy(_psycopg_copy_batch)),
    )
}


def get_writer(name: str) -> Writer:
    try:
        return WRITERS[name]
    except KeyError:
        raise InputError(f"unknown writer {name!r}: use one of {', '.join(WRITERS)}") from None
