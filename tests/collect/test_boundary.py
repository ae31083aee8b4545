"""collect.boundary sorts the drivers' exceptions by their codes, not their classes."""

from __future__ import annotations

import sqlite3

import psycopg
import pymysql.err  # type: ignore[import-untyped]
import pytest
import sqlalchemy.exc as sa_exc

from firstparty.collect.boundary import Kind, classify, refused_field

UNAVAILABLE, REFUSED, UNEXPECTED = Kind.UNAVAILABLE, Kind.REFUSED, Kind.UNEXPECTED


def pg(sqlstate: str) -> psycopg.Error:
    return psycopg.errors.lookup(sqlstate)("from the server")


def mysql(errno: int, cls: type[Exception] = pymysql.err.OperationalError) -> Exception:
    return cls(errno, "from the server")


def sqlite(code: int, cls: type[sqlite3.Error] = sqlite3.OperationalError) -> sqlite3.Error:
    exc = cls("from sqlite")
    exc.sqlite_errorcode = code
    return exc


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (pg("08006"), UNAVAILABLE),  # connection failure
        (pg("57P01"), UNAVAILABLE),  # admin shutdown
        (pg("57P03"), UNAVAILABLE),  # cannot connect now (starting up)
        (pg("53300"), UNAVAILABLE),  # too many connections
        (pg("55P03"), UNAVAILABLE),  # lock not available
        (pg("40P01"), UNAVAILABLE),  # deadlock
        (pg("25006"), UNAVAILABLE),  # read-only: a standby after failover (psycopg: Internal)
        (psycopg.OperationalError("server closed the connection unexpectedly"), UNAVAILABLE),
        (pg("22003"), REFUSED),  # numeric value out of range
        (pg("22P05"), REFUSED),  # \u0000 in JSONB
        (psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes"), REFUSED),
        (pg("54000"), UNEXPECTED),  # program limit: psycopg calls it Operational, retry won't help
        (pg("XX000"), UNEXPECTED),
        (pg("23502"), UNEXPECTED),
        (pg("42P01"), UNEXPECTED),  # undefined table
        (mysql(2013), UNAVAILABLE),  # lost connection during query
        (mysql(1040), UNAVAILABLE),  # too many connections
        (mysql(1053), UNAVAILABLE),  # server shutdown in progress
        (mysql(1205), UNAVAILABLE),  # lock wait timeout
        (pymysql.err.InterfaceError(0, ""), UNAVAILABLE),
        (mysql(1264, pymysql.err.DataError), REFUSED),
        (mysql(4025), REFUSED),  # CHECK (JSON_VALID) failed: PyMySQL says Operational
        (mysql(1644), UNEXPECTED),  # an unhandled SIGNAL: PyMySQL says Operational
        (mysql(1146, pymysql.err.ProgrammingError), UNEXPECTED),
        (sqlite(5), UNAVAILABLE),  # database is locked (busy)
        (sqlite(10 | (3 << 8)), UNAVAILABLE),  # an extended IOERR
        (sqlite(13), UNAVAILABLE),  # disk full
        (sqlite(1), UNEXPECTED),  # no such table: an OperationalError, yet no retry helps
        (sqlite(18, sqlite3.DataError), REFUSED),
        (sqlite(1811, sqlite3.IntegrityError), UNEXPECTED),  # a trigger's RAISE(ABORT)
        (sa_exc.TimeoutError("QueuePool limit reached"), UNAVAILABLE),
        (sa_exc.OperationalError("INSERT", {}, pg("57P01")), UNAVAILABLE),
        (sa_exc.DataError("INSERT", {}, pg("22003")), REFUSED),
        (sa_exc.OperationalError("INSERT", {}, mysql(1644)), UNEXPECTED),
        (KeyError("bug"), UNEXPECTED),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else str(value),
)
def test_classify(exc: Exception, kind: Kind) -> None:
    assert classify(exc) is kind


def test_refused_field_names_the_column() -> None:
    maria = mysql(1406, pymysql.err.DataError)
    maria.args = (1406, "Data too long for column `db`.`events`.`name` at row 1")
    assert refused_field(maria)[0] == "name"
    assert refused_field(mysql(1264, pymysql.err.DataError))[0] == "(body)"
    field, reason = refused_field(pg("22003"))
    assert field == "(body)" and reason.startswith("refused by the database: ")
