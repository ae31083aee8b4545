"""Many machines (issue 14): two `firstparty serve` and two `firstparty worker` processes on one
PostgreSQL database and Redis, behind HAProxy configured by the block of docs/deployment.md,
with `trust_forwarded_for`. The platform is the strict fake of Meta's Conversions API.

What each test proves is its name. The four share one cluster (started once, about 5 s); the
kill test starts its two victims again before it ends, so the tests need no order. All traffic
stays on 127.0.0.1/8. HAProxy is Debian's (`/usr/sbin/haproxy`, installed by .ci/run); without
it the tests skip, except in CI.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from firstparty.store import db
from firstparty.store.models import deliveries, events
from tests.conftest import BROWSER_KEY, BROWSER_UA, SECRET, make_database
from tests.fakes import meta as fake_meta
from tests.fakes.server import Received, Reply
from tests.processes import wait_answering
from tests.test_cli import BIN, clean_env, free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
SITE = "https://www.example.test"
ADMIN = "admin-token-for-many-nodes"
CLIENT = "127.0.0.2"  # the visitors' address: the API processes see HAProxy's, 127.0.0.1
BROWSER = {"X-Write-Key": BROWSER_KEY, "Origin": SITE, "User-Agent": BROWSER_UA}


def documented_proxy_config() -> str:
    """The one haproxy block of docs/deployment.md, as written."""
    blocks = re.findall(
        r"^```haproxy\n(.*?)^```", (ROOT / "docs/deployment.md").read_text(), re.S | re.M
    )
    assert len(blocks) == 1, "docs/deployment.md must hold exactly one haproxy block"
    return str(blocks[0])


def config(meta_api_base: str) -> str:
    return f"""
secret_key = "{SECRET}"
admin_token = "{ADMIN}"

[cookie]
secure = false  # the test speaks plain HTTP to the proxy; TLS ends at the proxy in production

[collect]
trust_forwarded_for = true
trusted_hops = 1
per_address_burst = 2000

[delivery]
lease_seconds = 4
sweep_interval_seconds = 0.5
backoff_base_seconds = 0.05
backoff_max_seconds = 0.2

[[sources]]
name = "www"
kind = "browser"
write_key = "{BROWSER_KEY}"
origins = ["{SITE}"]

[[destinations]]
name = "meta"
type = "meta_capi"
pixel_id = "{fake_meta.PIXEL_ID}"
access_token = "{fake_meta.ACCESS_TOKEN}"
api_base = "{meta_api_base}"
batch_size = 10
events = {{ Lead = "Lead" }}
"""


class Meta(fake_meta.FakeMeta):
    """The Meta fake, slowed a little (so a worker is mid-request when killed) and able to
    refuse every request with Graph's invalid-token error while `refusing` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.refusing = threading.Event()
        self.refused: list[str] = []  # event ids of the refused requests

    def handle(self, request: Received) -> Reply:
        time.sleep(0.02)
        if self.refusing.is_set():
            data = self._accept(request)["data"]
            self.refused.extend(event["event_id"] for event in data)
            error = {"message": "Invalid OAuth access token.", "type": "OAuthException"}
            return Reply(400, {"error": {**error, "code": 190, "fbtrace_id": "Afake"}})
        return super().handle(request)

    def counts(self) -> Counter[str]:
        """Accepted deliveries per event id."""
        return Counter(str(event["event_id"]) for event in self.events)


