"""Engines for the three databases, and the few statements whose SQL differs between them."""

from __future__ import annotations

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


def create_engine(url: str, **kwargs: Any) -> Engine:
    """An engine with the settings each engine needs for many concurrent writers."""
    url = normalise_url(url)
    kwargs.setdefault("json_serializer", _json)
    if url.startswith("sqlite"):
        engine = sa.create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs
        )
        _tune_sqlite(engine)
        return engine
    if url.startswith("mysql"):
        kwargs.setdefault("pool_recycle", 3600)
        # READ COMMITTED: a duplicate's original row, committed by another transaction while
        # ours waited on the unique key, must be visible (REPEATABLE READ would hide it).
        kwargs.setdefault("isolation_level", "READ COMMITTED")
        connect_args = {"charset": "utf8mb4"}
        return sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args, **kwargs)
    return sa.create_engine(url, pool_pre_ping=True, **kwargs)


def _tune_sqlite(engine: Engine) -> None:
    # WAL lets readers and one writer work at once; BEGIN IMMEDIATE takes the write lock up front
    # so SQLite's busy handler applies (a deferred read->write upgrade fails at once instead).
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


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


def skip_locked(select: sa.Select[Any], conn: Connection) -> sa.Select[Any]:
    """`FOR UPDATE SKIP LOCKED` where the engine has it; SQLite's single writer needs none."""
    if conn.dialect.name == "sqlite":
        return select
    return select.with_for_update(skip_locked=True)
