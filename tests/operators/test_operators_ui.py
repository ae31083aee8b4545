"""Issue 15, operators: accounts made with the CLI (its entry point), signing in with email and
password, growing delays per address and per account, the viewer refused every change (403,
nothing changed), the operator's replay, the break-glass token, the audit log of every action
and its page, sessions ended by disabling, a new role or a new password. Through the real app on
SQLite and PostgreSQL."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from starlette.routing import Route

from firstparty import cli as cli_main
from firstparty.collect import sources
from firstparty.operators import accounts, audit
from firstparty.operators.accounts import Role
from firstparty.store import db
from firstparty.store import models as m
from firstparty.web import admin, signin
from tests.conftest import SECRET, AppClient, make_database, running_app, settings_for
from tests.delivery.outbox import add_events, fake_destination, set_status
from tests.web.test_admin_ui import TOKEN, csrf_in, sign_in, signed_in_page
from tests.web.test_signin import age_failures

PASSWORD = "correct horse battery staple"
OPERATOR = "olga@example.test"
VIEWER = "victor@example.test"
FAKE = fake_destination("http://127.0.0.1:9")  # never called: the worker is off


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from make_database(str(request.param), tmp_path, migrated=True)


@pytest.fixture
async def app(url: str) -> AsyncIterator[AppClient]:
    async with running_app(settings_for(url, destinations=[FAKE])) as client:
        yield client


def cli(url: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`firstparty ...` as a person runs it, on this database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIRSTPARTY_")}
    env.update(FIRSTPARTY_DATABASE_URL=url, FIRSTPARTY_SECRET_KEY=SECRET)
    return subprocess.run(
        [sys.executable, "-m", "firstparty.cli", *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def make(app: AppClient, email: str, role: Role) -> None:
    accounts.create(app.engine, email=email, password=PASSWORD, role=role, actor=audit.CLI)


def client(app: AppClient, address: str = "198.51.100.20") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app.app, client=(address, 50000))
    return httpx.AsyncClient(transport=transport, base_url="https://t.example.test")


async def sign_in_as(
    http: httpx.AsyncClient, email: str, password: str = PASSWORD
) -> httpx.Response:
    form = await http.get("/admin/login")
    assert form.status_code == 200
    data = {"csrf": csrf_in(form.text), "email": email, "password": password}
    return await http.post("/admin/login", data=data)


def audit_rows(app: AppClient) -> list[tuple[str, str, str]]:
    """(actor, action, subject) of every audit row, oldest first."""
    with app.engine.connect() as conn:
        query = sa.select(m.audit_log).order_by(m.audit_log.c.id)
        return [(r.actor, r.action, r.subject) for r in conn.execute(query)]


def as_if_just_now(app: AppClient) -> None:
    """Moves the recorded failures so the latest is now: on this busy machine argon2 may take
    longer than the 2 s pause itself, which a quick guesser does not give it."""
    with app.engine.connect() as conn:
        latest = conn.execute(sa.select(sa.func.max(m.admin_login_failures.c.created_at))).scalar()
    assert latest is not None
    age_failures(app, -(datetime.now(UTC) - latest.replace(tzinfo=UTC)).total_seconds())


def fail_all(app: AppClient) -> None:
    with app.engine.begin() as conn:
        set_status(conn, "failed", attempts=5)


def snapshot(app: AppClient) -> dict[str, list[Any]]:
    """Every table a change could touch (the audit log aside)."""
    tables = (m.deliveries, m.sources, m.destinations, m.replays, m.operators, m.funnel_schedule)
    with app.engine.connect() as conn:
        return {t.name: sorted(map(tuple, conn.execute(sa.select(t))), key=str) for t in tables}


# ---------------------------------------------------------------- the CLI


def run_main(
    url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *args: str,
    stdin: str = "",
) -> tuple[int, str, str]:
    """`firstparty ...` in this process (argparse, the error boundary, the real database): the
    exit code, stdout and stderr. The entry point itself is run by the tests below."""
    monkeypatch.setenv("FIRSTPARTY_DATABASE_URL", url)
    monkeypatch.setenv("FIRSTPARTY_SECRET_KEY", SECRET)
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = cli_main.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_cli_refuses_and_changes_accounts(
    url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def run(*args: str, stdin: str = "") -> tuple[int, str, str]:
        return run_main(url, monkeypatch, capsys, *args, stdin=stdin)

    create = ("operators", "create")
    made = run(
        *create,
        "Olga@Example.TEST",
        "--role",
        "operator",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert made[0] == 0 and "created operator olga@example.test" in made[1]
    assert run(
        *create, "olga@example.test", "--role", "viewer", "--password-stdin", stdin=PASSWORD + "\n"
    ) == (2, "", "firstparty: an operator 'olga@example.test' exists already\n")
    weak = run(*create, "v@example.test", "--role", "viewer", "--password-stdin", stdin="short\n")
    assert weak == (
        2,
        "",
        "firstparty: the password is too short: use at least 12 characters; nothing changed\n",
    )
    common = run(
        *create, "v@example.test", "--role", "viewer", "--password-stdin", stdin="password1234\n"
    )
    assert common[0] == 2 and "too easy to guess" in common[2]
    no_tty = run(*create, "v@example.test", "--role", "viewer")
    assert no_tty[0] == 2 and "--password-stdin" in no_tty[2]
    bad_email = run(
        *create, "not-an-email", "--role", "viewer", "--password-stdin", stdin=PASSWORD + "\n"
    )
    assert bad_email[0] == 2 and "is not an email address" in bad_email[2]

    assert run("operators", "set-role", "OLGA@example.test", "--role", "viewer")[0] == 0
    reset = run(
        "operators",
        "reset-password",
        "olga@example.test",
        "--password-stdin",
        stdin="another long passphrase\n",
    )
    assert reset[0] == 0 and "their sessions end" in reset[1]
    assert run("operators", "disable", "olga@example.test")[0] == 0
    missing = run("operators", "disable", "nobody@example.test")
    assert missing[0] == 2 and "no operator 'nobody@example.test'" in missing[2]

    code, out, _ = run("operators", "list")
    [line] = out.splitlines()
    assert code == 0 and line.split()[:3] == ["olga@example.test", "viewer", "disabled"]

    engine = db.create_engine(url)
    with engine.connect() as conn:
        query = sa.select(m.audit_log).order_by(m.audit_log.c.id)
        logged = [(r.actor, r.action, r.subject) for r in conn.execute(query)]
        stored = conn.execute(sa.select(m.operators.c.password_hash)).scalar_one()
    engine.dispose()
    assert logged == [
        ("cli", "operator_create", "olga@example.test"),
        ("cli", "operator_set_role", "olga@example.test"),
        ("cli", "operator_reset_password", "olga@example.test"),
        ("cli", "operator_disable", "olga@example.test"),
    ]
    assert stored.startswith("$argon2id$v=19$m=7168,t=5,p=1$") and PASSWORD not in stored


# ---------------------------------------------------------------- signing in


async def test_an_account_made_by_the_cli_signs_in_and_its_session_names_it(url: str) -> None:
    """`firstparty operators create` and `list` through the entry point, as a person runs them."""
    made = cli(
        url,
        "operators",
        "create",
        OPERATOR,
        "--role",
        "operator",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert made.returncode == 0, made.stderr
    listed = cli(url, "operators", "list")
    assert listed.returncode == 0 and listed.stdout.split()[:3] == [OPERATOR, "operator", "active"]
    async with running_app(settings_for(url)) as app, client(app) as http:
        ok = await sign_in_as(http, OPERATOR.upper())  # the email's case does not matter
        assert ok.status_code == 303 and ok.headers["location"] == "/admin/"
        value = http.cookies[admin.SESSION_COOKIE]
        assert OPERATOR not in value and PASSWORD not in value and value.count(".") == 3
        page = await signed_in_page(http)
        assert f"{OPERATOR} · operator" in page
        [op] = accounts.listing(app.engine)
        assert op.last_sign_in_at is not None

        out = await http.post("/admin/logout", data={"csrf": csrf_in(page)})
        assert out.status_code == 303
        stolen = {"Cookie": f"{admin.SESSION_COOKIE}={value}"}
        async with client(app) as other:
            assert (await other.get("/admin/", headers=stolen)).status_code == 303
        assert audit_rows(app)[-2:] == [
            (OPERATOR, "sign_in", ""),
            (OPERATOR, "sign_out", ""),
        ]


async def test_a_wrong_password_and_an_unknown_email_get_the_same_answer(app: AppClient) -> None:
    make(app, OPERATOR, Role.OPERATOR)
    async with client(app) as http:
        wrong = await sign_in_as(http, OPERATOR, "not the password at all")
        unknown = await sign_in_as(http, "nobody@example.test", "not the password at all")
    for answer in (wrong, unknown):
        assert answer.status_code == 401 and "Wrong email or password." in answer.text
        assert admin.SESSION_COOKIE not in answer.cookies
    # Nothing else on the page differs but the email typed back.
    assert wrong.text.replace(OPERATOR, "X") == unknown.text.replace("nobody@example.test", "X")
    assert [a for _, a, _ in audit_rows(app)][-2:] == ["sign_in_failed", "sign_in_failed"]


async def test_wrong_passwords_pause_the_account_from_any_address(app: AppClient) -> None:
    make(app, OPERATOR, Role.OPERATOR)
    for i in range(signin.FREE_FAILURES):  # each from another address: only the account counts
        async with client(app, f"203.0.113.{i + 1}") as http:
            assert (await sign_in_as(http, OPERATOR, "wrong password number")).status_code == 401
    async with client(app, "203.0.113.50") as http:
        as_if_just_now(app)
        paused = await sign_in_as(http, OPERATOR)  # even the right password waits
        # 2 s after the latest failure (less once argon2's work on this busy machine is counted)
        assert paused.status_code == 429 and paused.headers["retry-after"] in ("1", "2")
        assert "Too many wrong passwords for this account" in paused.text
        other = await sign_in_as(http, "someone@example.test", "wrong password number")
        assert other.status_code == 401, "another account is not held back"

        age_failures(app, 2)  # the wait is over (as time passing would)
        assert (await sign_in_as(http, OPERATOR)).status_code == 303


async def test_wrong_passwords_pause_the_address_whatever_the_email(app: AppClient) -> None:
    async with client(app) as http:
        for i in range(signin.FREE_FAILURES):
            answer = await sign_in_as(http, f"guess{i}@example.test", "wrong password number")
            assert answer.status_code == 401
        as_if_just_now(app)
        paused = await sign_in_as(http, "guess9@example.test", "wrong password number")
        assert paused.status_code == 429
        assert "Too many wrong sign-ins from your address" in paused.text


async def test_a_disabled_account_cannot_sign_in_and_its_session_ends(app: AppClient) -> None:
    make(app, OPERATOR, Role.OPERATOR)
    async with client(app) as http:
        assert (await sign_in_as(http, OPERATOR)).status_code == 303
        assert (await http.get("/admin/")).status_code == 200
        accounts.disable(app.engine, email=OPERATOR, actor=audit.CLI)
        assert (await http.get("/admin/")).status_code == 303
        refused = await sign_in_as(http, OPERATOR)
        assert refused.status_code == 401 and "Wrong email or password." in refused.text


@pytest.mark.parametrize("change", ["role", "password"])
async def test_a_new_role_or_password_ends_the_sessions(app: AppClient, change: str) -> None:
    make(app, OPERATOR, Role.OPERATOR)
    async with client(app) as http:
        assert (await sign_in_as(http, OPERATOR)).status_code == 303
        if change == "role":
            accounts.set_role(app.engine, email=OPERATOR, role=Role.VIEWER, actor=audit.CLI)
        else:
            password = "a different long passphrase"
            accounts.reset_password(app.engine, email=OPERATOR, password=password, actor="cli")
        assert (await http.get("/admin/")).status_code == 303


async def test_the_break_glass_token_still_signs_in_as_an_operator(app: AppClient) -> None:
    add_events(app.engine, ["fake"], 2)
    fail_all(app)
    async with client(app) as http:
        assert (await sign_in(http, "not-the-admin-token")).status_code == 401
        assert (await sign_in(http, TOKEN)).status_code == 303
        page = await signed_in_page(http, "/admin/failures")
        assert "admin-token · operator" in page and 'id="replay-all"' in page
        done = await http.post("/admin/replay", data={"csrf": csrf_in(page), "destination": ""})
        assert done.status_code == 200 and "2 re-queued" in done.text
    assert audit_rows(app) == [
        ("admin-token", "sign_in_failed", ""),
        ("admin-token", "sign_in", ""),
        ("admin-token", "replay", "every destination"),
    ]


# ---------------------------------------------------------------- roles


async def test_a_viewer_reads_every_page_and_is_refused_every_change(app: AppClient) -> None:
    make(app, VIEWER, Role.VIEWER)
    secret = app.settings.secret_key.get_secret_value()
    sources.create(app.engine, secret, name="shop", kind="server", origins=[])
    add_events(app.engine, ["fake"], 2)
    fail_all(app)
    async with client(app) as http:
        assert (await sign_in_as(http, VIEWER)).status_code == 303
        for path in (
            "/admin/",
            "/admin/failures",
            "/admin/sources",
            "/admin/destinations",
            "/admin/deliveries",
            "/admin/audit",
        ):
            page = await signed_in_page(http, path)
            assert f"{VIEWER} · viewer" in page
        failures = await signed_in_page(http, "/admin/failures")
        assert "replay-all" not in failures and "replaying is for operators" in failures
        assert 'class="replay-one"' not in failures and 'class="replay"' not in failures
        sources_page = await signed_in_page(http, "/admin/sources")
        assert 'value="rotate"' not in sources_page and "operators only" in sources_page
        destinations = await signed_in_page(http, "/admin/destinations")
        assert "Send a test event</button>" not in destinations and 'id="add"' not in destinations

        csrf = csrf_in(failures)
        before = snapshot(app)
        logged = len(audit_rows(app))
        changes: list[tuple[str, dict[str, str]]] = [
            ("/admin/replay", {"destination": ""}),
            ("/admin/replay", {"destination": "fake"}),
            ("/admin/replay", {"delivery": "1"}),
            ("/admin/audiences/sync", {"name": "buyers"}),
            ("/admin/reports/funnels", {"name": "f", "window_hours": "24", "steps": "page /"}),
            ("/admin/reports/funnels/any/recompute", {"range": "7d"}),
            ("/admin/sources", {"name": "shop", "action": "rotate"}),
            ("/admin/sources", {"name": "shop", "action": "disable"}),
            ("/admin/sources", {"name": "shop", "action": "delete"}),
            ("/admin/destinations/test", {"name": "fake"}),
            (
                "/admin/destinations/save",
                {
                    "type": "webhook",
                    "name": "hook",
                    "creating": "1",
                    "url": "https://hooks.example.test/in",
                    "secret": "s" * 16,
                },
            ),
            ("/admin/destinations/state", {"name": "fake", "action": "disable"}),
            ("/admin/destinations/state", {"name": "fake", "action": "delete", "confirmed": "yes"}),
        ]
        for path, data in changes:
            refused = await http.post(path, data={"csrf": csrf, **data})
            assert refused.status_code == 403, (path, refused.text)
            assert "viewers can read every page but not change anything" in refused.text
        for path in ("/admin/destinations/new?type=webhook", "/admin/destinations/edit?name=x"):
            assert (await http.get(path)).status_code == 403
        assert snapshot(app) == before, "nothing changed"
        assert len(audit_rows(app)) == logged


async def test_an_operator_replays_and_changes_sources_and_destinations(app: AppClient) -> None:
    make(app, OPERATOR, Role.OPERATOR)
    secret = app.settings.secret_key.get_secret_value()
    sources.create(app.engine, secret, name="shop", kind="server", origins=[])
    add_events(app.engine, ["fake"], 3)
    fail_all(app)
    async with client(app) as http:
        assert (await sign_in_as(http, OPERATOR)).status_code == 303
        page = await signed_in_page(http, "/admin/failures")
        assert 'class="replay-one"' in page and 'class="replay"' in page, "what a viewer lacks"
        csrf = csrf_in(page)
        done = await http.post("/admin/replay", data={"csrf": csrf, "destination": "fake"})
        assert done.status_code == 200 and "3 re-queued" in done.text
        with app.engine.connect() as conn:
            left = set(conn.execute(sa.select(m.deliveries.c.status)).scalars())
        assert left == {"pending"}
        for action in ("rotate", "disable", "enable", "delete"):
            r = await http.post(
                "/admin/sources", data={"csrf": csrf, "name": "shop", "action": action}
            )
            assert r.status_code == 200, r.text
        hook = {
            "type": "webhook",
            "name": "hook",
            "creating": "1",
            "url": "https://hooks.example.test/in",
            "secret": "s" * 16,
        }
        saved = await http.post("/admin/destinations/save", data={"csrf": csrf, **hook})
        assert saved.status_code == 200, saved.text
        for action in ("disable", "enable"):
            r = await http.post(
                "/admin/destinations/state", data={"csrf": csrf, "name": "hook", "action": action}
            )
            assert r.status_code == 200, r.text
        r = await http.post(
            "/admin/destinations/state",
            data={"csrf": csrf, "name": "hook", "action": "delete", "confirmed": "yes"},
        )
        assert r.status_code == 200, r.text
        funnel = {"csrf": csrf, "name": "signup", "window_hours": "24", "steps": "page /\npage /a"}
        assert (await http.post("/admin/reports/funnels", data=funnel)).status_code == 303
        gone = await http.post("/admin/reports/funnels/signup/delete", data={"csrf": csrf})
        assert gone.status_code == 303
    assert audit_rows(app)[1:] == [
        (OPERATOR, "sign_in", ""),
        (OPERATOR, "replay", "fake"),
        (OPERATOR, "source_rotate", "shop"),
        (OPERATOR, "source_disable", "shop"),
        (OPERATOR, "source_enable", "shop"),
        (OPERATOR, "source_delete", "shop"),
        (OPERATOR, "destination_create", "hook"),
        (OPERATOR, "destination_disable", "hook"),
        (OPERATOR, "destination_enable", "hook"),
        (OPERATOR, "destination_delete", "hook"),
        (OPERATOR, "funnel_save", "signup"),
        (OPERATOR, "funnel_delete", "signup"),
    ]
    with app.engine.connect() as conn:
        detail = conn.execute(
            sa.select(m.audit_log.c.detail).where(m.audit_log.c.action == "replay")
        ).scalar_one()
    assert detail["requeued"] == 3 and detail["destination"] == "fake"


# ---------------------------------------------------------------- the admin API and the page


async def test_the_admin_api_keeps_full_rights_and_is_audited_as_api(app: AppClient) -> None:
    add_events(app.engine, ["fake"], 1)
    fail_all(app)
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    wrong = await app.http.post("/v1/admin/replay", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    replayed = await app.http.post("/v1/admin/replay", headers=bearer)
    assert replayed.status_code == 200 and replayed.json()["requeued"] == 1
    dry = await app.http.post("/v1/admin/replay?dry_run=true", headers=bearer)
    assert dry.status_code == 200
    erased = await app.http.post(
        "/v1/admin/privacy/erase", headers=bearer, json={"email": "ann@example.test"}
    )
    assert erased.status_code == 200
    assert audit_rows(app) == [
        ("api", "sign_in_failed", ""),
        ("api", "replay", "every destination"),  # the dry run is not a change
        ("api", "erase", "person"),
    ]
    with app.engine.connect() as conn:
        detail = conn.execute(
            sa.select(m.audit_log.c.detail).where(m.audit_log.c.action == "erase")
        ).scalar_one()
    assert detail == {"named_by": ["email"], "removed": 0}, "never the email itself"


async def test_the_audit_page_pages_and_filters(app: AppClient) -> None:
    make(app, VIEWER, Role.VIEWER)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with app.engine.begin() as conn:
        for i in range(admin.PAGE_SIZE + 5):
            audit.record(
                conn,
                actor="api",
                action=audit.Action.REPLAY,
                subject=f"d{i:02}",
                at=start + timedelta(minutes=i),
            )
        audit.record(conn, actor="cli", action=audit.Action.SOURCE_CREATE, subject="shop")
    async with client(app) as http:
        assert (await sign_in_as(http, VIEWER)).status_code == 303
        first = await signed_in_page(http, "/admin/audit")
        assert first.count('class="audit-row"') == admin.PAGE_SIZE
        assert first.index(f"{VIEWER}</td>") < first.index(">shop<") < first.index(">d54<")
        assert "2026-01-01 00:54:00" in first and "00:54:00.0" not in first
        older = first.split('id="next" href="')[1].split('"')[0].replace("&amp;", "&")
        second = await signed_in_page(http, older)
        # newest first: the sign-in, shop, d54 ... d07 | d06 ... d00, the account's creation
        assert second.count('class="audit-row"') == 8 and ">d06<" in second and ">d00<" in second
        assert ">d07<" not in second and "operator_create" in second and 'id="next"' not in second

        by_action = await signed_in_page(http, "/admin/audit?action=source_create")
        assert by_action.count('class="audit-row"') == 1 and ">shop<" in by_action
        by_actor = await signed_in_page(http, f"/admin/audit?actor={VIEWER}")
        assert by_actor.count('class="audit-row"') == 1 and "sign_in" in by_actor
        for bad in ("/admin/audit?action=nope", "/admin/audit?cursor=-1"):
            assert (await http.get(bad)).status_code == 422


def test_every_change_in_the_admin_ui_needs_the_operator_role(sqlite_url: str) -> None:
    """Each POST route of the admin UI (sign-in and sign-out aside) is wrapped by
    `admin._operator_only`, so a page added later cannot forget it."""
    from firstparty.app import create_app

    app = create_app(settings_for(sqlite_url))
    posts = [
        r
        for r in app.routes
        if isinstance(r, Route) and r.path.startswith("/admin") and "POST" in (r.methods or ())
    ]
    assert {r.path for r in posts} >= {"/admin/replay", "/admin/sources", "/admin/audiences/sync"}
    unguarded = [
        r.path
        for r in posts
        if r.path not in ("/admin/login", "/admin/logout")
        and not getattr(r.endpoint, "operator_only", False)
    ]
    assert unguarded == []
