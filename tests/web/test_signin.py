"""Admin sign-in against abuse, through the real app on every engine: growing delays per client
address kept in the database (the form and the admin API), sign-out ended in every process,
`Secure` cookies behind https, and the admin token's minimum length."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from firstparty import metrics
from firstparty import settings as settings_mod
from firstparty.errors import ConfigError
from firstparty.privacy import retention
from firstparty.settings import RetentionSettings
from firstparty.store import models as m
from firstparty.web import admin, sessions, signin
from tests.conftest import AppClient, running_app, settings_for
from tests.web.test_admin_ui import TOKEN, csrf_in, sign_in, signed_in_page
from tests.web.test_reading import writer

ADMIN_API = "/v1/admin/events"
PEER = "198.51.100.7"  # running_app's client address


def client_at(app: AppClient, address: str, base_url: str = "https://t.example.test") -> Any:
    transport = httpx.ASGITransport(app=app.app, client=(address, 50000))
    return httpx.AsyncClient(transport=transport, base_url=base_url)


def age_failures(app: AppClient, seconds: float) -> None:
    """Moves every recorded failure back in time, as waiting would (no sleeping in tests)."""
    table = m.admin_login_failures
    with app.engine.begin() as conn:
        for row in conn.execute(sa.select(table.c.id, table.c.created_at)).all():
            earlier = row.created_at - timedelta(seconds=seconds)
            conn.execute(sa.update(table).where(table.c.id == row.id).values(created_at=earlier))


def refused_count(surface: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "firstparty_admin_signin_refused_total", {"surface": surface}
    )
    return value or 0.0


@pytest.fixture
async def app(database_url: str) -> AsyncIterator[AppClient]:
    async with running_app(settings_for(database_url)) as client:
        yield client


# ---------------------------------------------------------------- growing delays


def test_delays_grow_from_two_seconds_to_a_quarter_of_an_hour() -> None:
    free = signin.FREE_FAILURES
    assert [signin.delay_after(n) for n in range(free)] == [0] * free
    assert [signin.delay_after(free + k) for k in range(5)] == [2, 4, 8, 16, 32]
    assert signin.delay_after(free + 9) == 900 and signin.delay_after(10**6) == 900


async def test_the_login_form_pauses_an_address_after_five_wrong_tokens(app: AppClient) -> None:
    http = app.http
    for _ in range(signin.FREE_FAILURES):
        assert (await sign_in(http, "wrong-admin-token-000")).status_code == 401
    before = refused_count("ui")
    paused = await sign_in(http, "wrong-admin-token-000")
    assert paused.status_code == 429 and paused.headers["retry-after"] == "2"
    assert "Too many wrong tokens" in paused.text and "Try again in 2 seconds" in paused.text
    assert csrf_in(paused.text), "the form is shown again"
    # While the address waits even the right token is refused: a guess learns nothing.
    assert (await sign_in(http)).status_code == 429
    assert refused_count("ui") == before + 2

    # The address is stored as a keyed hash, never as it is; refused tries are not counted.
    rows = app.rows(m.admin_login_failures)
    assert len(rows) == signin.FREE_FAILURES
    secret = app.settings.secret_key.get_secret_value()
    assert {r["address"] for r in rows} == {signin.address_key(secret, PEER)}
    assert all(PEER not in r["address"] for r in rows)

    # Another address is not held back by this one.
    async with client_at(app, "203.0.113.9") as other:
        assert (await sign_in(other, "wrong-admin-token-000")).status_code == 401

    age_failures(app, 2)  # the wait is over: one more wrong try, then a longer wait
    assert (await sign_in(http, "wrong-admin-token-000")).status_code == 401
    again = await sign_in(http)
    assert again.status_code == 429 and again.headers["retry-after"] == "4"

    age_failures(app, 4)
    assert (await sign_in(http)).status_code == 303, "the right token after the wait"
    secret_key = signin.address_key(secret, PEER)
    assert all(r["address"] != secret_key for r in app.rows(m.admin_login_failures))


async def test_the_admin_api_pauses_wrong_bearer_tokens_too(app: AppClient) -> None:
    wrong = {"Authorization": "Bearer wrong-admin-token-000"}
    right = {"Authorization": f"Bearer {TOKEN}"}
    for _ in range(10):  # no token at all is not a guess
        assert (await app.http.get(ADMIN_API)).status_code == 401
    for _ in range(signin.FREE_FAILURES):
        assert (await app.http.get(ADMIN_API, headers=wrong)).status_code == 401
    before = refused_count("api")
    paused = await app.http.get(ADMIN_API, headers=wrong)
    assert paused.status_code == 429 and paused.headers["retry-after"] == "2"
    assert "retry in 2 s" in paused.json()["error"]
    assert (await app.http.get(ADMIN_API, headers=right)).status_code == 429
    assert refused_count("api") == before + 2
    age_failures(app, 2)
    assert (await app.http.get(ADMIN_API, headers=right)).status_code == 200
    assert app.rows(m.admin_login_failures) == [], "a success clears the address"


async def test_a_right_token_from_a_clean_address_writes_nothing(
    sqlite_client: AppClient, sqlite_url: str
) -> None:
    """No failure recorded for the address: a right bearer token goes through without a write,
    so on SQLite it answers while ingest holds the write lock (it queued for it three times)."""
    right = {"Authorization": f"Bearer {TOKEN}"}
    with writer(sqlite_url):
        answer = await asyncio.wait_for(sqlite_client.http.get(ADMIN_API, headers=right), 10)
    assert answer.status_code == 200
    assert sqlite_client.rows(m.admin_login_failures) == []


async def test_the_pause_holds_across_processes(database_url: str) -> None:
    """Two app instances (as two server processes) share the count through the database."""
    settings = settings_for(database_url)
    wrong = {"Authorization": "Bearer wrong-admin-token-000"}
    async with running_app(settings) as first, running_app(settings) as second:
        for i in range(signin.FREE_FAILURES):
            instance = (first, second)[i % 2]
            assert (await instance.http.get(ADMIN_API, headers=wrong)).status_code == 401
        assert (await second.http.get(ADMIN_API, headers=wrong)).status_code == 429
        assert (await sign_in(first.http, "wrong-admin-token-000")).status_code == 429


async def test_a_burst_of_concurrent_guesses_gets_no_more_than_the_free_tries(
    app: AppClient,
) -> None:
    wrong = {"Authorization": "Bearer wrong-admin-token-000"}
    answers = await asyncio.gather(*(app.http.get(ADMIN_API, headers=wrong) for _ in range(20)))
    codes = [a.status_code for a in answers]
    assert set(codes) == {401, 429}
    # Each try is recorded before it is judged, so concurrent tries see each other.
    assert codes.count(401) <= signin.FREE_FAILURES + 1, codes


async def test_behind_a_proxy_the_address_is_the_one_the_proxy_saw(database_url: str) -> None:
    """A client writing its own X-Forwarded-For entries does not get fresh addresses."""
    proxied = settings_for(database_url, collect={"trust_forwarded_for": True})
    async with running_app(proxied) as app:
        wrong = "wrong-admin-token-000"
        for i in range(signin.FREE_FAILURES):
            spoofed = {"X-Forwarded-For": f"10.0.0.{i}, 192.0.2.50"}
            r = await app.http.get(
                ADMIN_API, headers={**spoofed, "Authorization": f"Bearer {wrong}"}
            )
            assert r.status_code == 401
        spoofed = {"X-Forwarded-For": "10.9.9.9, 192.0.2.50", "Authorization": f"Bearer {wrong}"}
        assert (await app.http.get(ADMIN_API, headers=spoofed)).status_code == 429
        elsewhere = {"X-Forwarded-For": "192.0.2.51", "Authorization": f"Bearer {wrong}"}
        assert (await app.http.get(ADMIN_API, headers=elsewhere)).status_code == 401


# ---------------------------------------------------------------- sign-out


async def test_sign_out_ends_the_session_in_every_process(database_url: str) -> None:
    settings = settings_for(database_url)
    async with running_app(settings) as first, running_app(settings) as second:
        page = await signed_in_page(first.http)
        value = first.http.cookies[admin.SESSION_COOKIE]
        stolen = {"Cookie": f"{admin.SESSION_COOKIE}={value}"}
        assert (await second.http.get("/admin/", headers=stolen)).status_code == 200

        out = await first.http.post("/admin/logout", data={"csrf": csrf_in(page)})
        assert out.status_code == 303 and out.headers["location"] == "/admin/login"
        for app in (first, second):  # a copy of the cookie is refused everywhere
            async with client_at(app, PEER) as copy:
                assert (await copy.get("/admin/", headers=stolen)).status_code == 303
                login = await copy.get("/admin/login", headers=stolen)
                assert login.status_code == 200, "the sign-in form, not a redirect loop"

        [row] = first.rows(m.admin_revocations)
        expiry = int(value.split(".")[1])
        assert row["nonce"] == value.split(".")[0]
        assert row["expires_at"] == datetime.fromtimestamp(expiry, UTC)
        # A new sign-in is a new session.
        assert (await signed_in_page(first.http)).count("Sign out") >= 1


async def test_prune_removes_expired_revocations_and_old_failures(app: AppClient) -> None:
    page = await signed_in_page(app.http)
    await app.http.post("/admin/logout", data={"csrf": csrf_in(page)})
    await sign_in(app.http, "wrong-admin-token-000")
    keep = RetentionSettings(events_days=None, tracks_days=None, otp_days=None)
    assert retention.prune(app.engine, keep) == {
        "admin_login_failures": 0,
        "admin_revocations": 0,
    }
    later = datetime.now(UTC) + timedelta(seconds=sessions.SESSION_SECONDS + 60)
    assert retention.prune(app.engine, keep, now=later + signin.WINDOW) == {
        "admin_login_failures": 1,
        "admin_revocations": 1,
    }
    assert app.rows(m.admin_revocations) == [] and app.rows(m.admin_login_failures) == []


# ---------------------------------------------------------------- Secure behind https


async def sign_in_over_http(http: httpx.AsyncClient) -> httpx.Response:
    """Sign in where the client sees plain http: a Secure login cookie is sent back by hand, as
    the browser (on https) would."""
    form = await http.get("/admin/login")
    seed = form.cookies[admin.LOGIN_COOKIE]
    http.cookies.clear()
    cookie = {"Cookie": f"{admin.LOGIN_COOKIE}={seed}"}
    data = {"csrf": csrf_in(form.text), "token": TOKEN}
    return await http.post("/admin/login", data=data, headers=cookie)


def _session_cookie(response: httpx.Response) -> str:
    [cookie] = [c for c in response.headers.get_list("set-cookie") if c.startswith("fp_admin=")]
    return cookie.lower()


@contextlib.asynccontextmanager
async def plain_http(settings: settings_mod.Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app reached over plain http, as behind a TLS-terminating proxy."""
    async with running_app(settings) as app, client_at(app, PEER, "http://t.example.test") as c:
        yield c


