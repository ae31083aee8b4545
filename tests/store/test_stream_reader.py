"""`db.stream_reader`: MariaDB drops a streamed result that its client has not read for
`net_write_timeout` seconds (60 by default); an audience run reads its streams between the
platform's answers, so its streams wait longer."""

from __future__ import annotations

import contextlib
import gc
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from firstparty.store import db
from tests.conftest import make_database

# 100,000 rows of 400 bytes: more than the sockets between the server and the client hold.
DIGITS = "(SELECT 0 AS d UNION ALL " + " UNION ALL ".join(f"SELECT {n}" for n in range(1, 10)) + ")"
ROWS = "SELECT REPEAT('x', 400) FROM " + ", ".join(f"{DIGITS} AS t{n}" for n in range(5))


def read_after_a_pause(conn: sa.Connection, pause: float) -> int:
    result = conn.execution_options(yield_per=2000).exec_driver_sql(ROWS)
    first = result.fetchmany(10)
    time.sleep(pause)
    return len(first) + sum(1 for _ in result)


# The dropped stream's PyMySQL result tries to read the rest from the closed socket when it is
# collected (`gc.collect()` below, so within this test): the hazard shown, not a failure.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_paused_stream_outlives_the_write_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with contextlib.contextmanager(make_database)("mysql", tmp_path) as url:
        engine = db.create_engine(url)

        @sa.event.listens_for(engine, "connect")
        def short(dbapi_conn: Any, _record: Any) -> None:  # a server whose timeout is 1 s
            with dbapi_conn.cursor() as cursor:
                cursor.execute("SET SESSION net_write_timeout = 1")

        try:
            with db.reader(engine) as conn, pytest.raises(sa.exc.DBAPIError):
                read_after_a_pause(conn, 3.0)  # a plain reader loses the stream
            gc.collect()  # its result complains now, under this test's filter, not a later test's
            monkeypatch.setattr(db, "STREAM_WAIT_SECONDS", 6)
            with db.stream_reader(engine) as conn:
                assert read_after_a_pause(conn, 3.0) == 100_000
        finally:
            engine.dispose()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_other_engines_stream_as_a_reader_does(kind: str, tmp_path: Path) -> None:
    with contextlib.contextmanager(make_database)(kind, tmp_path) as url:
        engine = db.create_engine(url)
        try:
            with db.stream_reader(engine) as conn:
                assert conn.exec_driver_sql("SELECT 1").scalar() == 1
        finally:
            engine.dispose()
