"""Engines for the three databases, and the few statements whose SQL differs between them."""

from __future__ import annotations

import contextlib
import json
import operator
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection, Engine


def normalise_url(url: str) -> str:
    """Pick the sync driver we ship for each engine: sqlite3, psycopg 3, PyMySQL."""
    for prefix, driver in (
        ("postgresql://", "postgresql+psycopg://"),
        ("postgres://", "postgresql+psycopg://"),
        ("mysql://", "mysql+pymysql://"),
        ("mariadb://", "mysql+pymysql://"),
    ):
        if url.startswith(prefix):
            return driver + url[len(prefix) :]
    return url


def _json(value: Any) -> str:
    # msgspec encodes the JSON columns several times faster than the json module.
    return msgspec.json.encode(value).decode()


def json_loads(text: str | bytes) -> Any:
    # msgspec decodes several times faster; what it refuses (NaN, Infinity, 1e400, lone
    # surrogates) goes to the json module, so every column reads back exactly as before.
    try:
        return msgspec.json.decode(text)
    except (msgspec.DecodeError, UnicodeError):
        return json.loads(text)


def create_engine(url: str, *, background_checkpoints: bool = False, **kwargs: Any) -> Engine:
    """An engine with the settings each engine needs for many concurrent writers.

    `background_checkpoints` (SQLite): commits never run the WAL checkpoint themselves; the
    caller must run `checkpoint()` regularly (the server does, every second).
    """
    url = normalise_url(url)
    kwargs.setdefault("json_serializer", _json)
    kwargs.setdefault("json_deserializer", json_loads)
    if url.startswith("sqlite"):
        engine = sa.create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs
        )
        _tune_sqlite(engine, autocheckpoint=not background_checkpoints)
        return engine
    if url.startswith("mysql"):
        kwargs.setdefault("pool_recycle", 3600)
        # READ COMMITTED: a duplicate's original row, committed by another transaction while
        # ours waited on the unique key, must be visible (REPEATABLE READ would hide it).
        kwargs.setdefault("isolation_level", "READ COMMITTED")
        connect_args = {"charset": "utf8mb4"}
        return sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args, **kwargs)
    return sa.create_engine(url, pool_pre_ping=True, **kwargs)


def checkpoint(engine: Engine) -> bool:
    """Move the SQLite WAL into the database without blocking writers (PASSIVE); True if the
    WAL was also restarted.

    A writer starts the WAL over only when no reader is on it. Under steady load some reader
    almost always is (reads overlap: one starts before the last ends), so the WAL only grew:
    15 GB in bench/growth's load from 1,000,000 events, and its index (the `-shm` file, mapped
    into every process) 30 MB of the server's RSS. Past RESTART_AFTER_BYTES, a RESTART
    checkpoint waits for the readers still on the WAL to finish, holding new writers meanwhile
    (new readers read the database file); the next write then starts the WAL over. It waits
    RESTART_WAIT_MS for each WAL_LIMIT_BYTES of WAL, up to a second (a fixed 20 ms let
    overlapping reads outlast it for tens of seconds).
    """
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        _busy, frames, _moved = cursor.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        page = cursor.execute("PRAGMA page_size").fetchone()[0]
        size = frames * page
        if size <= RESTART_AFTER_BYTES:
            return False
        cursor.execute(
            f"PRAGMA busy_timeout={min(1000, RESTART_WAIT_MS * size // WAL_LIMIT_BYTES)}"
        )
        try:
            busy = cursor.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()[0]
        finally:
            cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        return not busy
    finally:
        raw.close()


