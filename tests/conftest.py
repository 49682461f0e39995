"""Shared fixtures: a real PostgreSQL (a fresh database per test session) and a real simulator process.

The test database URL is exported as PERFLAB_DATABASE_URL before anything else runs, so notebooks
executed by nbval in child kernels write to the same throwaway database.
"""

from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy as sa

from perflab.db import engine as db_engine

_ADMIN_URL = os.environ.get(db_engine.DATABASE_URL_ENV) or db_engine.embedded_url()
_TEST_DB = f"perflab_test_{uuid.uuid4().hex[:8]}"


def _admin() -> sa.Engine:
    """The server's admin engine, on the URL as the user wrote it (so the test URL keeps that form)."""
    return sa.create_engine(_ADMIN_URL, poolclass=sa.pool.NullPool)


def pytest_configure(config):
    os.environ[db_engine.DATABASE_URL_ENV] = db_engine.scratch_database(_admin(), _TEST_DB)


def pytest_unconfigure(config):
    db_engine.get_engine.cache_clear()
    db_engine.drop_database(_admin(), _TEST_DB)


URL_FORMS = ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2")


def url_as(form: str) -> str:
    """The test database URL written the way a user may write it (``form://user:pw@host:port/db``)."""
    return form + "://" + os.environ[db_engine.DATABASE_URL_ENV].split("://", 1)[1]


@pytest.fixture(scope="session")
def engine():
    from perflab.db.migrate import apply_schema

    eng = db_engine.get_engine()
    apply_schema(eng)
    return eng


@pytest.fixture
def clean_db(engine):
    from perflab.db.migrate import reset_data

    reset_data(engine)
    return engine


@pytest.fixture(params=["psycopg", "psycopg2"])
def driver_db(request, clean_db):
    """The clean test database through each driver perflab supports (psycopg 3 is the default)."""
    return db_engine.get_engine(url_as(f"postgresql+{request.param}"))


@pytest.fixture(scope="session")
def sim():
    from perflab.simulator import SimulatorConfig, start_simulator

    with start_simulator(SimulatorConfig(time_scale=0.0005)) as s:
        yield s


# --- No process left behind (tests/test_processes.py tests each command; this checks the suite itself) ---

def _leftover_children() -> list:
    """Children of this pytest process still running, other than the shared embedded PostgreSQL and its janitor.

    The feature pool is shut down first (as at exit); multiprocessing's forkserver and resource tracker stay
    until their parent exits, by design (they end on EOF of a pipe from it), so they are not counted.
    """
    import psutil

    from perflab.features import parallel

    parallel.shutdown()
    left = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
            command = " ".join(child.cmdline())
        except psutil.Error:
            continue
        helper = "from multiprocessing.resource_tracker import" in command or \
            "from multiprocessing.forkserver import" in command
        if not (child.name().startswith("postgres") or "perflab.db.janitor" in command or helper):
            left.append((child, command))
    return left


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    """Fail the run, naming them, when tests left child processes running; then end those, so none is orphaned."""
    import time

    deadline = time.monotonic() + 5.0
    while (left := _leftover_children()) and time.monotonic() < deadline:
        time.sleep(0.1)
    if not left:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("")
        reporter.write_sep("=", f"{len(left)} process(es) left running by the tests (now killed)", red=True)
        for child, command in left:
            reporter.write_line(f"pid {child.pid}: {command}")
    for child, _ in left:
        child.kill()
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
