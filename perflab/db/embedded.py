"""The embedded PostgreSQL (pgserver) perflab starts itself when ``PERFLAB_DATABASE_URL`` is unset.

It keeps its data under ``.perflab/pgdata`` in the project (or ``PERFLAB_HOME``), is shared by every
process that asks for it, and stops when the last of them exits: from that process's exit handlers, or, when
it died without running them, from the janitor (:mod:`perflab.db.janitor`) every user makes sure is running.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

from perflab.db.janitor import ensure_janitor, is_alive
from perflab.errors import DatabaseUnavailableError

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
    """Drop pids of processes that died without cleaning up, so the last live one still stops the server.

    Call it holding pgserver's lock: pgserver rewrites the same file under it."""
    handles = pgdata / ".handle_pids.json"
    if handles.exists():
        try:
            pids = json.loads(handles.read_text())
        except ValueError:
            pids = []
        handles.write_text(json.dumps([p for p in pids if is_alive(p)]))


def embedded_server():
    """The pgserver handle this process started or joined, or None when it uses no embedded server."""
    return _embedded


def embedded_url() -> str:
    """Start (or join) the embedded PostgreSQL server and return its libpq URL (``postgresql://``)."""
    global _embedded
    if _embedded is None:
        logging.getLogger("pgserver").setLevel(logging.WARNING)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver
            from pgserver.postgres_server import PostgresServer

            pgdata = (perflab_home() / "pgdata").resolve()
            with PostgresServer._lock:
                _prune_dead_handles(pgdata)
            try:
                _embedded = pgserver.get_server(pgdata, cleanup_mode="stop")
            except Exception as exc:  # noqa: BLE001 - pgserver raises assorted errors; one clear message instead
                raise DatabaseUnavailableError(
                    f"could not start the embedded PostgreSQL in {pgdata}: {exc}; "
                    f"set {DATABASE_URL_ENV} to a server you run") from None
            with PostgresServer._lock:
                ensure_janitor(pgdata)
    return _embedded.get_uri()