def _tune_sqlite(engine: Engine, *, autocheckpoint: bool) -> None:
    # WAL lets readers and one writer work at once; BEGIN IMMEDIATE takes the write lock up front
    # so SQLite's busy handler applies (a deferred read->write upgrade fails at once instead).
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit (and so an acknowledged event) survives a power cut, not only a crash of
        # this process; NORMAL in WAL mode may lose the last commits. See README, Durability.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        # The WAL file keeps the size it once reached (1.5 GB in bench/growth after a long read
        # held it open while events kept coming): cut back to this at its next reset.
        cursor.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
        if not autocheckpoint:
            # A checkpoint inside a commit stalls every answer waiting on that commit
            # (25-40 ms every few groups): the server checkpoints in the background instead.
            cursor.execute("PRAGMA wal_autocheckpoint=0")
        cursor.close()

    @event.listens_for(engine, "checkin")
    def _on_checkin(dbapi_conn: Any, _record: Any) -> None:
        # A connection back in the pool gives up its page cache. It would mostly start its next
        # transaction without it anyway (SQLite empties a connection's cache when another wrote
        # since its last transaction, which the group writer and the worker do many times a
        # second), and the pool's idle connections held 10-20 MB of the server's RSS in pages.
        if dbapi_conn is not None:
            dbapi_conn.execute("PRAGMA shrink_memory")

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        deferred = conn.get_execution_options().get(READ_ONLY) or _READING.get()
        conn.exec_driver_sql("BEGIN" if deferred else "BEGIN IMMEDIATE")


READ_ONLY = "firstparty_read_only"
WAL_LIMIT_BYTES = 64 * 1024 * 1024
BUSY_TIMEOUT_MS = 30_000
RESTART_WAIT_MS = 20  # a RESTART checkpoint's wait per WAL_LIMIT_BYTES of WAL (`checkpoint`)
# Below this the WAL is left to start over by itself when reads leave a gap: a RESTART holds
# writers, and bench/ingest's p99 at 1,000 events/s went 16-24 -> 43-103 ms with it from 64 or
# 256 MB (after its saturation stretch had grown the WAL). A safety valve, not a routine.
RESTART_AFTER_BYTES = 16 * WAL_LIMIT_BYTES
_READING: ContextVar[bool] = ContextVar("firstparty_reading", default=False)


def reader(engine: Engine) -> Connection:
    """A connection that only reads: on SQLite its transaction takes no write lock (a deferred
    BEGIN), so a long read holds up no writer, and a write this thread makes meanwhile on another
    connection does not wait for it (with BEGIN IMMEDIATE, it waited out the busy timeout)."""
    return engine.connect().execution_options(**{READ_ONLY: True})


# MySQL/MariaDB stop writing a streamed result to a client that has not read for this long
# (`net_write_timeout`, 60 s by default) and drop the connection: a stream read between the
# requests of an audience run may wait that long for a slow platform.
STREAM_WAIT_SECONDS = 3600


def stream_reader(engine: Engine) -> Connection:
    """A `reader` for a result streamed (`yield_per`) to a consumer that may pause between rows
    (for as long as a platform takes to answer): MySQL/MariaDB wait for it up to
    STREAM_WAIT_SECONDS instead of their 60."""
    conn = reader(engine)
    if conn.dialect.name in ("mysql", "mariadb"):
        conn.exec_driver_sql(f"SET SESSION net_write_timeout = {STREAM_WAIT_SECONDS}")
    return conn


@contextlib.contextmanager
def reading() -> Iterator[None]:
    """Within it (and the threads `asyncio.to_thread` starts from it), every SQLite transaction
    is a reader's, as `reader` makes them: for request handlers that only read (the admin pages'
    GETs), which otherwise queued for the write lock behind ingest and the worker (an alerts page
    of two small reads took 1.3 s at 500,000 events while the worker delivered). A write inside
    would be a read-to-write upgrade, which SQLite may refuse at once: never write within."""
    token = _READING.set(True)
    try:
        yield
    finally:
        _READING.reset(token)


