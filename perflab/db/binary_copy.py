"""PostgreSQL's binary COPY format, built with numpy instead of a Python loop over rows.

A binary COPY row is ``int16 field count`` then, per field, ``int32 length`` (``-1`` for NULL) and the
value's bytes. Rows that share a NULL pattern and the same text values have one fixed-size layout, so
each such group of rows is a numpy structured array written with one ``tobytes``. Used for bars
(``copy_binary`` writer) and for the many series a group commit writes at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 UTC in microseconds since 1970: binary COPY's time zero
HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" * 2
TRAILER = b"\xff\xff"


@dataclass(frozen=True)
class CopyColumn:
    """One column to encode: a fixed-size big-endian numpy field (``>f8``, ``>i8``, ``>i2``) or ``text``.

    ``values`` has one entry per row; for text it is an object array of ``str`` (``None`` is NULL)
    or a single ``str`` for a column that is the same on every row.
    """

    dtype: str
    values: np.ndarray | str
    null: np.ndarray | None = None


def float8(values: np.ndarray | pd.Series, nan_is_null: bool = True) -> CopyColumn:
    """Doubles; NaN is written as NULL (or, with ``nan_is_null=False``, as PostgreSQL's float NaN)."""
    arr = np.asarray(values, dtype=np.float64)
    return CopyColumn(">f8", arr, np.isnan(arr) if nan_is_null else None)


def int8(values: pd.Series) -> CopyColumn:
    """64-bit integers; missing values (a nullable column's NA) are NULL."""
    return CopyColumn(">i8", values.to_numpy(dtype=np.int64, na_value=0), values.isna().to_numpy())


def timestamptz(times: pd.Series) -> CopyColumn:
    """UTC timestamps, as microseconds since 2000-01-01."""
    naive = pd.to_datetime(times, utc=True).dt.tz_localize(None).to_numpy(dtype="datetime64[us]")
    return CopyColumn(">i8", naive.astype(np.int64) - PG_EPOCH_US, None)


def text(values: Sequence | np.ndarray | str) -> CopyColumn:
    """Text values (``None`` is NULL), or one ``str`` for every row."""
    return CopyColumn("text", values if isinstance(values, str) else np.asarray(values, dtype=object))


@dataclass(frozen=True)
class _Field:
    """A column ready for grouping: a per-row key (text code or NULL flag) and how to lay out each group."""

    column: CopyColumn
    key: np.ndarray | None  # None: the same layout on every row
    texts: list[bytes]


def _prepare(col: CopyColumn) -> _Field:
    if col.dtype != "text":
        null = col.null if col.null is not None and col.null.any() else None
        return _Field(col, None if null is None else null.astype(np.int64), [])
    if isinstance(col.values, str):
        return _Field(col, None, [col.values.encode()])
    codes, uniques = pd.factorize(col.values, use_na_sentinel=True)
    return _Field(col, codes.astype(np.int64) + 1, [str(u).encode() for u in uniques])


def _group_keys(fields: list[_Field], n: int) -> np.ndarray:
    """One int64 per row naming its layout: the fields' keys in mixed radix (or a row-wise unique)."""
    keyed = [f for f in fields if f.key is not None]
    radices = [int(f.key.max()) + 1 for f in keyed]
    if float(np.prod([float(r) for r in radices])) < 2.0**62:
        out = np.zeros(n, dtype=np.int64)
        for f, radix in zip(keyed, radices):
            out = out * radix + f.key
        return out
    return np.unique(np.stack([f.key for f in keyed], axis=1), axis=0, return_inverse=True)[1].ravel()


def encode(columns: Sequence[CopyColumn], n: int) -> bytes:
    """``n`` rows of ``columns`` as one binary COPY payload (header, rows, trailer)."""
    fields = [_prepare(c) for c in columns]
    keys = _group_keys(fields, n)
    order = np.argsort(keys, kind="stable")
    bounds = np.flatnonzero(np.diff(keys[order])) + 1
    parts = [HEADER]
    for rows in np.split(order, bounds) if n else []:
        first = rows[0]
        layout: list[tuple[str, str]] = [("nfields", ">i2")]
        data: list[tuple[int, np.ndarray | bytes | None]] = []
        for i, f in enumerate(fields):
            layout.append((f"len{i}", ">i4"))
            if f.column.dtype == "text":
                code = 1 if f.key is None else int(f.key[first])
                value = f.texts[code - 1] if code else None
                if value:
                    layout.append((f"v{i}", f"S{len(value)}"))
                data.append((-1 if value is None else len(value), value or None))
            elif f.key is not None and f.key[first]:
                data.append((-1, None))
            else:
                layout.append((f"v{i}", f.column.dtype))
                data.append((np.dtype(f.column.dtype).itemsize, f.column.values[rows]))
        record = np.empty(len(rows), dtype=layout)
        record["nfields"] = len(fields)
        for i, (length, value) in enumerate(data):
            record[f"len{i}"] = length
            if value is not None:
                record[f"v{i}"] = value
        parts.append(record.tobytes())
    parts.append(TRAILER)
    return b"".join(parts)
