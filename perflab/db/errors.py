"""Database errors in perflab's own types, mapped once from whatever the driver or SQLAlchemy raised.

Callers (writers, the scheduler, the retry policies) catch these, never ``psycopg``/``psycopg2``/SQLAlchemy
exceptions; the original stays on ``__cause__`` and ``orig`` for debugging. The "connection lost" rule is
written here once and used by every retry.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import psycopg2
import sqlalchemy as sa

from perflab.errors import PerflabError
from perflab.redact import redact

# SQLSTATE classes/codes that mean the connection or the server went away, not a fault of the statement
_LOST_STATES = ("08", "57P01", "57P02", "57P03")
_UNIQUE_VIOLATION = "23505"
_DRIVER_ERRORS = (psycopg.Error, psycopg2.Error)
_LOST_TYPES = (psycopg.OperationalError, psycopg.InterfaceError, psycopg2.OperationalError, psycopg2.InterfaceError)


class DatabaseError(PerflabError):
    """A database operation failed; ``sqlstate`` is the server's error code when it sent one."""

    def __init__(self, message: str, sqlstate: str | None = None, orig: BaseException | None = None):
        super().__init__(message)
        self.sqlstate = sqlstate
        self.orig = orig


class ConnectionLostError(DatabaseError):
    """The connection or the server went away (restart, failover, killed backend): worth retrying."""


class ConstraintError(DatabaseError):
    """The data violates a constraint (NOT NULL, CHECK, a duplicate key): retrying changes nothing."""


def _driver_error(exc: BaseException) -> BaseException:
    return getattr(exc, "orig", None) or exc


def _sqlstate(exc: BaseException) -> str | None:
    orig = _driver_error(exc)
    return getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)


def is_connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` means the connection or the server went away (not a SQL error in the statement)."""
    if isinstance(exc, ConnectionLostError):
        return True
    if isinstance(exc, DatabaseError):
        return False
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    state = _sqlstate(exc)
    if state:
        return state.startswith(_LOST_STATES)
    return isinstance(_driver_error(exc), _LOST_TYPES) or isinstance(exc, (sa.exc.OperationalError,
                                                                          sa.exc.InterfaceError))


def is_transient(exc: BaseException) -> bool:
    """Worth retrying a whole transaction: the connection was lost, or a concurrent writer won a race."""
    return is_connection_lost(exc) or _sqlstate(exc) == _UNIQUE_VIOLATION


def translate(exc: BaseException) -> BaseException:
    """The perflab error for a driver or SQLAlchemy database error; any other exception unchanged."""
    if isinstance(exc, PerflabError) or not isinstance(exc, (*_DRIVER_ERRORS, sa.exc.SQLAlchemyError)):
        return exc
    orig = _driver_error(exc)
    text = str(orig).strip().splitlines()
    reason = redact(text[0] if text else type(orig).__name__)
    state = _sqlstate(exc)
    if is_connection_lost(exc):
        return ConnectionLostError(f"lost the database connection: {reason}; check that the server is running "
                                   "(db.retry waits for it to come back)", state, orig)
    if state == _UNIQUE_VIOLATION:
        return ConstraintError(f"the database rejected a duplicate row: {reason}", state, orig)
    if isinstance(orig, (psycopg.IntegrityError, psycopg2.IntegrityError, sa.exc.IntegrityError)):
        return ConstraintError(f"the data violates a database constraint: {reason}", state, orig)
    return DatabaseError(f"database error: {reason}", state, orig)


@contextmanager
def mapped() -> Iterator[None]:
    """Run a block with database errors raised as perflab's own types (the original on ``__cause__``)."""
    try:
        yield
    except Exception as exc:
        mapped_exc = translate(exc)
        if mapped_exc is exc:
            raise
        raise mapped_exc from exc
