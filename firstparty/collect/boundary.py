"""The ingest error boundary: every exception met while accepting an event gets one answer.

    Kind.UNAVAILABLE   the database cannot take writes now (connection lost, lock timeout,
                       deadlock, restarting or shutting down, too many connections): 503 with
                       Retry-After; the same request will succeed later
    Kind.REFUSED       the database refused a value (out of range, too long, bad encoding):
                       422 naming the column where the database says it; retrying never helps
    Kind.UNEXPECTED    anything else (a bug, an unknown database error): logged on one
                       line with an error id (firstparty.crashes), counted, 500 with that id only

`classify` sorts the drivers' own exceptions (sqlite3, psycopg 3, PyMySQL), raw or wrapped by
SQLAlchemy, by their codes rather than their classes: PyMySQL calls every unknown server error
an OperationalError, and psycopg files "index row too large" under OperationalError too.
`answer` turns one into what the API sends, in the one place that logs and counts.
"""

from __future__ import annotations

import enum
import re
import sqlite3
import sys
from typing import TYPE_CHECKING, TypeGuard

import sqlalchemy.exc as sa_exc

from firstparty import crashes, metrics
from firstparty.errors import FieldError, InputError, UnexpectedError

if TYPE_CHECKING:
    # Not imported at run time: a driver's exception exists only once its driver is loaded
    # (`_driver`), and a SQLite server need not load psycopg and PyMySQL (about 15 MB of RSS).
    import psycopg
    import pymysql.err  # type: ignore[import-untyped]

RETRY_AFTER_SECONDS = 1


class Kind(enum.Enum):
    UNAVAILABLE = "unavailable"
    REFUSED = "refused"
    UNEXPECTED = "unexpected"


# PostgreSQL SQLSTATE classes: connection exception, transaction rollback (deadlock,
# serialization), insufficient resources (too many connections, disk full), operator
# intervention (admin/crash shutdown, cannot connect now, statement timeout), system error.
_PG_UNAVAILABLE_CLASSES = frozenset({"08", "40", "53", "57", "58"})
# lock_not_available, object_in_use, read_only_sql_transaction (a standby after failover).
_PG_UNAVAILABLE_CODES = frozenset({"55P03", "55006", "25006"})
# MySQL/MariaDB server errors: too many connections (1040, 1203, 1226), shutdown (1053, 1077),
# out of memory or disk (1021, 1037, 1038, 1041, 1135), network (1152-1161), lock wait timeout
# (1205), deadlock (1213), interrupted or timed out (1317, 1969, 3024), read-only (1290, 1836),
# connection killed (1927), disconnected by the server (4031). Client errors are 2000-2999.
_MYSQL_UNAVAILABLE = frozenset(
    {1021, 1037, 1038, 1040, 1041, 1053, 1077, 1135, 1152, 1153, 1154, 1155, 1156, 1157, 1158,
     1159, 1160, 1161, 1203, 1205, 1213, 1226, 1290, 1317, 1836, 1927, 1969, 3024, 4031}
)  # fmt: skip
# Incorrect string value, truncated value, CHECK failed (MariaDB's JSON_VALID), invalid JSON.
_MYSQL_REFUSED = frozenset({1292, 1366, 3140, 4025})
# SQLite primary result codes: BUSY, LOCKED, NOMEM, READONLY, IOERR, FULL, CANTOPEN, PROTOCOL.
_SQLITE_UNAVAILABLE = frozenset({5, 6, 7, 8, 10, 13, 14, 15})
_SQLITE_REFUSED = frozenset({18, 20})  # TOOBIG, MISMATCH
_COLUMN = re.compile(r"column ([`'\"]?[\w.`'\"]+)")