async def test_cookie_is_secure_when_the_public_url_is_https(sqlite_url: str) -> None:
    async with plain_http(settings_for(sqlite_url, public_url="https://t.example.test")) as http:
        assert "; secure" in _session_cookie(await sign_in_over_http(http))


async def test_cookie_is_secure_when_a_trusted_proxy_says_https(sqlite_url: str) -> None:
    trusted = settings_for(sqlite_url, collect={"trust_forwarded_for": True})
    async with plain_http(trusted) as http:
        http.headers["X-Forwarded-Proto"] = "https"
        assert "; secure" in _session_cookie(await sign_in_over_http(http))
    # Not trusted: the header is anyone's, and the request itself is plain http.
    async with plain_http(settings_for(sqlite_url)) as http:
        http.headers["X-Forwarded-Proto"] = "https"
        assert "secure" not in _session_cookie(await sign_in_over_http(http))


# ---------------------------------------------------------------- start-up checks


@pytest.mark.parametrize("token", ["short-token", "x" * 15, "changeme"])
def test_a_short_or_placeholder_admin_token_stops_the_start(sqlite_url: str, token: str) -> None:
    env = {"FIRSTPARTY_DATABASE_URL": sqlite_url, "FIRSTPARTY_ADMIN_TOKEN": token}
    with pytest.raises(ConfigError, match="admin_token must be at least 16"):
        settings_mod.load(env)
    assert settings_mod.load({**env, "FIRSTPARTY_ADMIN_TOKEN": "x" * 16}).admin_token


@pytest.mark.parametrize(
    "url", ["t.example.com", "https://t.example.com/path", "javascript:alert(1)", "https://"]
)
def test_public_url_must_be_an_origin(sqlite_url: str, url: str, tmp_path: Any) -> None:
    config = tmp_path / "firstparty.toml"
    config.write_text(f'public_url = "{url}"\n')
    with pytest.raises(ConfigError, match="public_url"):
        settings_mod.load({"FIRSTPARTY_DATABASE_URL": sqlite_url}, config_path=str(config))
    config.write_text('public_url = "https://t.example.com/"\n')
    loaded = settings_mod.load({"FIRSTPARTY_DATABASE_URL": sqlite_url}, config_path=str(config))
    assert loaded.public_url == "https://t.example.com"
