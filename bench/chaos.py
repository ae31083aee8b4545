"""Chaos benchmark: is every acknowledged event delivered, once, while processes die?

    .venv/bin/python bench/chaos.py [--seconds 60] [--rate 30] [--lease-seconds N]
        [--destination webhook|fake] [--batch-size N] [--worker-kills N] [--burst N]

Setup, all on 127.0.0.1: a fresh PostgreSQL database (127.0.0.1:5432, user postgres, dropped at
the end), the machine's Redis on 6379 (wake-ups only; the wake key is derived from the database
URL, so no other deployment shares it), `firstparty migrate`, two `firstparty serve` processes
and two `firstparty worker` processes, all configured by one TOML file (FIRSTPARTY_CONFIG).
One destination posts to a receiver in this process that answers 500 for 10 % of requests,
429 (Retry-After: 1) for 5 %, 200 after 2-3 s for 5 %, else 200 at once, and notes the time of
every 2xx per event id. `--destination webhook` (the default) posts each event alone (POST /hook,
the id in `X-Firstparty-Event-Id`); `--destination fake` batches like a platform, up to
`--batch-size` events a request (POST /events, `{"events": [{"event_id": ...}, ...]}`): the fault
is drawn per request, and a 2xx notes every event id of its body (the answer names none rejected
or to retry). The receiver line prints how many events the requests really carried. The retry
backoff is shortened (1 s doubling to 4 s) so that retries fit the run; the lease is the default
of the code under test unless given.

Load: `--rate` server events a second with unique event ids, spread over both API processes,
for `--seconds`, one at a time or `--burst` at once (every burst / rate seconds); a send is
retried (on the other process) after a connection error, a timeout, a 5xx or a 429, and counts
as acknowledged only on a 202. Chaos during the load, at fixed fractions of it: `kill -9` of a
worker `--worker-kills` times (default 3: at 10 % of the load, then every 90 %/N, so 10, 40 and
70 %; the two workers in turn, each restarted 1.5 s later), `kill -9` of each API process
(restarted), Redis killed with `kill -9` and later shut down (restarted 2 s later), and a
FLUSHALL. Then the load stops, every process and Redis are up again, and the run waits (at most
`--drain-seconds`) until no delivery is pending or inflight.

What makes a round's answers saved late (issue 10) show: rounds that carry several requests, so
that some are answered while another is still out (a slow 2-3 s answer) when the worker dies.
A steady load is claimed about event by event as the wake-ups arrive (`fake` requests carry
1.3-1.4 events), so neither destination shows much. `--burst 200` leaves a backlog that lanes
claim in rounds of many requests. Measured (60 s at 40/s, 6 worker kills, 2 cores): the code
before the fix (790aa2f) 10-15 % duplicates with `webhook` and 12 % with `fake --batch-size 5`,
against 0.5-1.6 % and 1.0 % on main; `fake` at batches of 20 (about 10 events each, 1-2
requests a round) gave 0.7-4.6 % against 0.1-0.8 %, too few requests a round to tell.

What the table means:
- acknowledged: event ids the client got a 202 for (a resend after a lost answer may get
  `duplicate: true`; it counts once). stored: `events` rows with those ids.
- delivered: acknowledged ids the receiver answered 2xx at least once; and `deliveries` rows of
  those events that are `delivered`. lost: acknowledged ids the receiver never answered 2xx.
- duplicates: acknowledged ids the receiver answered 2xx more than once, as a count and as a
  share of the acknowledged events (a platform deduplicates them by event id; GA4 cannot).
- re-delivery: for each worker kill, the `deliveries` rows that were `inflight` (with either
  worker) just before the SIGKILL; for each of them, the time from the kill until the row was
  recorded `delivered` (its `updated_at`, this machine's clock). The worst over all kills is
  printed. The surviving worker's rows settle within seconds, so the worst is the killed
  worker's work: its lease running out, the next claim, and the receiver's faults on that try.

Targets (issue 10): 0 lost, duplicates <= 1 %, re-delivery <= 15 s. PASS/MISS is printed; the
exit status is 0 whatever the figures, non-zero only when the run itself could not be made.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType

import aiohttp
import sqlalchemy as sa
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from firstparty.delivery import queue  # noqa: E402
from firstparty.settings import DeliverySettings, Settings  # noqa: E402
from firstparty.store import db  # noqa: E402
from firstparty.store.models import deliveries, events  # noqa: E402

POSTGRES = os.environ.get("FIRSTPARTY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
REDIS_URL = "redis://127.0.0.1:6379/0"
REDIS_START = [
    "redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "6379",
    "--save", "", "--appendonly", "no", "--dir", "/var/lib/redis",
    "--logfile", "/var/log/redis/ci.log",
]  # fmt: skip
SECRET_KEY = "chaos-secret-" + "x" * 40
SOURCE = "chaos"
WORKER_RESTART_SECONDS = 1.5
API_RESTART_SECONDS = 1.5
REDIS_RESTART_SECONDS = 2.0
MAX_DUPLICATE_SHARE = 0.01
MAX_REDELIVERY_SECONDS = 15.0
FAKE_BATCH_SIZE = 20
MIN_KILL_SPACING_SECONDS = 3.0  # a killed worker is back and claiming before the next kill


# ---------------------------------------------------------------- the faulty receiver


@dataclass
class Receiver:
    """The platform: 500 for 10 % of requests, 429 for 5 %, slow 200 for 5 %, else 200.

    POST /hook is the webhook (one event, its id in a header); POST /events is the `fake`
    destination (a batch, the ids in the body). A 2xx notes the time for every event id in it.
    """

    ok: dict[str, list[float]] = field(default_factory=dict)  # event id -> times of each 2xx
    answers: Counter[int] = field(default_factory=Counter)  # per request
    batch_sizes: Counter[int] = field(default_factory=Counter)  # events per request
    url: str = ""  # http://127.0.0.1:<port>
    _runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/hook", self._hook)
        app.router.add_post("/events", self._events)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _hook(self, request: web.Request) -> web.Response:
        await request.read()
        return await self._take([request.headers.get("X-Firstparty-Event-Id", "")])

    async def _events(self, request: web.Request) -> web.Response:
        body = await request.json()
        return await self._take([str(item["event_id"]) for item in body["events"]])

    async def _take(self, event_ids: list[str]) -> web.Response:
        """One request: the fault is drawn once for all its events."""
        self.batch_sizes[len(event_ids)] += 1
        draw = random.random()
        if draw < 0.10:
            return self._answer(500)
        if draw < 0.15:
            return self._answer(429, {"Retry-After": "1"})
        if draw < 0.20:
            await asyncio.sleep(random.uniform(2.0, 3.0))
        # Noted even when the worker is gone by now: the platform did take the events.
        now = time.time()
        for event_id in event_ids:
            self.ok.setdefault(event_id, []).append(now)
        return self._answer(200)

    def _answer(self, status: int, headers: dict[str, str] | None = None) -> web.Response:
        self.answers[status] += 1
        # `fake` reads `rejected`/`retry` on a 2xx: none, so every event of the batch is taken.
        body = {"status": status, "rejected": {}, "retry": {}}
        return web.json_response(body, status=status, headers=headers)

    def sizes_text(self) -> str:
        requests = sum(self.batch_sizes.values())
        if not requests:
            return "no requests"
        events_sent = sum(size * n for size, n in self.batch_sizes.items())
        return (
            f"{requests} requests, {events_sent / requests:.1f} events each on average,"
            f" largest {max(self.batch_sizes)}"
        )


# ---------------------------------------------------------------- processes, database, Redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    """The API and worker processes of the run: each restartable, all stopped at the end."""

    def __init__(self, env: dict[str, str], work: Path, api_ports: list[int]) -> None:
        self.env, self.work, self.api_ports = env, work, api_ports
        self.apis: list[subprocess.Popen[bytes] | None] = [None] * len(api_ports)
        self.workers: list[subprocess.Popen[bytes] | None] = [None, None]
        self._started: list[subprocess.Popen[bytes]] = []

    @property
    def api_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.api_ports]

    def firstparty(self, *args: str, log: str) -> subprocess.Popen[bytes]:
        with open(self.work / log, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "firstparty.cli", *args],
                env=self.env,
                cwd=self.work,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches only us; we stop them in order
            )
        self._started.append(proc)
        return proc

    def start_api(self, index: int) -> None:
        port = str(self.api_ports[index])
        self.apis[index] = self.firstparty("serve", "--port", port, log=f"api-{index}.log")
        wait_healthy(self.api_urls[index], self.apis[index], self.work / f"api-{index}.log")

    def start_worker(self, index: int) -> None:
        self.workers[index] = self.firstparty("worker", log=f"worker-{index}.log")

    def ensure_all_running(self) -> None:
        for index, proc in enumerate(self.apis):
            if proc is None or proc.poll() is not None:
                self.start_api(index)
        for index, proc in enumerate(self.workers):
            if proc is None or proc.poll() is not None:
                self.start_worker(index)

    def stop_all(self) -> None:
        for proc in self._started:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self._started:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def kill_9(proc: subprocess.Popen[bytes] | None) -> float:
    """SIGKILL the process, reap it, and return the wall-clock time of the kill."""
    if proc is None or proc.poll() is not None:
        return time.time()
    proc.send_signal(signal.SIGKILL)
    at = time.time()
    proc.wait(10)
    return at


def wait_healthy(url: str, proc: subprocess.Popen[bytes] | None, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        with suppress(OSError):
            urllib.request.urlopen(url + "/healthz", timeout=1)
            return
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    raise RuntimeError(f"API at {url} did not start:\n{tail}")


@contextmanager
def fresh_database() -> Iterator[str]:
    """An empty PostgreSQL database, dropped (connections and all) at the end."""
    name = f"fp_chaos_{os.getpid()}_{secrets.token_hex(3)}"
    admin = db.create_engine(
        f"{POSTGRES}/postgres", isolation_level="AUTOCOMMIT", poolclass=sa.NullPool
    )
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    try:
        yield f"{POSTGRES}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def redis_cli(*args: str) -> str:
    cmd = ["redis-cli", "-h", "127.0.0.1", "-p", "6379", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False).stdout


def redis_up() -> bool:
    return redis_cli("ping").strip() == "PONG"


def redis_wait(up: bool, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while redis_up() != up:
        if time.monotonic() > deadline:
            raise RuntimeError(f"Redis did not {'start' if up else 'stop'} in {seconds:g} s")
        time.sleep(0.05)


def redis_kill_9() -> None:
    for line in redis_cli("info", "server").splitlines():
        if line.startswith("process_id:"):
            os.kill(int(line.split(":")[1]), signal.SIGKILL)
    redis_wait(up=False)


def redis_shutdown() -> None:
    redis_cli("shutdown", "nosave")
    redis_wait(up=False)


def redis_start() -> None:
    if not redis_up():
        subprocess.run(REDIS_START, capture_output=True, timeout=10, check=False)
    redis_wait(up=True)


# ---------------------------------------------------------------- load


@dataclass
class Load:
    """What the client saw: event ids acknowledged with a 202, and what it took."""

    acked: set[str] = field(default_factory=set)
    sent: int = 0
    resends: int = 0
    unacked: int = 0  # gave up before a 202 (never, unless both APIs stayed down)
    refused: Counter[int] = field(default_factory=Counter)  # answers that end a send: 4xx


async def send_load(
    load: Load, urls: list[str], write_key: str, rate: float, seconds: float, burst: int
) -> None:
    """Open loop: each event starts on schedule and retries until a 202 or 30 s have passed.

    The events start `burst` at a time (a server source flushing its queue), every burst / rate s.
    """
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        tasks = []
        start = time.monotonic()
        for i in range(int(rate * seconds)):
            due = start + (i // burst) * burst / rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            tasks.append(asyncio.create_task(send_one(load, session, urls, write_key, i)))
        await asyncio.gather(*tasks)


async def send_one(
    load: Load, session: aiohttp.ClientSession, urls: list[str], write_key: str, i: int
) -> None:
    event_id = str(uuid.uuid4())
    body = json.dumps(
        {
            "type": "track",
            "name": "Lead",
            "event_id": event_id,
            "properties": {"value": 49.0, "currency": "USD", "n": i},
            "user": {"email": f"chaos-{i}@example.test"},
            "context": {"ip": "203.0.113.9"},
        }
    )
    headers = {"X-Write-Key": write_key, "Content-Type": "application/json"}
    load.sent += 1
    deadline, attempt = time.monotonic() + 30, 0
    while time.monotonic() < deadline:
        url = urls[(i + attempt) % len(urls)] + "/v1/events"
        with suppress(aiohttp.ClientError, TimeoutError):
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                if response.status == 202:
                    load.acked.add(event_id)
                    return
                if response.status < 500 and response.status != 429:
                    load.refused[response.status] += 1
                    return
        load.resends += 1
        attempt += 1
        await asyncio.sleep(min(0.1 * attempt, 1.0))
    load.unacked += 1


# ---------------------------------------------------------------- chaos


@dataclass(frozen=True)
class Kill:
    """One worker kill: when, and the deliveries that were inflight just before it."""

    worker: int
    at: float  # wall clock
    inflight: tuple[int, ...]  # deliveries.id


def inflight_ids(engine: sa.Engine) -> tuple[int, ...]:
    d = deliveries.c
    with engine.connect() as conn:
        rows = conn.execute(sa.select(d.id).where(d.status == "inflight")).scalars()
        return tuple(int(r) for r in rows)


class Chaos:
    """The scheduled faults; each restarts what it broke."""

    def __init__(
        self, cluster: Cluster, engine: sa.Engine, log: list[str], t0: float, worker_kills: int
    ) -> None:
        self.cluster, self.engine, self.log, self.t0 = cluster, engine, log, t0
        self.worker_kills = worker_kills
        self.kills: list[Kill] = []

    def note(self, text: str) -> None:
        self.log.append(f"{time.monotonic() - self.t0:6.1f} s  {text}")

    async def kill_worker(self, index: int) -> None:
        inflight = await asyncio.to_thread(inflight_ids, self.engine)
        at = kill_9(self.cluster.workers[index])
        self.kills.append(Kill(index, at, inflight))
        self.note(f"kill -9 worker {index} ({len(inflight)} deliveries inflight)")
        await asyncio.sleep(WORKER_RESTART_SECONDS)
        self.cluster.start_worker(index)

    async def kill_api(self, index: int) -> None:
        kill_9(self.cluster.apis[index])
        self.note(f"kill -9 API {index}")
        await asyncio.sleep(API_RESTART_SECONDS)
        await asyncio.to_thread(self.cluster.start_api, index)
        self.note(f"API {index} back")

    async def kill_redis(self, _: int) -> None:
        await asyncio.to_thread(redis_kill_9)
        self.note("kill -9 Redis")
        await self._restart_redis()

    async def stop_redis(self, _: int) -> None:
        await asyncio.to_thread(redis_shutdown)
        self.note("redis-cli shutdown nosave")
        await self._restart_redis()

    async def flushall(self, _: int) -> None:
        await asyncio.to_thread(redis_cli, "flushall")
        self.note("Redis FLUSHALL")

    async def _restart_redis(self) -> None:
        await asyncio.sleep(REDIS_RESTART_SECONDS)
        await asyncio.to_thread(redis_start)
        self.note("Redis back")

    def schedule(self) -> list[tuple[float, Callable[[int], Awaitable[None]], int]]:
        """(fraction of the load, fault, which process), in time order.

        Worker kills at 10 % and then every 90 %/N (N = 3: 10, 40 and 70 %), the workers in turn.
        """
        faults: list[tuple[float, Callable[[int], Awaitable[None]], int]] = [
            (0.20, self.kill_api, 0),
            (0.27, self.kill_redis, 0),
            (0.50, self.flushall, 0),
            (0.60, self.kill_api, 1),
            (0.82, self.stop_redis, 0),
        ]
        spacing = 0.90 / self.worker_kills if self.worker_kills else 0.0
        faults += [(0.10 + k * spacing, self.kill_worker, k % 2) for k in range(self.worker_kills)]
        return sorted(faults, key=lambda fault: fault[0])

    async def run(self, seconds: float) -> None:
        start = time.monotonic()
        for fraction, fault, index in self.schedule():
            await asyncio.sleep(max(0.0, start + fraction * seconds - time.monotonic()))
            await fault(index)


# ---------------------------------------------------------------- the run


def destination_text(args: argparse.Namespace, receiver_url: str) -> str:
    if args.destination == "fake":
        return f"""
