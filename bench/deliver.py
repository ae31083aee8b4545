"""Delivery benchmark: deliveries/s (batched and unbatched), queue lag at 1,000 events/s, RSS.

    .venv/bin/python bench/deliver.py [--events 20000] [--lag-seconds 10]

One `firstparty.delivery.worker` process on SQLite delivers to a fake receiver in another
process, both on 127.0.0.1. Wake-ups go through Redis on 127.0.0.1:6379 when it answers
(the `firstparty worker` deployment), else the worker polls. The last line is PASS or FAIL
against the targets (>= 5,000 deliveries/s batched, worker peak RSS <= 150 MB); nothing is
asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from firstparty import ids  # noqa: E402
from firstparty.delivery import queue  # noqa: E402
from firstparty.settings import Settings  # noqa: E402
from firstparty.store import db, migrate  # noqa: E402
from firstparty.store.models import deliveries, events  # noqa: E402

SECRET = "bench-secret-" + "x" * 40
REDIS = "redis://127.0.0.1:6379/0"
TARGET_BATCHED_RATE, TARGET_RSS_MB = 5000.0, 150.0


def serve_receiver(port: int) -> None:
    """The fake platform: answers every batch 200 at once."""
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"ok": True})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/events", handle)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def insert(engine: sa.Engine, destination: str, count: int) -> None:
    now = datetime.now(UTC)
    for start in range(0, count, 2000):
        n = min(2000, count - start)
        pks = [ids.new_id() for _ in range(n)]
        event_rows = [
            {
                "id": pk,
                "source": "crm",
                "event_id": str(uuid.uuid4()),
                "type": "track",
                "name": "Lead",
                "occurred_at": now,
                "received_at": now,
                "request": {"properties": {"value": 49.0, "currency": "USD"}},
                "response": {},
                "user": {"em": "a" * 64},
                "context": {"ip": "203.0.113.9"},
                "consent": {},
            }
            for pk in pks
        ]
        work = [
            {
                "event_pk": pk,
                "destination": destination,
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": now,
                "occurred_at": now,
                "created_at": now,
                "updated_at": now,
            }
            for pk in pks
        ]
        with engine.begin() as conn:
            conn.execute(sa.insert(events), event_rows)
            conn.execute(sa.insert(deliveries), work)


def count_done(engine: sa.Engine, destination: str) -> int:
    d = deliveries.c
    with engine.connect() as conn:
        query = sa.select(sa.func.count()).where(
            d.destination == destination, d.status == "delivered"
        )
        return int(conn.execute(query).scalar_one())


def rate(engine: sa.Engine, destination: str) -> float:
    """Deliveries per second from the first claim to the last finish (database clock-free)."""
    d = deliveries.c
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(
                sa.func.count(), sa.func.min(d.first_attempt_at), sa.func.max(d.updated_at)
            ).where(d.destination == destination, d.status == "delivered")
        ).one()
    seconds = (row[2] - row[1]).total_seconds()
    return row[0] / seconds if seconds > 0 else float("inf")


def wait_done(engine: sa.Engine, destination: str, count: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if count_done(engine, destination) >= count:
            return True
        time.sleep(0.1)
    return False


def rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident set size of a process, in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def verdict(batched: float, peak_mb: float) -> str:
    """PASS when both targets hold: batched deliveries/s and the worker's peak RSS."""
    misses = []
    if batched < TARGET_BATCHED_RATE:
        misses.append(f"batched {batched:.0f}/s < {TARGET_BATCHED_RATE:.0f}")
    if peak_mb > TARGET_RSS_MB:
        misses.append(f"RSS {peak_mb:.0f} MB > {TARGET_RSS_MB:.0f}")
    return "PASS" if not misses else "FAIL (" + ", ".join(misses) + ")"


