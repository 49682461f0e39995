"""A user's own database URL, in every form they may write it, works end to end on the driver perflab chose."""

import json
import os
import subprocess
import sys

import pytest
import sqlalchemy as sa
from conftest import URL_FORMS, url_as

from perflab.db.engine import DRIVER_ENV, get_engine, normalize_url
from perflab.db.errors import ConnectionLostError, DatabaseError, is_connection_lost, translate
from perflab.errors import DatabaseUnavailableError, InputError


@pytest.mark.parametrize("form, driver", [("postgresql", "psycopg"), ("postgres", "psycopg"),
                                          ("postgresql+psycopg", "psycopg"), ("postgresql+psycopg2", "psycopg2")])
def test_every_url_form_gets_an_explicit_driver(form, driver):
    url = normalize_url(f"{form}://u:p%40ss@db.example:6543/lab?sslmode=require")
    parsed = sa.engine.make_url(url)
    assert parsed.drivername == f"postgresql+{driver}"
    assert (parsed.username, parsed.password, parsed.host, parsed.port, parsed.database) == (
        "u", "p@ss", "db.example", 6543, "lab")
    assert parsed.query == {"sslmode": "require"}


def test_the_default_driver_is_a_choice_the_user_can_make(monkeypatch):
    monkeypatch.setenv(DRIVER_ENV, "psycopg2")
    assert normalize_url("postgresql://h/db").startswith("postgresql+psycopg2://")
    assert normalize_url("postgresql+psycopg://h/db").startswith("postgresql+psycopg://"), "a URL's driver wins"
    monkeypatch.setenv(DRIVER_ENV, "asyncpg")
    with pytest.raises(InputError, match="PERFLAB_DB_DRIVER.*psycopg, psycopg2"):
        normalize_url("postgresql://h/db")


@pytest.mark.parametrize("url, rule", [("mysql://u:secretpw@h/db", "not a PostgreSQL URL"),
                                       ("postgresql+asyncpg://h/db", "driver 'asyncpg'"),
                                       ("not a url", "not a database URL")])
def test_a_wrong_url_is_rejected_with_the_rule_and_no_password(url, rule):
    with pytest.raises(InputError, match=rule) as caught:
        normalize_url(url)
    assert "secretpw" not in str(caught.value)


def test_a_database_that_is_down_gets_one_clear_error_without_the_password():
    with pytest.raises(DatabaseUnavailableError, match="cannot reach the database at .*127.0.0.1:1") as caught:
        get_engine("postgresql://perflab:hunter2secret@127.0.0.1:1/lab")
    assert "hunter2secret" not in str(caught.value)


@pytest.mark.parametrize("form", URL_FORMS)
def test_driver_errors_are_mapped_to_perflab_types(clean_db, form):
    engine = get_engine(url_as(form))
    with engine.connect() as conn:
        try:
            conn.exec_driver_sql("SELECT 1/0")
        except Exception as exc:  # noqa: BLE001 - the point is what the driver raised
            mapped = translate(exc)
    assert type(mapped) is DatabaseError and mapped.sqlstate == "22012" and "division by zero" in str(mapped)
    assert not is_connection_lost(mapped)
    with engine.connect() as conn:
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        with clean_db.connect() as killer:
            killer.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
        try:
            conn.exec_driver_sql("SELECT 1")
        except Exception as exc:  # noqa: BLE001
            lost = translate(exc)
    assert isinstance(lost, ConnectionLostError) and is_connection_lost(lost)


@pytest.mark.parametrize("form", URL_FORMS)
def test_the_cli_backfill_with_all_fixes_works_on_each_url_form(engine, form):
    """The reported failure: every job failed with 'Cursor' object has no attribute 'copy_expert'."""
    env = {**os.environ, "PERFLAB_DATABASE_URL": url_as(form)}
    proc = subprocess.run([sys.executable, "-m", "perflab.cli", "backfill", "--preset", "smoke", "--simulator",
                           "--fixes", "all", "--fresh"], capture_output=True, text=True, env=env, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("{")))
    assert summary["failures"] == 0 and summary["rows_written"] > 0
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM market_data").scalar() == summary["rows_written"]


def test_a_benchmark_empties_tables_in_a_database_of_its_own_never_in_the_shared_one(clean_db):
    from perflab.db.engine import database_url, own_database
    from perflab.db.migrate import apply_schema, reset_data

    with clean_db.begin() as conn:  # a report's run, under way in the shared database
        conn.exec_driver_sql("INSERT INTO market_data (symbol, timeframe, time, open, high, low, close, volume) "
                             "VALUES ('AAPL', '1d', '2024-03-04', 1, 1, 1, 1, 1)")
    shared = database_url()
    with own_database("perflab_test_own_database") as url:
        assert database_url() == normalize_url(url) != shared
        mine = get_engine()
        assert mine.url.database == "perflab_test_own_database"
        apply_schema(mine)
        reset_data(mine)  # what every benchmark run does first
    assert database_url() == shared and get_engine().url.database == clean_db.url.database
    with clean_db.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM market_data").scalar() == 1
        assert not conn.exec_driver_sql("SELECT 1 FROM pg_database WHERE datname = 'perflab_test_own_database'"
                                        ).first()  # dropped
