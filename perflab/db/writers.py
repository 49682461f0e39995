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

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
import sqlalchemy as sa
from psycopg2.extras import execute_values
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from perflab.db.engine import driver_engine
from perflab.db.models import MarketData
from perflab.db.transactions import RETRY, raw_transaction
from perflab.errors import InputError

BAR_FIELDS = ("time", "open", "high", "low", "close", "volume", "vwap", "transactions")
COLUMNS = ("symbol", "timeframe", *BAR_FIELDS)
FLOAT_FIELDS = ("open", "high", "low", "close", "volume", "vwap")
PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 UTC in microseconds since 1970: binary COPY's time zero
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


def prepare(bars: pd.DataFrame) -> pd.DataFrame:
    """The bar columns, one row per time (the last wins), oldest first: every strategy writes exactly these."""
    missing = [f for f in BAR_FIELDS if f not in bars.columns]
    if missing:
        raise InputError(f"bars lack column(s) {', '.join(missing)}: pass the client's bars frame")
    frame = bars.loc[:, list(BAR_FIELDS)].drop_duplicates("time", keep="last").sort_values("time")
    frame = frame.reset_index(drop=True)
    frame["time"] = pd.to_datetime(frame["time"], utc=True)
    frame[list(FLOAT_FIELDS)] = frame[list(FLOAT_FIELDS)].astype("float64")
    frame["transactions"] = frame["transactions"].astype("Int64")
    return frame


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
        execute_values(cur, sql, batch.tuples(), page_size=len(batch))


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


_BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" * 2
_BINARY_TRAILER = b"\xff\xff"


def copy_binary_payload(batch: Batch) -> bytes:
    """The batch in COPY's binary format, built with numpy: one fixed-size record layout per NULL pattern."""
    n = len(batch)
    values: dict[str, tuple[str, np.ndarray | bytes, np.ndarray]] = {}
    for name, text in (("symbol", batch.symbol), ("timeframe", batch.timeframe)):
        raw = text.encode()
        values[name] = (f"S{len(raw)}", raw, np.zeros(n, dtype=bool))
    naive = batch.frame["time"].dt.tz_localize(None).to_numpy(dtype="datetime64[us]")
    micros = naive.astype(np.int64) - PG_EPOCH_US
    values["time"] = (">i8", micros, np.zeros(n, dtype=bool))
    for name in FLOAT_FIELDS:
        col = batch.frame[name].to_numpy(dtype=np.float64)
        values[name] = (">f8", col, np.isnan(col))
    tx = batch.frame["transactions"]
    values["transactions"] = (">i8", tx.to_numpy(dtype=np.int64, na_value=0), tx.isna().to_numpy())
    codes = sum(values[c][2].astype(np.int64) << i for i, c in enumerate(COLUMNS))
    parts = [_BINARY_HEADER]
    for code in np.unique(codes):
        rows = np.flatnonzero(codes == code)
        pattern = [bool(code >> i & 1) for i in range(len(COLUMNS))]
        fields = [("nfields", ">i2")]
        for col, is_null in zip(COLUMNS, pattern):
            fields.append((f"{col}_len", ">i4"))
            if not is_null:
                fields.append((col, values[col][0]))
        record = np.empty(len(rows), dtype=fields)
        record["nfields"] = len(COLUMNS)
        for col, is_null in zip(COLUMNS, pattern):
            dtype, data, _ = values[col]
            record[f"{col}_len"] = -1 if is_null else np.dtype(dtype).itemsize
            if not is_null:
                record[col] = data if isinstance(data, bytes) else data[rows]
        parts.append(record.tobytes())
    parts.append(_BINARY_TRAILER)
    return b"".join(parts)


def _copy_target(cur, batch: Batch, placeholder: str) -> str:
    """Lock the series, then COPY straight into market_data when the range is new, else into staging."""
    cur.execute(f"SELECT pg_advisory_xact_lock({_LOCK_SPACE}, hashtext({placeholder}))",
                (f"{batch.symbol}|{batch.timeframe}",))
    cur.execute(f"SELECT EXISTS (SELECT 1 FROM market_data WHERE symbol = {placeholder} AND timeframe = "
                f"{placeholder} AND time BETWEEN {placeholder} AND {placeholder})",
                (batch.symbol, batch.timeframe, batch.first, batch.last))
    if not cur.fetchone()[0]:
        return "market_data"
    cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} (LIKE market_data INCLUDING DEFAULTS) "
                "ON COMMIT DELETE ROWS")
    return _STAGE


def _merge_stage(cur) -> None:
    cols = ", ".join(COLUMNS)
    cur.execute(f"INSERT INTO market_data ({cols}) SELECT {cols} FROM {_STAGE} ON CONFLICT DO NOTHING")


def _psycopg2_copy(fmt: str, payload: Callable[[Batch], bytes]) -> Callable[[Engine, Batch], None]:
    options = "FORMAT csv" if fmt == "csv" else "FORMAT binary"

    def write_batch(engine: Engine, batch: Batch) -> None:
        with raw_transaction(engine) as cur:
            target = _copy_target(cur, batch, "%s")
            cur.copy_expert(f"COPY {target} ({', '.join(COLUMNS)}) FROM STDIN ({options})",
                            io.BytesIO(payload(batch)), size=1 << 20)
            if target == _STAGE:
                _merge_stage(cur)

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
            _merge_stage(cur)


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
        Writer("execute_values", "psycopg2 execute_values, one multi-row INSERT per batch, ON CONFLICT DO NOTHING",
               _strategy(_execute_values_batch)),
        Writer("copy_text", "psycopg2 COPY FROM STDIN, CSV built by pandas", _strategy(_psycopg2_copy(
            "csv", copy_text_payload))),
        Writer("copy_binary", "psycopg2 COPY FROM STDIN, binary format built with numpy", _strategy(_psycopg2_copy(
            "binary", copy_binary_payload))),
        Writer("psycopg_copy", "psycopg 3 binary COPY, typed rows via write_row", _strategy(_psycopg_copy_batch)),
    )
}


def get_writer(name: str) -> Writer:
    try:
        return WRITERS[name]
    except KeyError:
        raise InputError(f"unknown writer {name!r}: use one of {', '.join(WRITERS)}") from None
