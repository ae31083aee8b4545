"""The pieces of an end-to-end journey: the four platform fakes, browsers with their own cookie
jars, a server source, the admin API, the two deployments (SQLite with the worker inside the
app; PostgreSQL with wake-ups through Redis and a worker beside the app) and the TOML config the
real CLI reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
import sqlalchemy as sa

from firstparty.delivery import queue, worker
from firstparty.destinations import registry
from firstparty.settings import Settings
from firstparty.store import db
from firstparty.store.models import click_ids, deliveries, events, visitors
from tests import factories
from tests.conftest import BROWSER_KEY, SECRET, SERVER_KEY, AppClient, running_app, settings_for
from tests.delivery.outbox import eventually
from tests.fakes import ga4 as fake_ga4
from tests.fakes import google as fake_google
from tests.fakes import meta as fake_meta
from tests.fakes import tiktok as fake_tiktok

SITE = "https://www.example.test"
REDIS = os.environ.get("FIRSTPARTY_TEST_REDIS", "redis://127.0.0.1:6379/0")
ADMIN = {"Authorization": "Bearer admin-token-for-tests"}
LAPTOP_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
PHONE_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1"
)
CUSTOMER_ID = "1234567890"
LEAD_ACTION, PURCHASE_ACTION = "111111111", "222222222"
SETTLED = {"delivered", "failed", "skipped"}


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def whole_seconds_ago(seconds: float) -> datetime:
    return (datetime.now(UTC) - timedelta(seconds=seconds)).replace(microsecond=0)


def iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def epoch(when: datetime) -> int:
    return int(when.timestamp())


# ---------------------------------------------------------------- the platforms


class Platforms:
    """Meta, TikTok, Google (token + Data Manager) and GA4 fakes, each a real local server."""

    def __init__(self) -> None:
        self.meta = fake_meta.FakeMeta()
        self.tiktok = fake_tiktok.FakeTikTok()
        self.google = fake_google.FakeGoogle()
        self.ga4 = fake_ga4.FakeGA4()
        self.oauth_json = self.google.add_refresh_token(
            "fp-client.apps.googleusercontent.com", "fp-client-secret", "1//fp-refresh-token"
        )

    def __enter__(self) -> Self:
        for fake in (self.meta, self.tiktok, self.google, self.ga4):
            fake.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for fake in (self.meta, self.tiktok, self.google, self.ga4):
            fake.stop()

    def destinations(self, *, meta_token: str = fake_meta.ACCESS_TOKEN) -> list[dict[str, Any]]:
        """The four destinations on the fakes; page views go to all but Google."""
        return [
            factories.META_CAPI | {"access_token": meta_token, "api_base": self.meta.api_base},
            factories.TIKTOK_EVENTS | {"api_base": self.tiktok.api_base},
            {
                "name": "google",
                "type": "google_ads",
                "api": "data_manager",
                "customer_id": CUSTOMER_ID,
                "conversion_actions": {"Lead": LEAD_ACTION, "Purchase": PURCHASE_ACTION},
                "oauth": self.oauth_json,
                "api_base": self.google.url + "/v1",
                "token_url": self.google.url + "/token",
                # Ask Google's requestStatus at once (it is 30 minutes in production).
                "request_status_delay_seconds": 0.05,
                "request_status_deadline_seconds": 60,
            },
            factories.GA4_MP
            | {
                "measurement_id": self.ga4.measurement_id,
                "api_secret": self.ga4.api_secret,
                "api_base": self.ga4.url,
            },
        ]

    def meta_events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.meta.events if e["event_name"] == name]

    def tiktok_events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.tiktok.events if e["event"] == name]

    def google_events(self) -> list[dict[str, Any]]:
        """Every event of every ingest request Google received (repeats included)."""
        return [e for body in self.google.ingest_bodies() for e in body["events"]]

    def ga4_events(self, name: str) -> list[dict[str, Any]]:
        return [a for a in self.ga4.accepted if a["event"]["name"] == name]


# ---------------------------------------------------------------- deployments


@dataclass(frozen=True)
class Deployment:
    """Where the app keeps its work and how workers hear of it."""

    kind: str  # "sqlite" (worker inside the app) | "postgresql+redis" (worker beside it)
    database_url: str
    redis_url: str | None

    @property
    def delivery(self) -> dict[str, float]:
        # With Redis the poll is 30 s: delivery within the wait proves the wake-up went through
        # Redis. Retries fall due at once either way (the worker waits for the next due time).
        sweep = 30.0 if self.redis_url else 0.1
        return {
            "backoff_base_seconds": 0.01,
            "backoff_max_seconds": 0.05,
            "sweep_interval_seconds": sweep,
        }

    def settings(self, **config: Any) -> Settings:
        return settings_for(
            self.database_url, redis_url=self.redis_url, delivery=self.delivery, **config
        )


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[AppClient]:
    """The app and a delivery worker, as the settings deploy them."""
    if settings.redis_url is None:
        async with running_app(settings, run_worker=True) as app:
            yield app
        return
    async with running_app(settings, run_worker=False) as app:
        engine = db.create_engine(settings.database_url)
        waker = queue.make_queue(settings)
        beside = worker.Worker(
            settings=settings,
            engine=engine,
            adapters=registry.adapters(settings.destinations),
            queue=waker,
        )
        await beside.start()
        try:
            yield app
        finally:
            await beside.stop()
            await waker.close()
            engine.dispose()


# ---------------------------------------------------------------- clients


class Browser:
    """One browser: its own cookie jar, address and user agent, talking to the app in-process."""

    def __init__(self, app: AppClient, ip: str = "198.51.100.7", user_agent: str = LAPTOP_UA):
        transport = httpx.ASGITransport(app=app.app, client=(ip, 50000))
        self.http = httpx.AsyncClient(
            transport=transport,
            base_url="https://t.example.test",
            headers={"User-Agent": user_agent},
        )

    async def send(self, event: Mapping[str, Any]) -> dict[str, Any]:
        headers = {"X-Write-Key": BROWSER_KEY, "Origin": SITE}
        answer = await self.http.post("/v1/events", json=event, headers=headers)
        assert answer.status_code == 202, answer.text
        body: dict[str, Any] = answer.json()
        return body

    async def post(self, path: str, body: Mapping[str, Any]) -> httpx.Response:
        """A call from the site's page (the OTP endpoints): its key and origin."""
        headers = {"X-Write-Key": BROWSER_KEY, "Origin": SITE}
        return await self.http.post(path, json=body, headers=headers)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()


