"""Ways to write bars into ``market_data``, in a registry chosen by name; all write the same rows.

``orm_row`` is the plan's slow baseline (``session.add`` + ``flush`` per row). It is not idempotent:
measured runs start from emptied tables (:func:`perflab.db.migrate.reset_data`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from perflab.db.models import MarketData
from perflab.errors import InputError

BAR_FIELDS = ("time", "open", "high", "low", "close", "volume", "vwap", "transactions")


@dataclass(frozen=True)
class Writer:
    """A named write strategy: ``write(engine, symbol, timeframe, bars, batch_size) -> rows written``."""

    name: str
    summary: str
    write: Callable[[Engine, str, str, pd.DataFrame, int | None], int]


def records(symbol: str, timeframe: str, bars: pd.DataFrame) -> list[dict]:
    """Bars as row dicts with the key columns filled in."""
    out = bars.loc[:, list(BAR_FIELDS)].to_dict("records")
    for r in out:
        r["symbol"], r["timeframe"] = symbol, timeframe
        r["time"] = r["time"].to_pydatetime()
    return out


def write_orm_row(engine: Engine, symbol: str, timeframe: str, bars: pd.DataFrame,
                  batch_size: int | None = None) -> int:
    """One ORM object per bar, flushed one at a time, committed per batch (whole frame by default)."""
    rows = records(symbol, timeframe, bars)
    size = batch_size or len(rows) or 1
    for i in range(0, len(rows), size):
        with Session(engine) as session, session.begin():
            for row in rows[i:i + size]:
                session.add(MarketData(**row))
                session.flush()
    return len(rows)


WRITERS: dict[str, Writer] = {
    w.name: w for w in (
        Writer("orm_row", "session.add + flush per row (the plan's baseline)", write_orm_row),
    )
}


def get_writer(name: str) -> Writer:
    try:
        return WRITERS[name]
    except KeyError:
        raise InputError(f"unknown writer {name!r}: use one of {', '.join(WRITERS)}") from None