def redis_up() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(REDIS, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


async def steady_load(
    engine: sa.Engine, settings: Settings, per_second: int, seconds: float
) -> None:
    """Insert `per_second` events a second in 20 slices, waking the worker after each."""
    notifier = queue.make_queue(settings)
    slice_count, slices = per_second // 20, int(seconds * 20)
    start = time.monotonic()
    for i in range(slices):
        await asyncio.to_thread(insert, engine, "batched", slice_count)
        await notifier.notify()
        await asyncio.sleep(max(0.0, start + (i + 1) / 20 - time.monotonic()))
    await notifier.close()


async def wake(settings: Settings) -> None:
    notifier = queue.make_queue(settings)
    await notifier.notify()
    await notifier.close()


def lag(engine: sa.Engine, since: datetime) -> list[float]:
    d = deliveries.c
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(d.created_at, d.updated_at).where(
                d.destination == "batched", d.status == "delivered", d.created_at >= since
            )
        ).all()
    return sorted((r.updated_at - r.created_at).total_seconds() for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--unbatched", type=int, default=3000)
    parser.add_argument("--lag-seconds", type=float, default=10.0)
    parser.add_argument("--receiver", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receiver:
        serve_receiver(args.receiver)
        return
    with tempfile.TemporaryDirectory() as tmp:
        run(args, Path(tmp))


def run(args: argparse.Namespace, tmp: Path) -> None:
    url = f"sqlite:///{tmp / 'bench.db'}"
    engine = db.create_engine(url)
    migrate.upgrade(engine)
    port = free_port()
    use_redis = redis_up()
    config = tmp / "firstparty.toml"
    config.write_text(
        f"""
[delivery]
sweep_interval_seconds = {1.0 if use_redis else 0.2}

[[destinations]]
name = "batched"
type = "fake"
api_base = "http://127.0.0.1:{port}"
batch_size = 1000

[[destinations]]
name = "single"
type = "fake"
api_base = "http://127.0.0.1:{port}"
batch_size = 1
"""
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIRSTPARTY_")}
    env.update(
        FIRSTPARTY_DATABASE_URL=url,
        FIRSTPARTY_SECRET_KEY=SECRET,
        FIRSTPARTY_CONFIG=str(config),
        PYTHONPATH=str(ROOT),
    )
    settings = Settings(database_url=url, secret_key=SECRET, redis_url=None)
    if use_redis:
        env["FIRSTPARTY_REDIS_URL"] = REDIS
        settings = Settings(database_url=url, secret_key=SECRET, redis_url=REDIS)
    print(
        f"firstparty delivery benchmark ({os.cpu_count()} CPUs, SQLite, "
        f"wake-ups: {'Redis' if use_redis else 'polling'}, run {secrets.token_hex(3)})"
    )
    receiver = subprocess.Popen([sys.executable, __file__, "--receiver", str(port)])
    insert(engine, "batched", args.events)
    time.sleep(0.5)
    worker = subprocess.Popen(
        [sys.executable, "-m", "firstparty.delivery.worker"],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    try:
        ok = wait_done(engine, "batched", args.events, 60)
        batched = rate(engine, "batched") if ok else 0.0
        print(
            f"batched (1000/request): {batched:8.0f} deliveries/s"
            f"  ({args.events} events{'' if ok else ', NOT all delivered in 60 s'})"
        )
        # Queued only now: unbatched work claimed alongside would slow the batched figure.
        insert(engine, "single", args.unbatched)
        asyncio.run(wake(settings))
        ok = wait_done(engine, "single", args.unbatched, 60)
        print(
            f"unbatched (1/request):  {rate(engine, 'single'):8.0f} deliveries/s"
            f"  ({args.unbatched} events{'' if ok else ', NOT all delivered in 60 s'})"
        )
        since = datetime.now(UTC)
        asyncio.run(steady_load(engine, settings, 1000, args.lag_seconds))
        total = args.events + int(args.lag_seconds * 1000)
        wait_done(engine, "batched", total, 30)
        lags = lag(engine, since)
        p = statistics.quantiles(lags, n=100)
        print(
            f"lag at 1000 events/s for {args.lag_seconds:g} s: p50 {p[49]:.3f} s, "
            f"p99 {p[98]:.3f} s, max {lags[-1]:.3f} s  ({len(lags)} events)"
        )
        current, peak = rss_mb(worker.pid)
        print(f"worker RSS: {current:.0f} MB now, {peak:.0f} MB peak")
        print(
            f"targets: >= {TARGET_BATCHED_RATE:.0f} deliveries/s batched, worker peak RSS"
            f" <= {TARGET_RSS_MB:.0f} MB: {verdict(batched, peak)}"
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(20)
        receiver.send_signal(signal.SIGINT)
        receiver.wait(10)
        engine.dispose()


if __name__ == "__main__":
    main()
