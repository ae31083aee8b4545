"""SQLite's WAL file is cut back after a long read let it grow (issue 14: 1.5 GB, bench/growth),
and starts over under readers that overlap (15 GB in bench/growth's load from 1,000,000)."""

from __future__ import annotations

import concurrent.futures
import os
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from firstparty.store import db


def test_the_wal_file_is_cut_back_at_its_next_reset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "WAL_LIMIT_BYTES", 1024 * 1024)
    path = tmp_path / "wal.db"
    engine = db.create_engine(f"sqlite:///{path}", background_checkpoints=True)
    wal = Path(f"{path}-wal")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x BLOB)")
    with db.reader(engine) as reading:  # a long read: the WAL cannot start over meanwhile
        reading.exec_driver_sql("SELECT count(*) FROM t").all()
        for _ in range(40):
            with engine.begin() as conn:
                conn.exec_driver_sql("INSERT INTO t VALUES (?)", (os.urandom(100_000),))
        grown = wal.stat().st_size
    db.checkpoint(engine)
    with engine.begin() as conn:  # the next write starts the WAL over, and cuts the file
        conn.execute(sa.text("INSERT INTO t VALUES (1)"))
    assert grown > 4 * 1024 * 1024
    assert wal.stat().st_size <= 1024 * 1024
    engine.dispose()


def _grown_under_a_reader(engine: sa.Engine, wal: Path) -> sa.Connection:
    """The WAL past its limit while a reader is on it: that reader, still open."""
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x BLOB)")
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")
    reading = db.reader(engine)
    reading.exec_driver_sql("SELECT count(*) FROM t").all()  # its snapshot holds the WAL
    for _ in range(40):
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (?)", (os.urandom(100_000),))
    assert wal.stat().st_size > 4 * 1024 * 1024
    return reading


def _write_and_size(engine: sa.Engine, wal: Path) -> int:
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO t VALUES (2)")
    return wal.stat().st_size


@pytest.mark.parametrize("restart", [False, True])
def test_overlapping_readers_no_longer_keep_the_wal_growing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restart: bool
) -> None:
    """Readers that overlap (a new one starts before the last ends) leave no moment for a writer
    to start the WAL over: it grew without end under load. Past its threshold, the checkpoint waits
    for the readers on the WAL (new ones read the database file meanwhile) and the next write
    starts it over, a new reader open or not. The control (PASSIVE only) shows the growth."""
    monkeypatch.setattr(db, "WAL_LIMIT_BYTES", 1024 * 1024)
    monkeypatch.setattr(db, "RESTART_AFTER_BYTES", 1024 * 1024)
    monkeypatch.setattr(db, "RESTART_WAIT_MS", 5000)
    path = tmp_path / "wal.db"
    engine = db.create_engine(f"sqlite:///{path}", background_checkpoints=True)
    wal = Path(f"{path}-wal")
    first = _grown_under_a_reader(engine, wal)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        if restart:
            done = pool.submit(db.checkpoint, engine)  # waits for the first reader
        else:
            raw = engine.raw_connection()  # what the checkpoint did before: PASSIVE alone
            raw.cursor().execute("PRAGMA wal_checkpoint(PASSIVE)")
            raw.close()
        time.sleep(0.3)
        first.close()
        restarted = done.result(timeout=10) if restart else False
    with db.reader(engine) as second:  # overlaps the writes that follow
        second.exec_driver_sql("SELECT count(*) FROM t").all()
        size = _write_and_size(engine, wal)
    assert restarted is restart
    assert (size <= 1024 * 1024) is restart
    engine.dispose()
