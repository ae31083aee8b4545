"""The OTP endpoints follow the browser rules of /v1/events (issue 12), on every engine: a write
key, the browser source's origins, CORS answers and preflights the site's pages can read; and a
server source (a backend verifying phones) called without an origin."""

from __future__ import annotations

import pytest

from firstparty.store.models import otp_codes, visitors
from tests.conftest import BROWSER_KEY, SERVER_KEY
from tests.fakes import twilio as fake_twilio
from tests.identity.conftest import SITE, otp_app

PHONE = "+16175550100"
PATHS = ["/v1/otp/start", "/v1/otp/verify"]
BODIES = {"/v1/otp/start": {"phone": PHONE}, "/v1/otp/verify": {"phone": PHONE, "code": "123456"}}


@pytest.mark.parametrize(
    ("headers", "status", "error"),
    [
        ({"X-Write-Key": ""}, 401, "missing write key (X-Write-Key header or ?key=)"),
        ({"X-Write-Key": "wk_nobody_has_this"}, 401, "unknown write key"),
        ({"Origin": "https://evil.example"}, 403, "origin https://evil.example is not allowed"),
    ],
)
async def test_a_call_without_a_key_of_the_site_is_refused(
    database_url: str,
    twilio: fake_twilio.FakeTwilio,
    headers: dict[str, str],
    status: int,
    error: str,
) -> None:
    async with otp_app(database_url, twilio) as app:
        device = app.device(**headers)
        answers = [await device.post(path, json=BODIES[path]) for path in PATHS]

        for answer in answers:
            assert answer.status_code == status and answer.json()["error"].startswith(error)
            assert "access-control-allow-origin" not in answer.headers
        assert twilio.sms == [] and app.rows(otp_codes) == []


async def test_the_sites_pages_read_every_answer(
    database_url: str, twilio: fake_twilio.FakeTwilio
) -> None:
    """Allowed origin: CORS on a 202, a 200, a 422 and a 429 (whose Retry-After is exposed)."""
    async with otp_app(database_url, twilio, sends_per_phone_per_hour=1) as app:
        page = app.device()
        sent = await app.start(page, PHONE)
        again = await app.start(page, PHONE)
        bad = await app.start(page, "12")
        verified = await app.verify(page, PHONE, twilio.last_code(PHONE))

        assert [a.status_code for a in (sent, again, bad, verified)] == [202, 429, 422, 200]
        for answer in (sent, again, bad, verified):
            assert answer.headers["access-control-allow-origin"] == SITE
            assert answer.headers["access-control-allow-credentials"] == "true"
            assert answer.headers["vary"] == "Origin"
            assert "fp_id=" in answer.headers["set-cookie"]
        assert again.headers["access-control-expose-headers"] == "Retry-After"


async def test_the_key_may_be_in_the_query(
    database_url: str, twilio: fake_twilio.FakeTwilio
) -> None:
    async with otp_app(database_url, twilio) as app:
        page = app.device(**{"X-Write-Key": ""})
        answer = await page.post(f"/v1/otp/start?key={BROWSER_KEY}", json={"phone": PHONE})

        assert answer.status_code == 202
        assert answer.headers["access-control-allow-origin"] == SITE


async def test_the_rate_limit_per_address_of_the_key_holds_and_is_counted(
    database_url: str, twilio: fake_twilio.FakeTwilio
) -> None:
    collect = {"per_address_per_second": 0.001, "per_address_burst": 1}
    async with otp_app(database_url, twilio, collect=collect) as app:
        page = app.device("192.0.2.66")
        first = await app.start(page, PHONE)
        second = await app.verify(page, PHONE, twilio.last_code(PHONE))

        assert first.status_code == 202
        assert second.status_code == 429 and int(second.headers["Retry-After"]) > 900
        assert second.headers["access-control-allow-origin"] == SITE
        assert (await app.refused())["rate_limit"] == 1


@pytest.mark.parametrize("path", PATHS)
async def test_preflight_like_v1_events(
    database_url: str, twilio: fake_twilio.FakeTwilio, path: str
) -> None:
    async with otp_app(database_url, twilio) as app:
        device = app.device()
        asked = {"Access-Control-Request-Method": "POST"}
        site = await device.options(path, headers={"Origin": SITE, **asked})
        keyed = await device.options(f"{path}?key={BROWSER_KEY}", headers={"Origin": SITE, **asked})
        evil = await device.options(path, headers={"Origin": "https://evil.example", **asked})
        events = await device.options("/v1/events", headers={"Origin": SITE, **asked})

        for allowed in (site, keyed):
            assert allowed.status_code == 204
            assert allowed.headers["access-control-allow-origin"] == SITE
            assert allowed.headers["access-control-allow-credentials"] == "true"
            assert "X-Write-Key" in allowed.headers["access-control-allow-headers"]
            assert "POST" in allowed.headers["access-control-allow-methods"]
            assert allowed.headers["vary"] == "Origin"
            assert dict(allowed.headers) == dict(events.headers)
        assert evil.status_code == 403 and "access-control-allow-origin" not in evil.headers


async def test_a_browser_key_without_an_origin_is_still_a_visitor(
    database_url: str, twilio: fake_twilio.FakeTwilio
) -> None:
    """curl with the public key: no CORS, and the limits per address and visitor hold."""
    async with otp_app(database_url, twilio, sends_per_ip_per_hour=2) as app:
        script = app.device("192.0.2.66", Origin="")
        answers = [await app.start(script, f"+1617555{n:04d}") for n in range(300, 303)]

        assert [a.status_code for a in answers] == [202, 202, 429]
        assert "access-control-allow-origin" not in answers[0].headers
        assert all(r["ip"] and r["visitor_id"] for r in app.rows(otp_codes))


async def test_a_server_source_verifies_phones_for_its_users(
    database_url: str, twilio: fake_twilio.FakeTwilio
) -> None:
    """A backend at one address: not held by the limits per address (its users are many), held by
    those per number and the budgets; no visitor unless it forwards the visitor's cookie."""
    overrides = {"sends_per_ip_per_hour": 2, "phones_per_ip_per_day": 2}
    async with otp_app(database_url, twilio, sends_per_phone_per_hour=2, **overrides) as app:
        backend = app.device("10.0.0.5", **{"X-Write-Key": SERVER_KEY, "Origin": ""})
        numbers = [f"+1617555{n:04d}" for n in range(400, 405)]
        sent = [await app.start(backend, n) for n in numbers]
        per_number = [await app.start(backend, numbers[0]) for _ in range(2)]
        verified = await app.verify(backend, numbers[1], twilio.last_code(numbers[1]))
        browser = app.device()
        await app.start(browser, numbers[2])
        backend.cookies = browser.cookies  # a backend forwarding its visitor's fp_id
        linked = await app.verify(backend, numbers[2], twilio.last_code(numbers[2]))

        assert [a.status_code for a in sent] == [202] * 5
        assert [a.status_code for a in per_number] == [202, 429]
        assert verified.status_code == 200 and verified.json()["user_id"].startswith("u_")
        assert linked.status_code == 200
        for answer in (*sent, verified, linked):
            assert "set-cookie" not in answer.headers
            assert "access-control-allow-origin" not in answer.headers
        [visitor] = app.rows(visitors)  # the browser's, linked by the backend's call
        assert visitor["user_id"] == linked.json()["user_id"]
        by_backend = [r for r in app.rows(otp_codes) if r["ip"] is None]
        assert len(by_backend) == 6 and all(r["visitor_id"] is None for r in by_backend)
