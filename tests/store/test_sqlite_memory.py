"""An idle SQLite connection in the pool holds no page cache (issue 14: the server's RSS under
bench/growth's load, where the pool's idle connections held 10-20 MB of pages)."""

from __future__ import annotations

import _sqlite3
import ctypes
import os
from pathlib import Path

from firstparty.store import db

CONNECTIONS = 12
MB = 1024 * 1024
ROWS, ROW_BYTES = 150_000, 100  # about 16 MB of table pages


def _memory_used() -> int:
    """SQLite's own count of the memory it holds in this process (the library _sqlite3 uses)."""
    used = ctypes.CDLL(_sqlite3.__file__).sqlite3_memory_used
    used.restype = ctypes.c_int64
    return int(used())


def test_a_connection_back_in_the_pool_gives_up_its_page_cache(tmp_path: Path) -> None:
    engine = db.create_engine(f"sqlite:///{tmp_path / 'big.db'}", pool_size=CONNECTIONS)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x BLOB)")
        rows = [(os.urandom(ROW_BYTES),) for _ in range(ROWS)]
        conn.exec_driver_sql("INSERT INTO t VALUES (?)", rows)
    conns = [db.reader(engine) for _ in range(CONNECTIONS)]  # the pool's connections, all made
    for conn in conns:
        conn.close()
    before = _memory_used()
    conns = [db.reader(engine) for _ in range(CONNECTIONS)]
    for conn in conns:  # each reads the whole table into its own page cache
        assert conn.exec_driver_sql("SELECT sum(length(x)) FROM t").scalar() == ROWS * ROW_BYTES
    reading = _memory_used() - before
    for conn in conns:
        conn.close()
    idle = _memory_used() - before
    engine.dispose()
    assert reading > 18 * MB, reading / MB  # 12 caches of SQLite's default 2,000 KiB each
    assert idle < 2 * MB, (idle / MB, reading / MB)