[[destinations]]
name = "platform"
type = "fake"
api_base = "{receiver_url}"
batch_size = {args.batch_size}
"""
    return f"""
[[destinations]]
name = "hook"
type = "webhook"
url = "{receiver_url}/hook"
secret = "env:CHAOS_HOOK_SECRET"
"""


def config_text(args: argparse.Namespace, receiver_url: str) -> str:
    lease = f"lease_seconds = {args.lease_seconds}\n" if args.lease_seconds else ""
    return f"""
[delivery]
{lease}sweep_interval_seconds = 1.0
backoff_base_seconds = 1.0
backoff_max_seconds = 4.0
max_attempts = 30

[[sources]]
name = "{SOURCE}"
kind = "server"
write_key = "env:CHAOS_WRITE_KEY"
rate_limit_per_second = 100000
rate_limit_burst = 100000
{destination_text(args, receiver_url)}"""


def outbox_open(engine: sa.Engine) -> int:
    d = deliveries.c
    with engine.connect() as conn:
        query = sa.select(sa.func.count()).where(d.status.in_(["pending", "inflight"]))
        return int(conn.execute(query).scalar_one())


async def drain(engine: sa.Engine, seconds: float) -> int:
    """Wait until no delivery is pending or inflight; return how many still are."""
    deadline = time.monotonic() + seconds
    while (left := await asyncio.to_thread(outbox_open, engine)) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    return left


@dataclass
class Rows:
    stored: dict[str, str]  # event id -> events.id
    status: dict[str, str]  # events.id -> deliveries.status
    settled_at: dict[int, tuple[str, datetime]]  # deliveries.id -> (status, updated_at)


def read_rows(engine: sa.Engine) -> Rows:
    e, d = events.c, deliveries.c
    with engine.connect() as conn:
        stored = conn.execute(sa.select(e.event_id, e.id).where(e.source == SOURCE)).all()
        work = conn.execute(sa.select(d.id, d.event_pk, d.status, d.updated_at)).all()
    return Rows(
        stored={r.event_id: r.id for r in stored},
        status={r.event_pk: r.status for r in work},
        settled_at={r.id: (r.status, r.updated_at) for r in work},
    )


def redelivery(kill: Kill, rows: Rows) -> tuple[float | None, int]:
    """Worst seconds from the kill to a delivered row among those inflight at it; undelivered."""
    times, missing = [], 0
    for delivery_id in kill.inflight:
        status, at = rows.settled_at.get(delivery_id, ("gone", None))
        if status != "delivered" or at is None:
            missing += 1
        elif at.timestamp() > kill.at:
            times.append(at.timestamp() - kill.at)
    return (max(times) if times else None), missing


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else "PASS" if ok else "MISS"


def destination(args: argparse.Namespace) -> str:
    if args.destination == "fake":
        return f"`fake` destination (batches of up to {args.batch_size})"
    return "`webhook` destination (one event a request)"


def report(
    args: argparse.Namespace,
    code: str,
    lease: int,
    load: Load,
    receiver: Receiver,
    rows: Rows,
    chaos: Chaos,
    left: int,
) -> None:
    acked = load.acked
    stored = [rows.stored[i] for i in acked if i in rows.stored]
    delivered_rows = sum(1 for pk in stored if rows.status.get(pk) == "delivered")
    delivered = [i for i in acked if i in receiver.ok]
    lost = len(acked) - len(delivered)
    duplicates = sum(1 for i in acked if len(receiver.ok.get(i, ())) > 1)
    share = duplicates / len(acked) if acked else 0.0
    per_kill = [redelivery(kill, rows) for kill in chaos.kills]
    worst = max((w for w, _ in per_kill if w is not None), default=None)

    print(
        f"\nbench/chaos: PostgreSQL + Redis, 2 API processes, 2 workers, {destination(args)} "
        f"(500 10 %, 429 5 %, slow 5 % of requests); {args.seconds:g} s at {args.rate:g} "
        f"events/s{f' in bursts of {args.burst}' if args.burst > 1 else ''}; "
        f"{args.worker_kills} worker kills; "
        f"lease {lease} s{'' if args.lease_seconds else ' (default)'}, backoff 1-4 s"
    )
    print(f"code under test: {code}")
    print("\n".join(chaos.log))
    print(
        f"client: {load.sent} sent, {load.resends} resends, {load.unacked} never acknowledged,"
        f" refused {dict(load.refused) or 'none'}"
    )
    print(f"receiver: {receiver.sizes_text()}; answers {dict(sorted(receiver.answers.items()))}")
    for kill, (seconds, missing) in zip(chaos.kills, per_kill, strict=True):
        shown = f"{seconds:.1f} s" if seconds is not None else "-"
        print(
            f"worker {kill.worker} kill: {len(kill.inflight)} inflight, worst re-delivery "
            f"{shown}{f', {missing} not delivered' if missing else ''}"
        )
    if left:
        print(f"outbox NOT drained in {args.drain_seconds:g} s: {left} pending/inflight")
    worst_text = f"{worst:.1f} s" if worst is not None else "-"
    all_stored, no_dups = len(stored) == len(acked), share <= MAX_DUPLICATE_SHARE
    fast = None if worst is None else worst <= MAX_REDELIVERY_SECONDS  # none held: n/a
    table = [
        ("acknowledged (202)", f"{len(acked)}", "", ""),
        ("stored (events rows)", f"{len(stored)}", f"{len(acked)}", verdict(all_stored)),
        ("delivered (receiver 2xx ids)", f"{len(delivered)}", "", ""),
        ("delivered (deliveries rows)", f"{delivered_rows}", "", ""),
        ("lost", f"{lost}", "0", verdict(lost == 0)),
        ("duplicates", f"{duplicates} ({100 * share:.2f} %)", "<= 1 %", verdict(no_dups)),
        ("worst re-delivery after kill", worst_text, "<= 15 s", verdict(fast)),
    ]
    print(f"\n{'figure':<30}{'value':>16}{'target':>10}  result")
    for name, value, target, result in table:
        print(f"{name:<30}{value:>16}{target:>10}  {result}")


async def run(args: argparse.Namespace, cluster: Cluster, engine: sa.Engine, lease: int) -> None:
    receiver = Receiver()
    await receiver.start()
    try:
        (cluster.work / "chaos.toml").write_text(config_text(args, receiver.url))
        code = await asyncio.to_thread(code_under_test, cluster)
        await asyncio.to_thread(migrate, cluster)
        await asyncio.to_thread(cluster.ensure_all_running)
        load, log = Load(), list[str]()
        chaos = Chaos(cluster, engine, log, time.monotonic(), args.worker_kills)
        key = cluster.env["CHAOS_WRITE_KEY"]
        await asyncio.gather(
            send_load(load, cluster.api_urls, key, args.rate, args.seconds, args.burst),
            chaos.run(args.seconds),
        )
        chaos.note("load done")
        await asyncio.to_thread(redis_start)
        await asyncio.to_thread(cluster.ensure_all_running)
        left = await drain(engine, args.drain_seconds)
        chaos.note(f"{left} deliveries still open" if left else "outbox drained")
        await asyncio.sleep(0.5)  # answers the receiver is still writing
        rows = await asyncio.to_thread(read_rows, engine)
        report(args, code, lease, load, receiver, rows, chaos, left)
    finally:
        await receiver.stop()


def code_under_test(cluster: Cluster) -> str:
    """Where the processes import firstparty from (this checkout, ROOT, unless shadowed)."""
    cmd = [sys.executable, "-c", "import firstparty; print(firstparty.__file__)"]
    done = subprocess.run(cmd, env=cluster.env, cwd=cluster.work, capture_output=True, timeout=60)
    where = Path(done.stdout.decode().strip()).parent
    if done.returncode or not where.is_relative_to(ROOT):
        raise RuntimeError(f"the processes would not import firstparty from {ROOT}: {where}")
    return str(where)


def migrate(cluster: Cluster) -> None:
    cmd = [sys.executable, "-m", "firstparty.cli", "migrate"]
    done = subprocess.run(cmd, env=cluster.env, cwd=cluster.work, capture_output=True, timeout=120)
    if done.returncode:
        raise RuntimeError(f"firstparty migrate failed:\n{done.stderr.decode(errors='replace')}")


def environment(url: str, work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIRSTPARTY_")}
    env.update(
        FIRSTPARTY_DATABASE_URL=url,
        FIRSTPARTY_REDIS_URL=REDIS_URL,
        FIRSTPARTY_SECRET_KEY=SECRET_KEY,
        FIRSTPARTY_CONFIG=str(work / "chaos.toml"),  # seen by `serve --workers N` children too
        CHAOS_WRITE_KEY="sk_chaos_" + secrets.token_hex(16),
        CHAOS_HOOK_SECRET=secrets.token_hex(16),
        PYTHONPATH=str(ROOT),
    )
    return env


def interrupted(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="load (and chaos) duration")
    parser.add_argument("--rate", type=float, default=30.0, help="events per second")
    parser.add_argument(
        "--burst", type=int, default=1, help="events started together, every burst / rate s"
    )
    parser.add_argument("--drain-seconds", type=float, default=60.0)
    parser.add_argument("--lease-seconds", type=int, help="default: the code's DeliverySettings")
    parser.add_argument(
        "--destination",
        choices=["webhook", "fake"],
        default="webhook",
        help="webhook: one event a request; fake: batches of --batch-size",
    )
    parser.add_argument(
        "--batch-size", type=int, help=f"events a request, fake only (default {FAKE_BATCH_SIZE})"
    )
    parser.add_argument(
        "--worker-kills", type=int, default=3, help="kill -9 of a worker, spread over the load"
    )
    args = parser.parse_args()
    if args.seconds < 30:
        parser.error("--seconds must be at least 30")
    if args.destination == "webhook" and args.batch_size is not None:
        parser.error("--batch-size needs --destination fake (the webhook sends one event)")
    if args.batch_size is None:
        args.batch_size = FAKE_BATCH_SIZE
    if not 1 <= args.batch_size <= 1000:
        parser.error("--batch-size must be 1 to 1000 (the fake destination's largest batch)")
    if args.burst < 1:
        parser.error("--burst must be 1 or more")
    if args.worker_kills < 0:
        parser.error("--worker-kills must be 0 or more")
    if args.worker_kills and 0.90 * args.seconds / args.worker_kills < MIN_KILL_SPACING_SECONDS:
        most = int(0.90 * args.seconds / MIN_KILL_SPACING_SECONDS)
        parser.error(
            f"--worker-kills {args.worker_kills} in {args.seconds:g} s: at most {most} "
            f"(kills at least {MIN_KILL_SPACING_SECONDS:g} s apart)"
        )
    lease = args.lease_seconds or DeliverySettings().lease_seconds
    signal.signal(signal.SIGTERM, interrupted)
    if not redis_up():
        print("bench/chaos needs Redis on 127.0.0.1:6379", file=sys.stderr)
        return 2
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp, fresh_database() as url:
        work = Path(tmp)
        cluster = Cluster(environment(url, work), work, [free_port(), free_port()])
        engine = db.create_engine(url, poolclass=sa.NullPool)
        try:
            asyncio.run(run(args, cluster, engine, lease))
        except (RuntimeError, OSError, subprocess.SubprocessError, sa.exc.SQLAlchemyError) as exc:
            print(f"bench/chaos could not run: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("bench/chaos interrupted; cleaning up", file=sys.stderr)
            return 130
        finally:
            cluster.stop_all()
            engine.dispose()
            redis_start()
            settings = Settings(database_url=url, secret_key=SECRET_KEY)
            redis_cli("del", queue.wake_key(settings))
    print(f"\nwall time {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
