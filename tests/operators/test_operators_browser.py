"""Issue 15, operators in headless Chromium: an operator signs in with email and password and
replays, a viewer meets the hidden buttons and a refused change (403), both read the audit page.
Screenshots go to tests/browser/artifacts/ (operators-*.png)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from firstparty.collect import sources
from firstparty.operators import accounts, audit
from firstparty.operators.accounts import Role
from firstparty.store import db
from firstparty.store import models as m
from tests.browser import harness
from tests.conftest import settings_for
from tests.delivery.outbox import add_events, fake_destination, set_status
from tests.operators.test_operators_ui import OPERATOR, PASSWORD, VIEWER

ARTIFACTS = Path(__file__).parents[1] / "browser" / "artifacts"


@pytest.fixture
def served(sqlite_url: str, tmp_path: Path) -> Iterator[tuple[str, sa.Engine]]:
    from firstparty.app import create_app

    harness.require_browser()
    settings = settings_for(sqlite_url, destinations=[fake_destination("http://127.0.0.1:9")])
    engine = db.create_engine(sqlite_url, poolclass=sa.NullPool)
    secret = settings.secret_key.get_secret_value()
    sources.create(engine, secret, name="shop", kind="server", origins=[])
    for email, role in ((OPERATOR, Role.OPERATOR), (VIEWER, Role.VIEWER)):
        accounts.create(engine, email=email, password=PASSWORD, role=role, actor=audit.CLI)
    add_events(engine, ["fake"], 3)
    with engine.begin() as conn:
        set_status(conn, "failed", attempts=5)
    # The worker is off: what a replay re-queues stays pending for the test to see.
    app = create_app(settings, run_worker=False)
    with harness.ServerThread(app, harness.certificate(tmp_path)) as server:
        yield f"https://127.0.0.1:{server.port}", engine
    engine.dispose()


def test_operator_signs_in_and_replays_viewer_is_refused_audit_is_shown(
    served: tuple[str, sa.Engine],
) -> None:
    base, engine = served
    ARTIFACTS.mkdir(exist_ok=True)
    with harness.admin_browser(height=640) as page:
        page.goto(f"{base}/admin/login")
        page.fill("input[name=email]", OPERATOR)
        page.fill("input[name=password]", "not my password at all")
        page.click("#account-form button[type=submit]")
        assert page.inner_text("#message") == "Wrong email or password."
        assert page.input_value("input[name=email]") == OPERATOR
        page.fill("input[name=password]", PASSWORD)
        page.screenshot(path=str(ARTIFACTS / "operators-sign-in.png"), full_page=True)
        page.click("#account-form button[type=submit]")
        page.wait_for_url(f"{base}/admin/")
        assert page.inner_text("#who") == f"{OPERATOR} · operator"

        page.goto(f"{base}/admin/failures")
        page.click("#replay-all")
        page.wait_for_selector("#replayed")
        assert "3 re-queued" in page.inner_text("#replayed")

    with harness.admin_page(base, account=(VIEWER, PASSWORD)) as page:
        assert page.inner_text("#who") == f"{VIEWER} · viewer"
        page.goto(f"{base}/admin/sources")
        assert page.locator("button.rotate").count() == 0
        assert "operators only" in page.inner_text("#sources")
        page.goto(f"{base}/admin/destinations")
        assert page.locator("#add").count() == 0
        # A bookmarked operator page: refused, said why, nothing done.
        answer = page.goto(f"{base}/admin/destinations/new?type=webhook")
        assert answer is not None and answer.status == 403
        assert "viewers can read every page but not change anything" in page.inner_text("main")
        page.screenshot(path=str(ARTIFACTS / "operators-viewer-refused.png"), full_page=True)

        page.goto(f"{base}/admin/audit")
        actions = page.locator("#audit tbody tr td:nth-child(3)").all_inner_texts()
        assert actions[:4] == ["sign_in", "replay", "sign_in", "sign_in_failed"]
        page.screenshot(path=str(ARTIFACTS / "operators-audit.png"), full_page=True)
        page.select_option("select[name=action]", "replay")
        page.click("form.filters button[type=submit]")
        page.wait_for_url("**/admin/audit?action=replay*")
        assert page.locator("#audit tbody tr").count() == 1
        assert OPERATOR in page.inner_text("#audit tbody")

    with engine.connect() as conn:
        assert set(conn.execute(sa.select(m.deliveries.c.status)).scalars()) == {"pending"}
    for name in ("sign-in", "viewer-refused", "audit"):
        assert (ARTIFACTS / f"operators-{name}.png").stat().st_size > 0
