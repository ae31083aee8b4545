"""The transport of wake-ups: tells workers that new work is committed. It carries no work.

The `deliveries` rows are the queue (a transactional outbox, claimed with a lease, see
`outbox.py`); this module only shortens the time until a worker looks. A lost wake-up costs
latency, never work: workers also poll every `sweep_interval_seconds`.

- Embedded (no `redis_url`): an `asyncio.Event` inside the `serve` process.
- Redis: a capped list per database; `notify` is LPUSH, each worker waits with BLPOP. A list,
  not a library such as arq or SAQ and not a stream with consumer groups, because a token that
  carries nothing needs no acknowledgement or reclaim: a FLUSHALL, a restart or a worker killed
  mid-request loses only tokens, and the next poll finds the rows again (stack.md §3.2).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import TYPE_CHECKING, Protocol

from firstparty.settings import Settings

if TYPE_CHECKING:
    import redis.asyncio as aioredis

log = logging.getLogger(__name__)

# Enough tokens to wake every worker of a large deployment; more would only be noise.
MAX_TOKENS = 64
# A wake-up's push gives up after this (it is sent in the background: no answer waits on it).
NOTIFY_TIMEOUT_SECONDS = 2.0
# After a Redis error the worker polls the database and listens again this soon.
REDIS_RETRY_SECONDS = 1.0
# A BLPOP's answer is due when its own timeout ends; past this margin the connection is dead.
WAIT_MARGIN_SECONDS = 2.0


class Queue(Protocol):
    """The one wake-up protocol: `notify` after a commit (API), `wait` in the worker, `ready`
    for /readyz, `close` at shut-down. Built once per process, in `runtime.Runtime`."""

    async def notify(self) -> None: ...

    async def wait(self, timeout: float) -> bool: ...

    async def ready(self) -> bool: ...

    async def close(self) -> None: ...


class EmbeddedQueue:
    """In-process wake-ups for `firstparty serve` with its worker inside."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def notify(self) -> None:
        self.wake()

    def wake(self) -> None:
        """Wake the waiting worker; safe from any thread or event loop."""
        loop = self._loop
        if loop is None or _running_loop() is loop:
            self._event.set()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(self._event.set)

    async def wait(self, timeout: float) -> bool:
        self._loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self._event.clear()

    async def ready(self) -> bool:
        return True

    async def close(self) -> None:
        return None


class RedisQueue:
    """Wake-ups through a Redis list shared by the API processes and every worker.

    Two clients: one for short commands with a socket timeout, and one for BLPOP with none,
    since a socket timeout at or below BLPOP's own (redis-py 8 defaults to 5 s, our idle poll)
    cuts every idle wait short and leaves the worker deaf until the next poll. The wait is
    bounded by `asyncio.wait_for` instead, so a connection that died silently is noticed.
    """

    def __init__(self, url: str, key: str) -> None:
        # Imported here: only Redis deployments load the client (about 6 MB of RSS).
        import redis.asyncio as aioredis
        from redis.exceptions import RedisError

        self.key = key
        self._failures: tuple[type[Exception], ...] = (RedisError, OSError)
        self._wait_failures = (*self._failures, TimeoutError)
        self._redis: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_connect_timeout=2.0, socket_timeout=NOTIFY_TIMEOUT_SECONDS
        )
        self._blocking: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_connect_timeout=2.0, socket_timeout=None
        )
        self._pending = False  # a wake-up was asked for since the last push began
        self._sender: asyncio.Task[None] | None = None
        self._failing = False

    async def notify(self) -> None:
        """Ask for a wake-up, sent in the background: calls that come while one is on its way
        fold into one more push after it. Each event of a server batch asks (500 at once), and
        one LPUSH each took every connection of the client's pool ("Too many connections",
        logged once per event). Never fails an accepted event: the workers' poll finds the work."""
        self._pending = True
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_pending())

    async def _send_pending(self) -> None:
        while self._pending:
            self._pending = False
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.lpush(self.key, b"1")
                    pipe.ltrim(self.key, 0, MAX_TOKENS - 1)
                    await pipe.execute()
            except self._failures as exc:
                if not self._failing:  # once per outage, not once per event
                    log.warning("queue: wake-up not sent (%s); workers will poll", exc)
                self._failing = True
                return
            if self._failing:
                log.warning("queue: wake-ups sent again")
            self._failing = False

    async def wait(self, timeout: float) -> bool:
        seconds = max(timeout, 0.01)
        try:
            got = await asyncio.wait_for(
                self._blocking.blpop([self.key], timeout=seconds), seconds + WAIT_MARGIN_SECONDS
            )
        except self._wait_failures as exc:
            log.warning("queue: Redis unavailable (%s); polling", exc)
            await asyncio.sleep(min(timeout, REDIS_RETRY_SECONDS))
            return False
        return got is not None

    async def ready(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except self._failures:
            return False

    async def close(self) -> None:
        if self._sender is not None:  # the last wake-up asked for goes out first
            await asyncio.gather(self._sender, return_exceptions=True)
        await self._redis.aclose()
        await self._blocking.aclose()


def wake_key(settings: Settings) -> str:
    """One list per database, so deployments sharing a Redis do not wake each other."""
    digest = hashlib.sha256(settings.database_url.encode()).hexdigest()[:16]
    return f"firstparty:wake:{digest}"


def make_queue(settings: Settings) -> Queue:
    """The wake-up channel these settings ask for: Redis, or in-process when embedded."""
    if settings.redis_url:
        return RedisQueue(settings.redis_url, wake_key(settings))
    return EmbeddedQueue()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
