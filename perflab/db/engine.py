"""Where the database is: ``PERFLAB_DATABASE_URL`` when set, else an embedded PostgreSQL (pgserver).

The embedded server keeps its data under ``.perflab/pgdata`` in the project (or ``PERFLAB_HOME``), is
shared by every process that asks for it, and stops when the last of them exits.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from functools import lru_cache
from pathlib import Path

import psutil
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from perflab.db.pool import connection_meter
from perflab.errors import DatabaseUnavailableError
from perflab.redact import redact

DATABASE_URL_ENV = "PERFLAB_DATABASE_URL"
HOME_ENV = "PERFLAB_HOME"
PROJECT_ROOT = Path(__file__).resolve().parents[2]

_embedded = None


def perflab_home() -> Path:
    """The cache folder for the embedded database and benchmark output."""
    home = Path(os.environ.get(HOME_ENV) or PROJECT_ROOT / ".perflab")
    home.mkdir(parents=True, exist_ok=True)
    return home


def _prune_dead_handles(pgdata: Path) -> None:
    """Drop pids of processes that died without cleaning up, so the last live one still stops the server."""
    handles = pgdata / ".handle_pids.json"
    if handles.exists():
        try:
            pids = json.loads(handles.read_text())
        except ValueError:
            pids = []
        handles.write_text(json.dumps([p for p in pids if psutil.pid_exists(p)]))


def embedded_url() -> str:
    """Start (or join) the embedded PostgreSQL server and return its SQLAlchemy URL."""
    global _embedded
    if _embedded is None:
        logging.getLogger("pgserver").setLevel(logging.WARNING)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver

            pgdata = perflab_home() / "pgdata"
            _prune_dead_handles(pgdata)
            try:
                _embedded = pgserver.get_server(pgdata, cleanup_mode="stop")
            except Exception as exc:  # noqa: BLE001 - pgserver raises assorted errors; one clear message instead
                raise DatabaseUnavailableError(
                    f"could not start the embedded PostgreSQL in {pgdata}: {exc}; "
                    f"set {DATABASE_URL_ENV} to a server you run") from None
    return _embedded.get_uri().replace("postgresql://", "postgresql+psycopg2://", 1)


def database_url() -> str:
    """The URL perflab uses: the env var if set, else the embedded server's."""
    url = os.environ.get(DATABASE_URL_ENV)
    if url:
        return url.replace("postgres://", "postgresql://", 1)
    return embedded_url()


def with_driver(url: str, driver: str) -> str:
    """The same URL with another DBAPI driver (``psycopg2`` or ``psycopg``)."""
    u = sa.engine.make_url(url)
    return u.set(drivername=f"postgresql+{driver}").render_as_string(hide_password=False)


@lru_cache(maxsize=8)
def get_engine(url: str | None = None, pool_size: int = 5, max_overflow: int = 4) -> Engine:
    """A pooled engine (at most ``pool_size + max_overflow`` connections), checked reachable."""
    url = url or database_url()
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


def restart_embedded(mode: str = "fast") -> int:
    """Restart the embedded server in place (``pg_ctl restart``), as a crash-and-recover drill; returns the new pid.

    Open connections die; pooled engines reconnect on their next checkout (``pool_pre_ping``).
    """
    if _embedded is None:
        raise DatabaseUnavailableError("no embedded server to restart: it runs only when perflab started it")
    from pgserver._commands import pg_ctl
    from pgserver.utils import PostmasterInfo

    pg_ctl(["-w", "-m", mode, "-l", str(_embedded.log), "restart"], pgdata=_embedded.pgdata,
           user=_embedded.system_user, timeout=60)
    _embedded._postmaster_info = PostmasterInfo.read_from_pgdata(_embedded.pgdata)  # so cleanup stops the new one
    return _embedded.get_pid()
