"""Fault tests with real worker processes: kill -9 mid-request, Redis flushed and restarted.

Every accepted event must end delivered; the only repeats at the receiver are the events of the
request a killed worker had in flight, resent with the same event id for the receiver to drop.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from firstparty.delivery import queue
from firstparty.store import db, migrate
from tests.conftest import SECRET, make_database
from tests.delivery.outbox import API_KEY, add_events, all_settled, event_ids, eventually
from tests.delivery.receiver import Receiver

pytestmark = pytest.mark.slow


def _config(
    tmp_path: Path, receiver: Receiver, *, delivery: str | None = None, more: str = ""
) -> Path:
    path = tmp_path / "firstparty.toml"
    path.write_text(
        f"""
[delivery]
{FAST_DELIVERY if delivery is None else delivery}

[[destinations]]
name = "fake"
type = "fake"
api_base = "{receiver.url}"
api_key = "{API_KEY}"
batch_size = 5
timeout_seconds = 30
{more}
"""
    )
    return path


FAST_DELIVERY = """
lease_seconds = 5
sweep_interval_seconds = 0.5
backoff_base_seconds = 0.05
backoff_max_seconds = 0.2
"""


class Workers:
    """`python -m firstparty.delivery.worker` processes, stopped for sure at the end."""

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.tmp_path, self.env, self.procs = tmp_path, env, list[subprocess.Popen[bytes]]()

    def start(self) -> subprocess.Popen[bytes]:
        log = open(self.tmp_path / f"worker-{len(self.procs)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "firstparty.delivery.worker"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.procs.append(proc)
        return proc

    async def kill(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proc.wait, 10)

    async def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                await asyncio.to_thread(proc.wait, 20)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait, 10)


def _env(database_url: str, config: Path, redis_url: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIRSTPARTY_")}
    env.update(
        FIRSTPARTY_DATABASE_URL=database_url,
        FIRSTPARTY_SECRET_KEY=SECRET,
        FIRSTPARTY_CONFIG=str(config),
        PYTHONPATH=str(Path(__file__).resolve().parents[2]),
    )
    if redis_url:
        env["FIRSTPARTY_REDIS_URL"] = redis_url
    return env


def _check_receiver(receiver: Receiver, expected: set[str], held: set[str]) -> None:
    counts = Counter(receiver.event_ids())
    assert set(counts) == expected  # none lost
    assert {e for e, n in counts.items() if n > 1} <= held  # only the killed request again


def _held_ids(receiver: Receiver, after: int = 0) -> set[str]:
    """Events of every request the receiver holds (all that a killed worker had in flight)."""
    return {e["event_id"] for seen in receiver.seen[after:] for e in seen.json()["events"]}


async def test_kill_9_mid_request_on_sqlite_embedded(
    sqlite_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    engine = db.create_engine(sqlite_url)
    workers = Workers(tmp_path, _env(sqlite_url, _config(tmp_path, receiver)))
    receiver.hold = asyncio.Event()
    add_events(engine, ["fake"], 20)
    try:
        first = workers.start()
        await eventually(lambda: receiver.held >= 1, timeout=30)
        await workers.kill(first)
        held = _held_ids(receiver)
        receiver.fail(2, 500)
        receiver.fail(1, 429, {"Retry-After": "0.2"})
        receiver.hold.set()  # the receiver got it, but the worker never heard back
        workers.start()
        await eventually(all_settled(engine), timeout=60)
    finally:
        await workers.stop_all()
    _check_receiver(receiver, set(event_ids(engine).values()), held)
    engine.dispose()


async def test_answers_that_arrived_before_a_kill_are_not_sent_again(
    sqlite_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    """Four requests of five in one round: three answered, the fourth in flight at the kill.

    With the default lease (10 s) and poll, the work the dead worker held is claimed again by
    the worker still alive within 15 s, and only the in-flight request's events repeat.
    """
    engine = db.create_engine(sqlite_url)
    config = _config(tmp_path, receiver, delivery="backoff_base_seconds = 0.05")
    workers = Workers(tmp_path, _env(sqlite_url, config))
    receiver.hold, receiver.hold_from = asyncio.Event(), 3
    add_events(engine, ["fake"], 20)
    try:
        first = workers.start()
        await eventually(lambda: receiver.held >= 1, timeout=30)
        await eventually(_delivered_count(engine, 15), timeout=10)  # saved as they came
        held = _held_ids(receiver, after=receiver.hold_from)
        workers.start()  # a second worker, idle: it must pick the dead one's work up
        await asyncio.sleep(1)
        await workers.kill(first)
        killed_at = time.monotonic()
        receiver.hold.set()  # the receiver got it, but the dead worker never heard back
        await eventually(lambda: Counter(receiver.event_ids()).keys() >= held, timeout=10)
        await eventually(lambda: min(Counter(receiver.event_ids())[e] for e in held) > 1, 30)
        reclaimed_after = time.monotonic() - killed_at
        await eventually(all_settled(engine), timeout=30)
    finally:
        await workers.stop_all()
    counts = Counter(receiver.event_ids())
    assert set(counts) == set(event_ids(engine).values())
    assert {e for e, n in counts.items() if n > 1} == held
    assert len(held) == 5
    assert reclaimed_after <= 15, f"re-delivered {reclaimed_after:.1f} s after the kill"
    engine.dispose()


async def test_adapter_failures_in_token_and_build_fail_alone(
    sqlite_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    """A token step and a build that raise fail their own work; the other destination
    delivers every event exactly once, and the worker goes on."""
    broken = "".join(
        f"""
