"""Fixtures of the delivery tests: a local receiver and an engine on a fresh database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy.engine import Engine

from firstparty.store import db
from tests.delivery.receiver import Receiver


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Iterator[Engine]:
    engine = db.create_engine(sqlite_url)
    yield engine
    engine.dispose()
