"""A public browser key cannot silence real visitors: limits per client address, under the key's.

Through the real app: each client address is a client of its own on the same app (as a visitor
behind their own connection), or an address the trusted proxy appended to X-Forwarded-For.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from firstparty import cli
from firstparty.collect import sources
from firstparty.settings import Settings
from firstparty.store import db
from firstparty.store import models as m
from tests.conftest import BROWSER_KEY, SECRET, SERVER_KEY, AppClient, base_config, running_app

SITE = "https://www.example.test"
PAGE = {"type": "page", "url": SITE}
# Refill so slow that a test never sees a token come back: only the burst counts.
NEVER = 0.001


@contextlib.asynccontextmanager
async def visitor(app: AppClient, address: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the same running app whose connection comes from `address`."""
    transport = httpx.ASGITransport(app=app.app, client=(address, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="https://t.example.test") as c:
        yield c


async def send(client: httpx.AsyncClient, key: str = BROWSER_KEY, **headers: str) -> Any:
    return await client.post("/v1/events", json=PAGE, headers={"X-Write-Key": key, **headers})


def limited(database_url: str, **collect: Any) -> Settings:
    return Settings.model_validate(base_config(database_url, collect=collect))


async def test_one_saturated_address_is_refused_while_others_with_the_key_get_202(
    sqlite_url: str,
) -> None:
    settings = limited(sqlite_url, per_address_per_second=NEVER, per_address_burst=3)
    async with (
        running_app(settings) as app,
        visitor(app, "203.0.113.66") as abuser,
        visitor(app, "192.0.2.10") as real,
    ):
        codes = [(await send(abuser)).status_code for _ in range(5)]
        assert codes == [202, 202, 202, 429, 429]
        refused = await send(abuser)
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        assert "address" in refused.json()["error"]
        assert [(await send(real)).status_code for _ in range(3)] == [202, 202, 202]
        # A server key is secret and sends from few machines: not limited per address.
        assert (await send(abuser, SERVER_KEY)).status_code == 202
        assert len(app.rows(m.events)) == 3 + 3 + 1


async def test_the_page_can_read_the_refusal_and_when_to_retry(sqlite_url: str) -> None:
    settings = limited(sqlite_url, per_address_per_second=NEVER, per_address_burst=1)
    async with running_app(settings) as app:
        assert (await send(app.http, Origin=SITE)).status_code == 202
        refused = await send(app.http, Origin=SITE)
        assert refused.status_code == 429
        assert refused.headers["access-control-allow-origin"] == SITE
        assert refused.headers["access-control-allow-credentials"] == "true"
        assert refused.headers["access-control-expose-headers"] == "Retry-After"
        elsewhere = await send(app.http, Origin="https://evil.test")
        assert elsewhere.status_code == 403
        assert "access-control-allow-origin" not in elsewhere.headers


async def test_the_limit_holds_for_the_address_the_trusted_proxy_saw(sqlite_url: str) -> None:
    settings = limited(
        sqlite_url, trust_forwarded_for=True, per_address_per_second=NEVER, per_address_burst=2
    )
    async with running_app(settings) as app, visitor(app, "10.0.0.1") as proxy:

        async def through_proxy(written: str, seen: str) -> int:
            # The client writes the left of the header, our proxy appends the address it saw.
            answer = await send(proxy, **{"X-Forwarded-For": f"{written}, {seen}"})
            return int(answer.status_code)

        spoofs = [f"6.6.6.{i}" for i in range(4)]
        assert [await through_proxy(s, "203.0.113.66") for s in spoofs] == [202, 202, 429, 429]
        assert await through_proxy("6.6.6.6", "192.0.2.10") == 202


async def test_ipv6_addresses_share_the_limit_of_their_64(sqlite_url: str) -> None:
    settings = limited(sqlite_url, per_address_per_second=NEVER, per_address_burst=2)
    async with (
        running_app(settings) as app,
        visitor(app, "2001:db8:1:2::1") as one,
        visitor(app, "2001:db8:1:2:ffff::9") as same_network,
        visitor(app, "2001:db8:1:3::1") as other_network,
    ):
        assert (await send(one)).status_code == 202
        assert (await send(same_network)).status_code == 202
        assert (await send(one)).status_code == 429  # a /64 is one subscriber's network
        assert (await send(other_network)).status_code == 202


async def test_the_key_is_a_ceiling_over_all_addresses(sqlite_url: str) -> None:
    config = base_config(sqlite_url)
    config["sources"][0].update(rate_limit_per_second=NEVER, rate_limit_burst=4)
    async with (
        running_app(Settings.model_validate(config)) as app,
        visitor(app, "192.0.2.1") as first,
        visitor(app, "192.0.2.2") as second,
        visitor(app, "192.0.2.3") as third,
    ):
        codes = [(await send(c)).status_code for c in (first, second, first, second)]
        assert codes == [202, 202, 202, 202]
        refused = await send(third)
        assert refused.status_code == 429 and "write key" in refused.json()["error"]
        assert int(refused.headers["retry-after"]) >= 1


async def test_segment_answers_share_the_limits(sqlite_url: str) -> None:
    settings = limited(sqlite_url, per_address_per_second=NEVER, per_address_burst=1)
    body = {"type": "track", "event": "Signed Up", "anonymousId": "a-1", "writeKey": BROWSER_KEY}
    async with running_app(settings) as app, visitor(app, "203.0.113.66") as abuser:
        origin = {"Origin": SITE}
        assert (
            await abuser.post("/segment/v1/track", json=body, headers=origin)
        ).status_code == 200
        refused = await abuser.post("/segment/v1/track", json=body, headers=origin)
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert refused.headers["access-control-allow-origin"] == SITE


def test_the_addresses_remembered_are_bounded_and_a_forgotten_one_starts_afresh() -> None:
    limits = sources.AddressLimits(per_second=NEVER, burst=1, tracked=3)
    assert limits.take("192.0.2.1") == 0.0
    assert limits.take("192.0.2.1") > 0  # its one request is spent
    for i in range(2, 1000):
        limits.take(f"192.0.2.{i % 250}.{i}")
        assert len(limits) <= 3
    assert limits.take("192.0.2.1") == 0.0  # pushed out long ago: a fresh allowance


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("2001:db8:1:2:3:4:5:6", bytes.fromhex("20010db800010002")),
        ("2001:db8:1:2::", bytes.fromhex("20010db800010002")),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("fe80::1%eth0", "fe80::1%eth0"),
    ],
)
def test_address_key(address: str, key: str | bytes) -> None:
    assert sources.address_key(address) == key


