"""Admin pages only read: on SQLite they answer while a writer holds the write lock (every
transaction began IMMEDIATE, so a page queued behind ingest and the worker, and waited out the
busy timeout behind a long writer). The admin API still writes each call's sign-in record first,
so it waits for the lock (not tested here)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import sqlalchemy as sa

from firstparty.store import db
from tests.conftest import AppClient
from tests.web.test_admin_ui import signed_in_page

PAGES = ("/admin/", "/admin/deliveries", "/admin/failures", "/admin/alerts", "/admin/audiences")


@contextlib.contextmanager
def writer(sqlite_url: str) -> Iterator[None]:
    """Another process's writer in the middle of its transaction: the write lock held."""
    engine = db.create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE IF NOT EXISTS held (n INTEGER)"))
    try:
        with engine.begin() as conn:  # BEGIN IMMEDIATE: held until the block ends
            conn.execute(sa.text("INSERT INTO held VALUES (1)"))
            yield
    finally:
        engine.dispose()


async def test_pages_answer_while_the_write_lock_is_held(
    sqlite_client: AppClient, sqlite_url: str
) -> None:
    await signed_in_page(sqlite_client.http, "/admin/sources")  # signing in writes: before
    with writer(sqlite_url):
        for path in PAGES:
            answer = await asyncio.wait_for(sqlite_client.http.get(path), timeout=20)
            assert answer.status_code == 200, (path, answer.text[:300])
