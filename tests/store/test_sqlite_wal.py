"""SQLite's WAL file is cut back after a long read let it grow (issue 14: 1.5 GB, bench/growth)."""

from __future__ import annotations

import os
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