def classify(exc: BaseException) -> Kind:
    """Which of the three answers this exception deserves."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return Kind.UNAVAILABLE
    exc = _original(exc)
    if isinstance(exc, sa_exc.DisconnectionError | sa_exc.TimeoutError):
        return Kind.UNAVAILABLE  # a dead pooled connection; no connection free in the pool
    if _is_postgres(exc):
        return _postgres(exc)
    if _is_mysql(exc):
        return _mysql(exc)
    if isinstance(exc, sqlite3.Error):
        return _sqlite(exc)
    return Kind.UNEXPECTED


def _is_postgres(exc: BaseException) -> TypeGuard[psycopg.Error]:
    driver = sys.modules.get("psycopg")
    return driver is not None and isinstance(exc, driver.Error)


def _is_mysql(exc: BaseException) -> TypeGuard[pymysql.err.MySQLError]:
    errors = sys.modules.get("pymysql.err")
    return errors is not None and isinstance(exc, errors.MySQLError)


def _postgres(exc: psycopg.Error) -> Kind:
    import psycopg  # loaded: exc is one of its errors

    code = exc.sqlstate
    if code is None:  # raised by psycopg itself: a lost connection, a NUL in a text value
        if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
            return Kind.UNAVAILABLE
        return Kind.REFUSED if isinstance(exc, psycopg.DataError) else Kind.UNEXPECTED
    if code[:2] in _PG_UNAVAILABLE_CLASSES or code in _PG_UNAVAILABLE_CODES:
        return Kind.UNAVAILABLE
    return Kind.REFUSED if code.startswith("22") else Kind.UNEXPECTED


def _mysql(exc: pymysql.err.MySQLError) -> Kind:
    import pymysql.err  # loaded: exc is one of its errors

    errno = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
    if isinstance(exc, pymysql.err.InterfaceError) or 2000 <= errno < 3000:
        return Kind.UNAVAILABLE  # the client lost or never had its connection
    if errno in _MYSQL_UNAVAILABLE:
        return Kind.UNAVAILABLE
    sqlstate = getattr(exc, "sqlstate", None) or ""
    if isinstance(exc, pymysql.err.DataError) or errno in _MYSQL_REFUSED or sqlstate[:2] == "22":
        return Kind.REFUSED
    return Kind.UNEXPECTED


def _sqlite(exc: sqlite3.Error) -> Kind:
    code = getattr(exc, "sqlite_errorcode", None)
    primary = -1 if code is None else code & 0xFF
    if primary in _SQLITE_UNAVAILABLE:
        return Kind.UNAVAILABLE
    if primary in _SQLITE_REFUSED or isinstance(exc, sqlite3.DataError):
        return Kind.REFUSED
    return Kind.UNEXPECTED


def answer(exc: Exception, *, source: str) -> InputError | UnexpectedError:
    """What to raise to the API for this exception; an unexpected one is logged and counted."""
    if isinstance(exc, InputError | UnexpectedError):  # sorted already
        return exc
    kind = classify(exc)
    if kind is Kind.UNAVAILABLE:
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
        return InputError(503, "storage unavailable, retry", headers=headers)
    if kind is Kind.REFUSED:
        field, reason = refused_field(exc)
        return InputError(422, "validation failed", [FieldError(field, reason)])
    metrics.INGEST_ERRORS.labels(source, type(_original(exc)).__name__).inc()
    return UnexpectedError(crashes.record(exc, where=f"ingest for source {source}"))


def _original(exc: BaseException) -> BaseException:
    """The driver's own exception inside SQLAlchemy's wrapper (the fast path raises it bare)."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None:
        return exc.orig
    return exc


def refused_field(exc: BaseException) -> tuple[str, str]:
    """(the column the database names, or "(body)"; its reason, first line, short)."""
    orig = _original(exc)
    column = None
    if _is_postgres(orig):
        column = orig.diag.column_name
        message = orig.diag.message_primary or str(orig)
    elif _is_mysql(orig) and len(orig.args) > 1:
        message = str(orig.args[1])
    else:
        message = str(orig)
    if column is None:
        found = _COLUMN.search(message)
        column = found.group(1).strip("`'\"").rsplit(".", 1)[-1].strip("`'\"") if found else None
    reason = "refused by the database: " + (message.splitlines() or [""])[0][:200]
    return column or "(body)", reason