@dataclass
class Cluster:
    home: Path
    env: dict[str, str]
    engine: sa.Engine
    meta: Meta
    api_ports: list[int]
    proxy: str = ""
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, *command: str) -> None:
        with (self.home / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(
                command, cwd=self.home, env=self.env, stdout=log, stderr=log
            )

    def start_api(self, n: int) -> None:
        self.start(
            f"api{n}", *BIN, "serve", "--host", "127.0.0.1", "--port", str(self.api_ports[n - 1])
        )

    def start_worker(self, n: int) -> None:
        self.start(f"worker{n}", *BIN, "worker")

    def kill_9(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait(timeout=10)

    def node(self, n: int) -> str:
        return f"http://127.0.0.1:{self.api_ports[n - 1]}"

    def log(self, name: str) -> str:
        return (self.home / f"{name}.log").read_text(errors="replace")

    def wait_ready(self, url: str, name: str) -> None:
        wait_answering(url, self.procs[name], partial(self.log, name), path="/readyz")

    def in_rotation(self) -> set[str]:
        """The servers HAProxy has up, from its stats socket (a test-only config file)."""
        with socket.socket(socket.AF_UNIX) as unix:
            unix.connect(str(self.home / "haproxy.sock"))
            unix.sendall(b"show stat\n")
            lines = unix.makefile().read().splitlines()
        rows = [line.split(",") for line in lines if line.startswith("api,api")]
        return {row[1] for row in rows if row[17] == "UP"}

    def wait_in_rotation(self) -> None:
        for _ in range(100):
            with contextlib.suppress(OSError):
                if self.in_rotation() == {"api1", "api2"}:
                    return
            time.sleep(0.1)
        pytest.fail(f"HAProxy does not have both nodes up: {self.log('haproxy')}")

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def events_received(self) -> int:
        """firstparty_events_total of each API process, asked directly (not through HAProxy)."""
        return sum(self.events_at(n) for n in (1, 2))

    def events_at(self, n: int) -> int:
        text = httpx.get(f"{self.node(n)}/metrics", timeout=5).text
        return int(
            sum(
                sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
                if sample.name == "firstparty_events_total"
            )
        )


def _haproxy_or_skip() -> None:
    if os.access(HAPROXY, os.X_OK):
        return
    message = f"{HAPROXY} not found: install Debian's haproxy (.ci/run does)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    _haproxy_or_skip()
    home = tmp_path_factory.mktemp("many_nodes")
    for url in make_database("postgresql", home):
        with Meta() as meta:
            (home / "firstparty.toml").write_text(config(meta.api_base))
            env = clean_env()
            env.update(
                FIRSTPARTY_DATABASE_URL=url,
                FIRSTPARTY_REDIS_URL="redis://127.0.0.1:6379/0",
                FIRSTPARTY_CONFIG=str(home / "firstparty.toml"),
                FP_LISTEN=f"127.0.0.1:{free_port()}",
            )
            ports = [free_port(), free_port()]
            env.update(FP_API1=f"127.0.0.1:{ports[0]}", FP_API2=f"127.0.0.1:{ports[1]}")
            subprocess.run([*BIN, "migrate"], cwd=home, env=env, check=True, capture_output=True)
            engine = db.create_engine(url, poolclass=sa.NullPool)
            cluster = Cluster(home, env, engine, meta, ports, f"http://{env['FP_LISTEN']}")
            (home / "haproxy.cfg").write_text(documented_proxy_config())
            (home / "test.cfg").write_text(f"global\n    stats socket {home}/haproxy.sock\n")
            try:
                for n in (1, 2):  # all four at once, as a deployment starts them
                    cluster.start_api(n)
                    cluster.start_worker(n)
                for n in (1, 2):
                    cluster.wait_ready(cluster.node(n), f"api{n}")
                cluster.start("haproxy", HAPROXY, "-db", "-f", "haproxy.cfg", "-f", "test.cfg")
                cluster.wait_ready(cluster.proxy, "haproxy")
                cluster.wait_in_rotation()
                yield cluster
            finally:
                cluster.stop_all()
                engine.dispose()


def lead(event_id: str) -> dict[str, Any]:
    return {"type": "track", "name": "Lead", "event_id": event_id, "url": f"{SITE}/apply"}


def browser(cluster: Cluster) -> httpx.AsyncClient:
    """A visitor at 127.0.0.2 (its own cookie jar) talking to HAProxy."""
    transport = httpx.AsyncHTTPTransport(local_address=CLIENT)
    return httpx.AsyncClient(
        base_url=cluster.proxy, transport=transport, headers=BROWSER, timeout=15
    )


async def send_all(
    cluster: Cluster, ids: list[str], *, during: Callable[[int], None] | None = None
) -> tuple[set[str], Counter[str]]:
    """Post these events through the proxy, 8 at a time; each is tried until it is answered 202
    (at most 5 times, with the same event id, as a client should). Returns the acknowledged
    ids and what the first try of each was answered (status, or 0 for a broken connection).
    `during(n)` is called after each acknowledgement with how many there are."""
    acknowledged: set[str] = set()
    first: Counter[str] = Counter()
    gate = asyncio.Semaphore(8)

    async def post(http: httpx.AsyncClient, event_id: str) -> None:
        async with gate:
            for attempt in range(5):
                try:
                    status = (await http.post("/v1/events", json=lead(event_id))).status_code
                except httpx.TransportError:
                    status = 0
                if attempt == 0:
                    first[str(status)] += 1
                if status == 202:
                    acknowledged.add(event_id)
                    if during is not None:
                        during(len(acknowledged))
                    return
                await asyncio.sleep(0.2)

    async with browser(cluster) as http:
        await asyncio.gather(*(post(http, event_id) for event_id in ids))
    return acknowledged, first


def statuses(cluster: Cluster, ids: list[str]) -> Counter[str]:
    query = (
        sa.select(deliveries.c.status, sa.func.count())
        .join(events, events.c.id == deliveries.c.event_pk)
        .where(events.c.event_id.in_(ids))
        .group_by(deliveries.c.status)
    )
    with cluster.engine.connect() as conn:
        return Counter({str(status): int(n) for status, n in conn.execute(query)})


def attempts(cluster: Cluster, ids: list[str]) -> dict[str, int]:
    query = (
        sa.select(events.c.event_id, deliveries.c.attempts)
        .join(events, events.c.id == deliveries.c.event_pk)
        .where(events.c.event_id.in_(ids))
    )
    with cluster.engine.connect() as conn:
        return {str(event_id): int(n) for event_id, n in conn.execute(query)}


async def until(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.2)


def new_ids(prefix: str, n: int) -> list[str]:
    run = uuid.uuid4().hex[:8]
    return [f"{prefix}-{run}-{i:03d}" for i in range(n)]


async def test_a_visitor_keeps_one_cookie_and_one_visitor_id_whichever_node_answers(
    cluster: Cluster,
) -> None:
    before = [cluster.events_at(1), cluster.events_at(2)]
    ids = new_ids("cookie", 6)
    cookies = []
    async with browser(cluster) as http:
        for event_id in ids:  # one after another: HAProxy's round robin alternates the nodes
            answer = await http.post(
                "/v1/events", json=lead(event_id), headers={"X-Forwarded-For": "203.0.113.7"}
            )
            assert answer.status_code == 202, answer.text
            cookies.append(answer.cookies["fp_id"])
    answered = [cluster.events_at(1) - before[0], cluster.events_at(2) - before[1]]
    with cluster.engine.connect() as conn:
        rows = conn.execute(
            sa.select(events.c.visitor_id, events.c.context).where(events.c.event_id.in_(ids))
        ).all()

    assert answered[0] >= 1 and answered[1] >= 1 and sum(answered) == 6, answered
    assert len(set(cookies)) == 1  # re-issued by both nodes with the same value
    assert len(rows) == 6 and {row.visitor_id for row in rows} == {cookies[0].split(".")[0]}
    # Behind the trusted proxy: the address HAProxy saw, never the one the client wrote.
    assert {row.context.get("ip") for row in rows} == {CLIENT}


async def test_b_every_event_is_delivered_exactly_once_with_two_workers(cluster: Cluster) -> None:
    ids = new_ids("once", 200)
    acknowledged, _ = await send_all(cluster, ids)
    assert acknowledged == set(ids)
    await until(lambda: statuses(cluster, ids) == {"delivered": 200}, "all 200 delivered")
    counts = cluster.meta.counts()

    assert {event_id: counts[event_id] for event_id in ids} == dict.fromkeys(ids, 1)
    assert set(attempts(cluster, ids).values()) == {1}  # no work was taken by both workers


async def test_c_kill_9_of_a_node_and_a_worker_loses_no_acknowledged_event(
    cluster: Cluster,
) -> None:
    """Mid-stream (after 60 of 240 events are acknowledged), `kill -9` API node 1 and worker 1.

    Asserted: every event answered 202 is stored once and reaches Meta. An event whose delivery
    was claimed once (`attempts == 1`) reaches Meta exactly once; one reaches it twice only if
    the killed worker held its claim when it died (the claim ran out and the other worker
    claimed it again: `attempts == 2`), i.e. it was in a request in flight, re-sent with the same
    event id for Meta to deduplicate; never three times. Requests in flight at the killed API
    node are cut or answered 502: not acknowledged, so the client sends them again with the same
    event id, and they are stored once (`(source, event_id)` is unique).
    """
    ids = new_ids("kill", 240)
    killed = asyncio.Event()

    def kill_at_60(n: int) -> None:
        if n >= 60 and not killed.is_set():
            killed.set()
            cluster.kill_9("api1")
            cluster.kill_9("worker1")

    acknowledged, first_tries = await send_all(cluster, ids, during=kill_at_60)
    await until(lambda: statuses(cluster, ids) == {"delivered": 240}, "all 240 delivered", 60)
    counts = cluster.meta.counts()
    tries = attempts(cluster, ids)
    cluster.start_api(1)  # back for the other tests, and to show a node rejoins
    cluster.start_worker(1)
    cluster.wait_ready(cluster.node(1), "api1")
    cluster.wait_in_rotation()  # HAProxy's health checks take it back

    twice = {event_id for event_id in ids if counts[event_id] > 1}
    seen = f"first tries {dict(first_tries)}, claims {Counter(tries.values())}, twice {twice}"
    assert killed.is_set()
    assert acknowledged == set(ids), seen  # every event was acknowledged in the end
    assert len(tries) == 240, seen  # each stored once, with one delivery
    assert all(counts[event_id] >= 1 for event_id in ids), seen  # none lost
    assert all(counts[event_id] == 1 for event_id in ids if tries[event_id] == 1), seen
    assert all(counts[event_id] == 2 and tries[event_id] == 2 for event_id in twice), seen


async def test_d_failed_deliveries_are_sent_again_after_a_replay_asked_of_node_2(
    cluster: Cluster,
) -> None:
    ids = new_ids("replay", 20)
    cluster.meta.refusing.set()
    try:
        acknowledged, _ = await send_all(cluster, ids)
        await until(lambda: statuses(cluster, ids) == {"failed": 20}, "all 20 failed")
    finally:
        cluster.meta.refusing.clear()
    assert acknowledged == set(ids)
    assert set(ids) <= set(cluster.meta.refused)
    assert all(cluster.meta.counts()[event_id] == 0 for event_id in ids)

    answer = httpx.post(
        f"{cluster.node(2)}/v1/admin/replay",
        json={"destination": "meta"},
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["requeued"] >= 20
    await until(lambda: statuses(cluster, ids) == {"delivered": 20}, "all 20 re-sent")
    counts = cluster.meta.counts()
    assert {event_id: counts[event_id] for event_id in ids} == dict.fromkeys(ids, 1)