[[destinations]]
name = "{name}"
type = "fake"
api_base = "{receiver.url}"
api_key = "{API_KEY}"
token_url = "{receiver.url}/token"
raise_in = "{step}"
batch_size = 5
"""
        for name, step in (("bad_token", "token_request"), ("bad_build", "build"))
    )
    engine = db.create_engine(sqlite_url)
    workers = Workers(tmp_path, _env(sqlite_url, _config(tmp_path, receiver, more=broken)))
    add_events(engine, ["fake", "bad_token", "bad_build"], 12)
    try:
        workers.start()
        await eventually(_all_final(engine), timeout=60)
    finally:
        await workers.stop_all()
    counts = Counter(receiver.event_ids())
    assert set(counts) == set(event_ids(engine).values())
    assert set(counts.values()) == {1}
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT destination, status, last_error FROM deliveries"))
        ends = {(r.destination, r.status, (r.last_error or "").split(":")[0]) for r in rows}
    assert ends == {
        ("fake", "delivered", ""),
        ("bad_token", "failed", "adapter error in token_request"),
        ("bad_build", "failed", "adapter error in build"),
    }
    log = "".join(p.read_text() for p in tmp_path.glob("worker-*.log"))
    assert "fake adapter drill: token_request raised" in log  # the traceback, logged
    assert log.count("Traceback") == log.count("destination bad_")  # each once, with its line
    engine.dispose()


def _delivered_count(engine: sa.Engine, n: int) -> Callable[[], bool]:
    def check() -> bool:
        with engine.connect() as conn:
            query = "SELECT count(*) FROM deliveries WHERE status = 'delivered'"
            return int(conn.execute(sa.text(query)).scalar_one()) >= n

    return check


def _all_final(engine: sa.Engine) -> Callable[[], bool]:
    def check() -> bool:
        with engine.connect() as conn:
            query = "SELECT count(*) FROM deliveries WHERE status IN ('pending', 'inflight')"
            return int(conn.execute(sa.text(query)).scalar_one()) == 0

    return check


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A throwaway redis-server of our own, so restarting it touches nobody else."""

    def __init__(self, tmp_path: Path) -> None:
        self.port, self.dir = _free_port(), tmp_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--dir", str(self.dir)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        await eventually(self._up, timeout=10)

    def _up(self) -> bool:
        ping = ["redis-cli", "-p", str(self.port), "ping"]
        return subprocess.run(ping, capture_output=True, check=False).stdout.strip() == b"PONG"

    def cli(self, *args: str) -> None:
        subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True, check=False)

    async def shutdown(self) -> None:
        self.cli("shutdown", "nosave")
        if self.proc is not None:
            await asyncio.to_thread(self.proc.wait, 10)


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
async def test_kill_9_flushall_and_redis_restart_on_postgresql(
    tmp_path: Path, receiver: Receiver
) -> None:
    for url in make_database("postgresql", tmp_path):
        engine = db.create_engine(url)
        migrate.upgrade(engine)
        redis_server = RedisServer(tmp_path)
        await redis_server.start()
        api = queue.RedisQueue(redis_server.url, "unused")
        workers = Workers(tmp_path, _env(url, _config(tmp_path, receiver), redis_server.url))
        try:
            await _scenario(engine, api, redis_server, workers, receiver, url)
        finally:
            await workers.stop_all()
            await api.close()
            await redis_server.shutdown()
            engine.dispose()


async def _scenario(
    engine: sa.Engine,
    api: queue.RedisQueue,
    redis_server: RedisServer,
    workers: Workers,
    receiver: Receiver,
    url: str,
) -> None:
    from tests.conftest import settings_for

    api.key = queue.wake_key(settings_for(url))  # the key the workers listen on
    receiver.hold = asyncio.Event()
    add_events(engine, ["fake"], 10)
    await api.notify()
    first = workers.start()
    await eventually(lambda: receiver.held >= 1, timeout=30)
    await workers.kill(first)
    held = _held_ids(receiver)
    workers.start()
    workers.start()
    receiver.hold.set()
    redis_server.cli("flushall")
    add_events(engine, ["fake"], 10)
    await api.notify()
    await redis_server.shutdown()
    add_events(engine, ["fake"], 10)
    await api.notify()  # lost: Redis is down
    await asyncio.sleep(1)
    await redis_server.start()
    add_events(engine, ["fake"], 5)
    await api.notify()
    await eventually(all_settled(engine), timeout=60)
    await workers.stop_all()
    _check_receiver(receiver, set(event_ids(engine).values()), held)
