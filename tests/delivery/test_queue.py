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
        for _ in range(70):  # 70 API processes, one wake-up each
            one = queue.RedisQueue(REDIS, key)
            await one.notify()
            await one.close()  # its wake-up goes out first
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


def _lpush_calls() -> int:
    stats = redis.Redis.from_url(REDIS).info("commandstats")
    return int(stats.get("cmdstat_lpush", {}).get("calls", 0))


@pytest.mark.skipif(not _redis_up(), reason="Redis on 127.0.0.1:6379 is not running")
async def test_the_wake_ups_of_a_batch_fold_into_a_few_pushes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each event of a server batch asks for a wake-up, 500 at once: they fold into a push or
    two (one LPUSH each took every connection of the client's pool and logged "Too many
    connections" once per event), and the worker is still woken after the last one."""
    key = f"firstparty:test:{secrets.token_hex(8)}"
    api, worker = queue.RedisQueue(REDIS, key), queue.RedisQueue(REDIS, key)
    before = _lpush_calls()
    try:
        await asyncio.gather(*(api.notify() for _ in range(1000)))
        assert await worker.wait(5) is True
        await api.notify()  # after the others went out: one more push
        await api.close()
        pushes = _lpush_calls() - before
        assert 2 <= pushes <= 10, pushes
        assert [r.message for r in caplog.records if r.name == "firstparty.delivery.queue"] == []
    finally:
        await api.close()
        await worker.close()


async def test_an_outage_is_logged_once_not_once_per_wake_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead = queue.RedisQueue("redis://127.0.0.1:1/0", "firstparty:test:dead")
    for _ in range(3):
        await asyncio.gather(*(dead.notify() for _ in range(100)))
        await asyncio.sleep(0.05)
    await dead.close()
    warned = [r.message for r in caplog.records if "wake-up not sent" in r.message]
    assert len(warned) == 1, warned


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