def insert_ignore(conn: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """Insert rows, silently skipping those that break a unique constraint (dedup, first touch)."""
    if not rows:
        return
    name = conn.dialect.name
    stmt: Any
    if name == "postgresql":
        stmt = postgresql.insert(table).on_conflict_do_nothing()
    elif name == "sqlite":
        stmt = sqlite.insert(table).on_conflict_do_nothing()
    elif name in ("mysql", "mariadb"):
        stmt = mysql.insert(table).prefix_with("IGNORE")
    else:  # pragma: no cover - only the three engines are supported
        raise RuntimeError(f"unsupported database {name}")
    conn.execute(stmt, rows)


def insert_new(conn: Connection, table: sa.Table, rows: list[dict[str, Any]], key: str) -> set[Any]:
    """Insert rows, skipping those that break a unique constraint; the keys of those inserted.

    One statement where the engine has INSERT ... RETURNING with conflicts skipped (SQLite,
    PostgreSQL); MySQL/MariaDB read the keys back afterwards.
    """
    if not rows:
        return set()
    name = conn.dialect.name
    column = table.c[key]
    if name in ("postgresql", "sqlite"):
        dialect_insert = postgresql.insert if name == "postgresql" else sqlite.insert
        stmt = dialect_insert(table).on_conflict_do_nothing().returning(column)
        return {row[0] for row in conn.execute(stmt, rows)}
    insert_ignore(conn, table, rows)
    wanted = [row[key] for row in rows]
    return {row[0] for row in conn.execute(sa.select(column).where(column.in_(wanted)))}


# Hot-path inserts (the ingest writer): SQL compiled once per engine kind, values converted to
# what the driver takes by a few plain functions, and sent in one driver call, so SQLAlchemy's
# per-row parameter processing does not run. The stored values are exactly what the typed path
# stores: UTC datetimes naive (SQLite: SQLAlchemy's text format), JSON encoded with msgspec.
FAST_DIALECTS = ("sqlite", "postgresql")


@dataclass(frozen=True)
class _Plan:
    sql: str
    columns: tuple[str, ...]
    convert: tuple[Callable[[Any], Any] | None, ...]
    by_column: bool  # PostgreSQL: one array per column (INSERT ... SELECT FROM unnest)
    getter: Callable[[dict[str, Any]], Any]  # row -> its values in column order
    converted: tuple[tuple[int, Callable[[Any], Any]], ...]  # (position, converter)


_plans: dict[tuple[str, str, tuple[str, ...], bool, str | None], _Plan] = {}


def _naive_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is UTC:  # what the hot path holds: no offset to apply
        return value.replace(tzinfo=None)
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    if value.utcoffset():
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None)


def _sqlite_datetime(value: datetime | None) -> str | None:
    # The text SQLAlchemy's SQLite DATETIME stores: "YYYY-MM-DD HH:MM:SS.ffffff".
    if value is not None and value.tzinfo is UTC:  # the hot path's: the text before "+00:00"
        return value.isoformat(" ", "microseconds")[:26]
    v = _naive_utc(value)
    return None if v is None else v.isoformat(" ", "microseconds")


def _plan(
    dialect: sa.Dialect, table: sa.Table, columns: tuple[str, ...], ignore: bool, key: str | None
) -> _Plan:
    from firstparty.store.models import UTCDateTime  # models imports nothing from here

    cache_key = (dialect.name, table.name, columns, ignore, key)
    plan = _plans.get(cache_key)
    if plan is not None:
        return plan
    postgres = dialect.name == "postgresql"
    convert: list[Callable[[Any], Any] | None] = []
    casts: list[str] = []
    for name in columns:
        column_type = table.c[name].type
        if isinstance(column_type, UTCDateTime):
            convert.append(_naive_utc if postgres else _sqlite_datetime)
        elif isinstance(column_type, sa.JSON):
            convert.append(_json)
        else:
            convert.append(None)
        impl = column_type.dialect_impl(dialect)
        casts.append(impl.compile(dialect=dialect))
    names = ", ".join(dialect.identifier_preparer.quote(n) for n in columns)
    into = f"INSERT INTO {dialect.identifier_preparer.format_table(table)} ({names}) "
    if postgres:
        arrays = ", ".join(f"%b::{cast}[]" for cast in casts)  # %b: binary, no escaping
        sql = into + f"SELECT * FROM unnest({arrays})"
    else:
        sql = into + f"VALUES ({', '.join('?' for _ in columns)})"
    if ignore:
        sql += " ON CONFLICT DO NOTHING"
    if key is not None:
        sql += f" RETURNING {dialect.identifier_preparer.quote(key)}"
    getter = operator.itemgetter(*columns)
    converted = tuple((i, fn) for i, fn in enumerate(convert) if fn is not None)
    plan = _Plan(sql, columns, tuple(convert), postgres, getter, converted)
    _plans[cache_key] = plan
    return plan


