"""Every write strategy stores the same rows, idempotently, one whole batch at a time (real PostgreSQL)."""

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from perflab.db.errors import ConstraintError
from perflab.db.feature_store import write_features
from perflab.db.writers import WRITERS, Batch, copy_binary_payload, get_writer, prepare
from perflab.errors import InputError
from perflab.simulator.bars import synthetic_bars

NAMES = list(WRITERS)
BAR_SQL = ("SELECT symbol, timeframe, time, open, high, low, close, volume, vwap, transactions "
           "FROM market_data ORDER BY symbol, timeframe, time")


def awkward_bars(n: int = 240) -> pd.DataFrame:
    """Bars with NULL vwap / transactions in several patterns and a repeated time (stored once, the last wins)."""
    bars = synthetic_bars(n, seed=3)
    bars["transactions"] = bars["transactions"].astype("Int64")
    bars.loc[10, "vwap"] = np.nan
    bars.loc[20, "transactions"] = pd.NA
    bars.loc[30, "vwap"], bars.loc[30, "transactions"] = np.nan, pd.NA
    repeat = bars.iloc[[5]].assign(close=123.456)
    return pd.concat([bars, repeat], ignore_index=True)


def stored(engine) -> pd.DataFrame:
    return pd.read_sql_query(BAR_SQL, engine)


def test_every_strategy_writes_identical_rows(driver_db):
    bars = awkward_bars()
    frames = {}
    for name in NAMES:
        with driver_db.begin() as conn:
            conn.exec_driver_sql("TRUNCATE market_data")
        assert get_writer(name).write(driver_db, "AAPL", "1m", bars, 64) == 240
        frames[name] = stored(driver_db)
    reference = frames["orm_row"]
    assert len(reference) == 240 and reference["time"].is_unique
    assert reference.loc[5, "close"] == 123.456
    assert reference["vwap"].isna().sum() == 2 and reference["transactions"].isna().sum() == 2
    expected = prepare(bars)
    assert np.array_equal(reference["close"].to_numpy(), expected["close"].to_numpy())
    for name, frame in frames.items():
        pd.testing.assert_frame_equal(frame, reference, check_exact=True, obj=name)


@pytest.mark.parametrize("name", NAMES)
def test_rewriting_is_a_no_op_and_overlaps_merge(clean_db, name):
    bars = synthetic_bars(300, seed=1)
    write = get_writer(name).write
    write(clean_db, "MSFT", "5m", bars.iloc[:200], None)
    with clean_db.connect() as conn:
        first = dict(conn.execute(sa.text("SELECT time, created_at FROM market_data")).all())
    assert write(clean_db, "MSFT", "5m", bars, 64) == 300  # 200 stored + 100 new, batches straddle the edge
    assert write(clean_db, "MSFT", "5m", bars, None) == 300
    with clean_db.connect() as conn:
        rows, keys = conn.execute(sa.text(
            "SELECT count(*), count(DISTINCT time) FROM market_data")).one()
        again = dict(conn.execute(sa.text("SELECT time, created_at FROM market_data")).all())
    assert rows == keys == 300
    assert all(again[t] == created for t, created in first.items()), "stored rows were not rewritten"


@pytest.mark.parametrize("name", NAMES)
def test_a_failing_batch_leaves_nothing_half_written(driver_db, name):
    bars = synthetic_bars(300, seed=2)
    bars.loc[150, "close"] = np.nan  # NULL in a NOT NULL column: the second batch fails half-way
    with pytest.raises(ConstraintError, match="not-null constraint") as caught:
        get_writer(name).write(driver_db, "NVDA", "1h", bars, 100)
    assert caught.value.sqlstate == "23502", "mapped to perflab's type, with the server's SQLSTATE"
    with driver_db.connect() as conn:
        times = pd.Series(conn.execute(sa.text("SELECT time FROM market_data ORDER BY time")).scalars().all())
    assert len(times) == 100, "the first batch is committed whole, the failing one not at all"
    assert pd.to_datetime(times, utc=True).max() < bars.loc[100, "time"]


@pytest.fixture
def connection_killer(driver_db):
    """A trigger that kills the inserting backend at the 50th row it ever sees: a connection lost mid-batch."""
    with driver_db.begin() as conn:
        conn.exec_driver_sql("CREATE SEQUENCE perflab_kill_seq")
        conn.exec_driver_sql(
            "CREATE FUNCTION perflab_kill_once() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF nextval('perflab_kill_seq') = 50 THEN PERFORM pg_terminate_backend(pg_backend_pid()); END IF; "
            "RETURN NEW; END $$")
        for table in ("market_data", "quant_features"):
            conn.exec_driver_sql(f"CREATE TRIGGER perflab_kill BEFORE INSERT ON {table} FOR EACH ROW "
                                 "EXECUTE FUNCTION perflab_kill_once()")
    yield driver_db
    with driver_db.begin() as conn:
        for table in ("market_data", "quant_features"):
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS perflab_kill ON {table}")
        conn.exec_driver_sql("DROP FUNCTION IF EXISTS perflab_kill_once()")
        conn.exec_driver_sql("DROP SEQUENCE IF EXISTS perflab_kill_seq")


@pytest.mark.parametrize("name", NAMES)
def test_a_connection_lost_mid_batch_is_retried_whole(connection_killer, name):
    bars = synthetic_bars(200, seed=4)
    assert get_writer(name).write(connection_killer, "TSLA", "1d", bars, 80) == 200
    with connection_killer.connect() as conn:
        rows, keys = conn.execute(sa.text("SELECT count(*), count(DISTINCT time) FROM market_data")).one()
        seen = conn.execute(sa.text("SELECT last_value FROM perflab_kill_seq")).scalar()
    assert rows == keys == 200
    assert seen > 200, "the killed batch was sent again from its first row"


def test_feature_writes_are_retried_whole_too(connection_killer):
    bars = synthetic_bars(200, seed=8)
    features = pd.DataFrame({"time": bars["time"], "log_return": np.log(bars["close"] / bars["open"])})
    assert write_features(connection_killer, "TSLA", "1d", features) == 200
    with connection_killer.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM quant_features")).scalar() == 200
        assert conn.execute(sa.text("SELECT last_value FROM perflab_kill_seq")).scalar() > 200


def test_binary_payload_has_one_record_layout_per_null_pattern():
    bars = awkward_bars()
    payload = copy_binary_payload(Batch("AAPL", "1m", prepare(bars)))
    assert payload.startswith(b"PGCOPY\n\xff\r\n\x00") and payload.endswith(b"\xff\xff")
    full = 2 + 10 * 4 + 4 + 2 + 8 * 7 + 8  # field count, lengths, text, times, floats, bigint
    assert len(payload) == 19 + 2 + 240 * full - 8 - 8 - 16


def test_unknown_writer_and_bad_batch_size_name_the_fix(clean_db):
    with pytest.raises(InputError, match="unknown writer 'fast'.*copy_binary"):
        get_writer("fast")
    with pytest.raises(InputError, match="batch_size"):
        get_writer("copy_binary").write(clean_db, "AAPL", "1m", synthetic_bars(3), -1)
