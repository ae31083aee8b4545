"""Issue 13: a destination whose secret is not set does not stop the server. Its events are
routed and wait, pending; it is reported (/readyz, doctor); a restart with the secret sends them.
`strict_start = true` keeps the old refusal for production."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from firstparty import doctor
from firstparty import settings as settings_mod
from firstparty.errors import ConfigError
from tests.conftest import SECRET, SERVER_KEY, running_app
from tests.delivery.outbox import API_KEY, delivery_rows, eventually
from tests.delivery.receiver import Receiver


def write_config(tmp_path: Path, database_url: str, receiver_url: str, strict: bool) -> str:
    path = tmp_path / "firstparty.toml"
    path.write_text(
        f"""
database_url = "{database_url}"
secret_key = "{SECRET}"
strict_start = {json.dumps(strict)}
[[sources]]
name = "crm"
kind = "server"
write_key = "{SERVER_KEY}"
[[destinations]]
name = "now"
type = "fake"
api_base = "{receiver_url}"
api_key = "{API_KEY}"
[[destinations]]
name = "later"
type = "fake"
api_base = "{receiver_url}"
api_key = "env:LATER_API_KEY"
"""
    )
    return str(path)


def test_strict_start_refuses_an_unset_destination_secret(tmp_path: Path, sqlite_url: str) -> None:
    path = write_config(tmp_path, sqlite_url, "http://127.0.0.1:9", strict=True)
    with pytest.raises(ConfigError, match=r"destinations\[1\]: environment variable LATER_API_KEY"):
        settings_mod.load({}, config_path=path)


async def test_an_unset_secret_is_reported_and_its_events_wait_until_it_is_set(
    tmp_path: Path, sqlite_url: str, receiver: Receiver
) -> None:
    path = write_config(tmp_path, sqlite_url, receiver.url, strict=False)
    settings = settings_mod.load({}, config_path=path)
    assert settings.misconfigured == {"later": ["LATER_API_KEY"]}
    findings = [str(f) for f in doctor.test_modes(path)]
    assert findings[0].startswith("FAIL destination later cannot send: environment variable(s)")

    async with running_app(settings, run_worker=True) as app:
        ready = await app.http.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["misconfigured"] == {
            "later": "environment variable(s) not set: LATER_API_KEY"
        }
        sent = await app.http.post(
            "/v1/events",
            headers={"X-Write-Key": SERVER_KEY},
            json={"type": "track", "name": "Lead"},
        )
        assert sent.status_code == 202

        def now_delivered() -> bool:
            found = {r.destination: r.status for r in delivery_rows(app.engine)}
            return found.get("now") == "delivered"

        await eventually(now_delivered)
        found = {r.destination: r.status for r in delivery_rows(app.engine)}
        assert found == {"now": "delivered", "later": "pending"}
        assert len(receiver.seen) == 1

    fixed = settings_mod.load({"LATER_API_KEY": "later-key-0123456789"}, config_path=path)
    assert fixed.misconfigured == {}
    async with running_app(fixed, run_worker=True) as app:
        await eventually(lambda: all(r.status == "delivered" for r in delivery_rows(app.engine)))
        assert len(receiver.seen) == 2
        assert "later-key-0123456789" in str(receiver.seen[1].headers) + receiver.seen[1].query