def bulk_insert(
    conn: Connection,
    table: sa.Table,
    rows: Sequence[dict[str, Any]],
    *,
    ignore: bool = False,
    key: str | None = None,
) -> set[Any] | None:
    """Insert rows (all with the same keys) in one driver call on SQLite and PostgreSQL.

    `ignore`: skip rows that break a unique constraint. `key`: return the set of that column's
    values for the rows inserted (SQLite answers from the row count, and reads the keys back only
    when some row was skipped; `key` must then be unique in `rows`). Other engines take the
    portable SQLAlchemy path.
    """
    if not rows:
        return set() if key is not None else None
    dialect = conn.dialect
    if dialect.name not in FAST_DIALECTS:
        if key is not None:
            return insert_new(conn, table, list(rows), key)
        if ignore:
            insert_ignore(conn, table, list(rows))
        else:
            conn.execute(table.insert(), list(rows))
        return None
    columns = tuple(rows[0])
    plan = _plan(dialect, table, columns, ignore, key if plan_returns(dialect) else None)
    convert = plan.convert
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        if plan.by_column:
            arrays = []
            for name, fn in zip(columns, convert, strict=True):
                values = [row[name] for row in rows]
                arrays.append(values if fn is None else [fn(v) for v in values])
            cursor.execute(plan.sql, arrays)
            if key is None:
                return None
            return {r[0] for r in cursor.fetchall()}
        getter, converted = plan.getter, plan.converted
        tuples: list[Any] = []
        for row in rows:
            values = getter(row)
            if converted:
                values = list(values) if len(columns) > 1 else [values]
                for i, fn in converted:
                    values[i] = fn(values[i])
            elif len(columns) == 1:
                values = [values]
            tuples.append(values)
        cursor.executemany(plan.sql, tuples)
        inserted = cursor.rowcount
    finally:
        cursor.close()
    if key is None:
        return None
    wanted = [row[key] for row in rows]
    if inserted == len(rows):
        return set(wanted)
    column = table.c[key]
    return {r[0] for r in conn.execute(sa.select(column).where(column.in_(wanted)))}


def datetime_param(dialect: sa.Dialect) -> Callable[[datetime | None], Any]:
    """How `executemany` passes a UTC datetime to this engine's driver (FAST_DIALECTS only)."""
    return _naive_utc if dialect.name == "postgresql" else _sqlite_datetime


def placeholder(dialect: sa.Dialect) -> str:
    """The positional parameter marker of this engine's driver (FAST_DIALECTS only)."""
    return "%s" if dialect.name == "postgresql" else "?"


def executemany(conn: Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """Run one statement for many parameter rows in one driver call, in `conn`'s transaction.

    For the hot statements whose SQL is written once with `placeholder`; values must already
    be what the driver takes (`datetime_param`). SQLite and PostgreSQL only.
    """
    if not rows:
        return
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.executemany(sql, rows)
    finally:
        cursor.close()


def plan_returns(dialect: sa.Dialect) -> bool:
    """Whether bulk_insert gets the inserted keys from RETURNING (PostgreSQL's single statement)."""
    return dialect.name == "postgresql"


def skip_locked(select: sa.Select[Any], conn: Connection) -> sa.Select[Any]:
    """`FOR UPDATE SKIP LOCKED` where the engine has it; SQLite's single writer needs none."""
    if conn.dialect.name == "sqlite":
        return select
    return select.with_for_update(skip_locked=True)


def code_point_order(expr: sa.ColumnElement[str], dialect: sa.Dialect) -> sa.ColumnElement[Any]:
    """`expr` to ORDER BY so that rows come in Python's order of the strings (by code point),
    whatever the column's collation: SQLite's BINARY is already that; PostgreSQL's "C" compares
    the UTF-8 bytes, which order as the code points do; MySQL/MariaDB's utf8mb4 collations ignore
    case (and pad), so the bytes are compared instead."""
    if dialect.name == "postgresql":
        return sa.collate(expr, "C")
    if dialect.name in ("mysql", "mariadb"):
        return sa.cast(expr, mysql.BINARY())
    return expr
