"""Fixtures of the delivery tests: a local receiver and an engine on a fresh database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy.engine import Engine

from firstparty.store import db
from tests.delivery import outbox
from tests.delivery.receiver import Receiver


@pytest.fixture(autouse=True)
async def _stop_workers() -> AsyncIterator[None]:
    """Stop (and close the HTTP sessions of) every worker the test made, even when it failed."""
    yield
    made, outbox.STARTED[:] = list(outbox.STARTED), []
    for one in made:
        await one.stop()


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
