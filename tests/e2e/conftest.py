"""Fixtures of the end-to-end tests: the platform fakes and the two deployments."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import make_database
from tests.e2e.journey import REDIS, Deployment, Platforms
from tests.fakes import twilio as fake_twilio


@pytest.fixture
def platforms() -> Iterator[Platforms]:
    with Platforms() as fakes:
        yield fakes


def _redis_up() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture(params=["sqlite", "postgresql+redis"])
def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Deployment]:
    """SQLite with the worker inside the app; PostgreSQL + Redis with a worker beside it."""
    kind = str(request.param)
    database = "sqlite" if kind == "sqlite" else "postgresql"
    if kind != "sqlite" and not _redis_up():
        message = f"Redis at {REDIS} is not reachable"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    database_for = contextlib.contextmanager(make_database)
    with database_for(database, tmp_path, migrated=True) as url:
        yield Deployment(kind, url, None if kind == "sqlite" else REDIS)


@pytest.fixture
def twilio() -> Iterator[fake_twilio.FakeTwilio]:
    with fake_twilio.FakeTwilio() as fake:
        assert isinstance(fake, fake_twilio.FakeTwilio)
        yield fake
