"""The wake-up channel: embedded and Redis; a Redis outage costs wake-ups, never an error."""

from __future__ import annotations

import asyncio
import secrets

import pytest
import redis

from firstparty.delivery import queue
from tests.conftest import settings_for

REDIS = "redis://127.0.0.1:6379/0"


def _redis_up() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


async def test_embedded_wakes_a_waiter() -> None:
    channel = queue.EmbeddedQueue()
    assert await channel.wait(0.01) is False
    await channel.notify()
    assert await channel.wait(5) is True
    assert await channel.ready()


@pytest.mark.skipif(not _redis_up(), reason="Redis on 127.0.0.1:6379 is not running")
async def test_redis_carries_wake_ups_between_clients() -> None:
    key = f"firstparty:test:{secrets.token_hex(8)}"
    api, worker = queue.RedisQueue(REDIS, key), queue.RedisQueue(REDIS, key)
    try:
        assert await worker.wait(0.05) is False
        for _ in range(100):
            await api.notify()
        assert await worker.wait(5) is True
        assert await worker.ready()
        assert await worker._redis.llen(key) == queue.MAX_TOKENS - 1  # capped
    finally:
        await worker._redis.delete(key)
        await api.close()
        await worker.close()


@pytest.mark.skipif(not _redis_up(), reason="Redis on 127.0.0.1:6379 is not running")
async def test_an_idle_redis_waiter_is_woken_by_a_notice_after_a_long_wait() -> None:
    # Idle past the client library's default socket timeout (redis-py 8: 5 s), which used to
    # cut the BLPOP and leave the worker deaf until its next poll. Woken means the wait answers
    # True (a notice), long before its own 60 s; no figure of time is asserted (bench/ measures).
    idle = 6.5
    key = f"firstparty:test:{secrets.token_hex(8)}"
    api, worker = queue.RedisQueue(REDIS, key), queue.RedisQueue(REDIS, key)
    try:
        waiting = asyncio.create_task(worker.wait(60))
        await asyncio.sleep(idle)
        assert not waiting.done(), "the wait ended by itself: it is no longer listening"
        await api.notify()
        assert await asyncio.wait_for(waiting, 5) is True
    finally:
        await api.close()
        await worker.close()


async def test_redis_outage_is_not_an_error() -> None:
    dead = queue.RedisQueue("redis://127.0.0.1:1/0", "firstparty:test:dead")
    await dead.notify()
    assert await dead.wait(0.05) is False
    assert await dead.ready() is False
    await dead.close()


def test_the_settings_pick_the_channel(sqlite_url: str) -> None:
    assert isinstance(queue.make_queue(settings_for(sqlite_url)), queue.EmbeddedQueue)
    with_redis = settings_for(sqlite_url, redis_url=REDIS)
    assert isinstance(queue.make_queue(with_redis), queue.RedisQueue)
    assert queue.wake_key(with_redis) != queue.wake_key(settings_for("sqlite:///other.db"))