async def server_send(app: AppClient, event: Mapping[str, Any]) -> dict[str, Any]:
    """An event from the `crm` server source (no cookie jar of its own)."""
    transport = httpx.ASGITransport(app=app.app, client=("10.0.0.5", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="https://t.example.test") as http:
        answer = await http.post("/v1/events", json=event, headers={"X-Write-Key": SERVER_KEY})
    assert answer.status_code == 202, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def server_batch(app: AppClient, batch: list[Mapping[str, Any]]) -> None:
    """Events from the `crm` server source in one `/v1/batch`, every one stored."""
    transport = httpx.ASGITransport(app=app.app, client=("10.0.0.5", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="https://t.example.test") as http:
        body = {"events": list(batch)}
        answer = await http.post("/v1/batch", json=body, headers={"X-Write-Key": SERVER_KEY})
    assert answer.status_code in (200, 202), answer.text
    assert all(item["ok"] for item in answer.json()["results"]), answer.text


async def admin(app: AppClient, path: str, **params: str) -> Any:
    answer = await app.http.get(path, params=params, headers=ADMIN)
    assert answer.status_code == 200, answer.text
    return answer.json()


# ---------------------------------------------------------------- the database


def delivery_rows(engine: sa.Engine) -> list[Any]:
    with engine.connect() as conn:
        query = sa.select(deliveries, events.c.event_id).join(
            events, events.c.id == deliveries.c.event_pk
        )
        return list(conn.execute(query.order_by(deliveries.c.id)).mappings())


async def all_settled(engine: sa.Engine, count: int | None = None) -> None:
    """Wait until every delivery (at least `count` of them) is delivered, failed or skipped."""

    async def done() -> bool:
        found = await asyncio.to_thread(delivery_rows, engine)
        enough = len(found) >= (count or 1)
        return enough and all(r["status"] in SETTLED for r in found)

    await eventually(done, timeout=30)


def outcomes(engine: sa.Engine) -> dict[tuple[str, str], tuple[str, str | None]]:
    """(event_id, destination) -> (status, last_error)."""
    return {
        (r["event_id"], r["destination"]): (r["status"], r["last_error"])
        for r in delivery_rows(engine)
    }


def backdate_clicks(engine: sa.Engine, visitor_id: str, by: timedelta) -> None:
    """Move the first-seen times of a visitor's click ids back: it landed `by` earlier."""
    with engine.begin() as conn:
        query = sa.select(click_ids.c.id, click_ids.c.first_seen_at)
        for row in conn.execute(query.where(click_ids.c.visitor_id == visitor_id)).all():
            conn.execute(
                sa.update(click_ids)
                .where(click_ids.c.id == row.id)
                .values(first_seen_at=row.first_seen_at - by)
            )


def backdate_visitor(engine: sa.Engine, visitor_id: str, by: timedelta) -> None:
    """Move a visitor's stored past back in time, as if it had landed `by` earlier.

    The collector takes no clock (browser timestamps are clamped to server time), so a landing
    days ago is made by shifting what the landing stored: the visitor, its click ids (with
    their first-seen times) and its events. Call it once the events' deliveries are settled.
    """
    with engine.begin() as conn:
        for table, columns in (
            (visitors, ("first_seen_at", "last_seen_at")),
            (click_ids, ("first_seen_at",)),
            (events, ("occurred_at", "received_at")),
        ):
            key = table.c.id if table is visitors else table.c.visitor_id
            stored = list(conn.execute(sa.select(table).where(key == visitor_id)).mappings())
            for row in stored:
                shifted = {c: row[c] - by for c in columns}
                conn.execute(sa.update(table).where(table.c.id == row["id"]).values(**shifted))


# ---------------------------------------------------------------- the config file and the CLI


SECRET_KEYS = ("access_token", "oauth", "api_secret", "secret", "write_key")


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def write_config(path: Path, settings: Settings, raw: Mapping[str, Any]) -> dict[str, str]:
    """Write `raw` (sources, destinations, delivery) as an operator would: every secret an
    `env:` reference. Returns the environment for the CLI and workers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIRSTPARTY_")}
    env.update(
        FIRSTPARTY_DATABASE_URL=settings.database_url,
        FIRSTPARTY_SECRET_KEY=SECRET,
        FIRSTPARTY_CONFIG=str(path),
        PYTHONPATH=str(Path(__file__).resolve().parents[2]),
    )
    if settings.redis_url:
        env["FIRSTPARTY_REDIS_URL"] = settings.redis_url
    lines: list[str] = []
    for section, value in raw.items():
        tables = value if isinstance(value, list) else [value]
        for table in tables:
            lines.append(f"[[{section}]]" if isinstance(value, list) else f"[{section}]")
            for key, item in table.items():
                if key in SECRET_KEYS:
                    name = f"{table.get('name', section)}_{key}".upper().replace("-", "_")
                    env[name] = str(item)
                    item = f"env:{name}"
                lines.append(f"{key} = {_toml(item)}")
            lines.append("")
    path.write_text("\n".join(lines))
    return env


def cli(env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`firstparty ...` as a real process."""
    return subprocess.run(
        [sys.executable, "-m", "firstparty.cli", *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@contextlib.contextmanager
def worker_process(env: Mapping[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m firstparty.delivery.worker`, stopped with SIGTERM at the end."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "firstparty.delivery.worker"],
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
