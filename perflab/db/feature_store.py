"""Store computed features in ``quant_features`` (upsert) and read them back."""

from __future__ import annotations

import pandas as pd
from sqlalchemy.engine import Engine

from perflab.db import driver
from perflab.db.transactions import RETRY, raw_transaction


def write_features(engine: Engine, symbol: str, timeframe: str, features: pd.DataFrame) -> int:
    """Upsert one (symbol, timeframe)'s features in one transaction (retried whole after a lost connection);
    re-running replaces the earlier values."""
    if features.empty:
        return 0
    cols = [c for c in features.columns if c != "time"]
    values = features[cols].to_numpy(dtype=object, copy=True)
    values[features[cols].isna().to_numpy()] = None  # NaN -> SQL NULL, in one vectorised step
    times = pd.to_datetime(features["time"], utc=True).dt.to_pydatetime()
    rows = [(symbol, timeframe, t, *vals) for t, vals in zip(times, values.tolist())]
    names = ", ".join(["symbol", "timeframe", "time", *cols])
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in cols)
    sql = (f"INSERT INTO quant_features ({names}) VALUES %s ON CONFLICT (symbol, timeframe, time) "
           f"DO UPDATE SET {updates}, computed_at = now()")

    def attempt() -> int:
        with raw_transaction(engine) as cur:
            driver.insert_values(cur, sql, rows, page_size=1000)
        return len(rows)

    return RETRY.run(attempt)


def read_features(engine: Engine, symbol: str, timeframe: str) -> pd.DataFrame:
    """The stored features of one (symbol, timeframe), oldest first."""
    return pd.read_sql_query(
        "SELECT * FROM quant_features WHERE symbol = %(s)s AND timeframe = %(tf)s ORDER BY time",
        engine, params={"s": symbol, "tf": timeframe})
