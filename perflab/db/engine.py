"""Where the database is: ``PERFLAB_DATABASE_URL`` when set, else the embedded PostgreSQL (``embedded.py``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from perflab.db.embedded import DATABASE_URL_ENV, HOME_ENV, PROJECT_ROOT, embedded_url, perflab_home
from perflab.db.pool import connection_meter
from perflab.errors import DatabaseUnavailableError, InputError
from perflab.redact import redact

__all__ = ["DATABASE_URL_ENV", "DRIVER_ENV", "HOME_ENV", "PROJECT_ROOT", "database_url", "driver_engine",
           "drop_database", "get_engine", "normalize_url", "own_database", "perflab_home", "scratch_database",
           "server_info", "with_driver"]

DRIVER_ENV = "PERFLAB_DB_DRIVER"
DRIVERS = ("psycopg", "psycopg2")
DEFAULT_DRIVER = "psycopg"  # psycopg 3: its cursor.copy() is the fastest COPY path measured here


def default_driver() -> str:
    """The DBAPI driver for URLs that name none: ``PERFLAB_DB_DRIVER`` or psycopg 3."""
    driver = (os.environ.get(DRIVER_ENV) or DEFAULT_DRIVER).strip()
    if driver not in DRIVERS:
        raise InputError(f"{DRIVER_ENV}={driver!r} is not a driver perflab supports: use one of {', '.join(DRIVERS)}")
    return driver


def normalize_url(url: str) -> str:
    """The one driver decision: any PostgreSQL URL form -> a SQLAlchemy URL naming psycopg or psycopg2.

    ``postgres://`` and ``postgresql://`` get the default driver (never the one SQLAlchemy's version happens to
    pick); ``postgresql+psycopg://`` and ``postgresql+psycopg2://`` keep the driver the user chose.
    """
    try:
        u = sa.engine.make_url(url.strip())
    except sa.exc.ArgumentError:
        raise InputError(f"{redact(url)!r} is not a database URL: "
                         "write postgresql://user:password@host:port/db") from None
    backend, _, driver = u.drivername.partition("+")
    if backend not in ("postgresql", "postgres"):
        raise InputError(f"{redact(url)!r} is not a PostgreSQL URL: write postgresql://user:password@host:port/db")
    driver = driver or default_driver()
    if driver not in DRIVERS:
        raise InputError(f"driver {driver!r} in the database URL is not supported: use postgresql:// (psycopg 3), "
                         "postgresql+psycopg:// or postgresql+psycopg2://")
    return u.set(drivername=f"postgresql+{driver}").render_as_string(hide_password=False)


def database_url() -> str:
    """The URL perflab uses: ``PERFLAB_DATABASE_URL`` if set, else the embedded server's; driver made explicit."""
    return normalize_url(os.environ.get(DATABASE_URL_ENV) or embedded_url())


def with_driver(url: str, driver: str) -> str:
    """The same URL with another DBAPI driver (``psycopg2`` or ``psycopg``)."""
    u = sa.engine.make_url(url)
    return u.set(drivername=f"postgresql+{driver}").render_as_string(hide_password=False)


@lru_cache(maxsize=8)
def get_engine(url: str | None = None, pool_size: int = 5, max_overflow: int = 4) -> Engine:
    """A pooled engine (at most ``pool_size + max_overflow`` connections), checked reachable."""
    url = normalize_url(url) if url else database_url()
    engine = sa.create_engine(url, pool_size=pool_size, max_overflow=max_overflow, pool_pre_ping=True,
                              hide_parameters=True)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.DBAPIError as exc:
        engine.dispose()
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        raise DatabaseUnavailableError(
            f"cannot reach the database at {redact(url)}: {redact(reason)}; "
            f"fix {DATABASE_URL_ENV} or unset it to use the embedded server") from None
    connection_meter.watch(engine)
    return engine


def driver_engine(engine: Engine, driver: str) -> Engine:
    """The pooled engine for the same database through another driver (e.g. ``psycopg`` for psycopg 3)."""
    if engine.url.get_driver_name() == driver:
        return engine
    return get_engine(with_driver(engine.url.render_as_string(hide_password=False), driver),
                      engine.pool.size(), max(getattr(engine.pool, "_max_overflow", 0), 0))


def server_info(engine: Engine) -> dict:
    """Server version, the settings that shape write speed, and TimescaleDB's version (None when absent)."""
    names = ("shared_buffers", "synchronous_commit", "fsync", "wal_level", "max_connections", "work_mem")
    with engine.connect() as conn:
        version = conn.execute(sa.text("SHOW server_version")).scalar()
        settings = dict(conn.execute(
            sa.text("SELECT name, setting FROM pg_settings WHERE name = ANY(:n)"), {"n": list(names)}).all())
        timescale = conn.execute(sa.text(
            "SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'")).scalar()
    return {"server_version": version, "settings": settings, "timescaledb": timescale}


def scratch_database(admin: Engine, name: str) -> str:
    """A new, empty database ``name`` on ``admin``'s server (dropped first if it exists); its URL."""
    with sa.create_engine(admin.url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool).connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    return admin.url.set(database=name).render_as_string(hide_password=False)


@contextmanager
def own_database(name: str) -> Iterator[str]:
    """This process on a database of its own: ``name`` made empty on the configured server and set as the configured
    one (``PERFLAB_DATABASE_URL``) for the duration, then dropped. For benchmarks, which empty the bar tables run
    after run: on the shared database they emptied them under a report or a user running at the same time."""
    admin = sa.create_engine(database_url(), poolclass=sa.pool.NullPool)
    url = scratch_database(admin, name)
    previous = os.environ.get(DATABASE_URL_ENV)
    os.environ[DATABASE_URL_ENV] = url
    get_engine.cache_clear()
    try:
        yield url
    finally:
        if previous is None:
            os.environ.pop(DATABASE_URL_ENV, None)
        else:
            os.environ[DATABASE_URL_ENV] = previous
        get_engine.cache_clear()
        drop_database(admin, name)
        admin.dispose()


def drop_database(admin: Engine, name: str) -> None:
    """Drop database ``name`` on ``admin``'s server, closing its connections."""
    with sa.create_engine(admin.url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool).connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