def _create(*flags: str, capsys: pytest.CaptureFixture[str]) -> str:
    """`firstparty sources create ...` in-process; the write key it prints."""
    assert cli.main(["sources", "create", *flags]) == 0
    return capsys.readouterr().out.strip().splitlines()[-1]


async def test_sources_created_with_the_cli_keep_their_limits_or_take_the_defaults(
    database_url: str,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FIRSTPARTY_CONFIG", raising=False)
    monkeypatch.setenv("FIRSTPARTY_DATABASE_URL", database_url)
    monkeypatch.setenv("FIRSTPARTY_SECRET_KEY", SECRET)
    browser = ["--kind", "browser", "--origin", SITE]
    own = _create("own", *browser, "--rate-limit", "0.001", "--burst", "2", capsys=capsys)
    plain = _create("plain", *browser, capsys=capsys)
    assert cli.main(["sources", "create", "bad", *browser, "--rate-limit", "0"]) != 0
    engine = db.create_engine(database_url, poolclass=sa.NullPool)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(m.sources)).all()
    engine.dispose()
    stored = {row.name: (row.rate_limit_per_second, row.rate_limit_burst) for row in rows}
    assert stored == {"own": (0.001, 2), "plain": (None, None)}

    # The defaults of every source, from the file or the database, are [collect]'s.
    settings = limited(database_url, rate_limit_per_second=NEVER, rate_limit_burst=3)
    async with running_app(settings) as app:
        for key, allowed in ((own, 2), (plain, 3), (BROWSER_KEY, 3)):
            codes = [(await send(app.http, key)).status_code for _ in range(allowed + 1)]
            assert codes == [202] * allowed + [429], key
