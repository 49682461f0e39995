"""Restart the test database's server in place, as a crash-and-recover drill (test-only).

The embedded server restarts through pgserver's ``pg_ctl``; an external server (CI's Debian PostgreSQL, or
yours) through the shell command in ``PERFLAB_TEST_PG_RESTART``, which ``.ci/postgres`` exports.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from perflab.db.embedded import embedded_server

RESTART_ENV = "PERFLAB_TEST_PG_RESTART"


def can_restart() -> bool:
    """Whether this test session knows how to restart the server behind its database."""
    return bool(os.environ.get(RESTART_ENV)) or embedded_server() is not None


def skip_unless_restartable() -> None:
    if not can_restart():
        pytest.skip(f"needs the embedded PostgreSQL or {RESTART_ENV} (a command that restarts your server)")


def restart_server(mode: str = "fast") -> None:
    """Restart the server (``pg_ctl -m mode restart``); open connections die, pools reconnect on checkout."""
    command = os.environ.get(RESTART_ENV)
    if command:
        subprocess.run(command, shell=True, check=True, timeout=60, stdout=subprocess.DEVNULL)
        return
    from pgserver._commands import pg_ctl
    from pgserver.utils import PostmasterInfo

    server = embedded_server()
    pg_ctl(["-w", "-m", mode, "-l", str(server.log), "restart"], pgdata=server.pgdata, user=server.system_user,
           timeout=60)
    server._postmaster_info = PostmasterInfo.read_from_pgdata(server.pgdata)  # so cleanup stops the new one


def server_started(engine):
    """When the server last started (``pg_postmaster_start_time``): a restart changes it."""
    with engine.connect() as conn:
        return conn.exec_driver_sql("SELECT pg_postmaster_start_time()").scalar()
