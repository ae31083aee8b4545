"""Issue 13: destinations stored in the database: validated as the config file's, secrets kept
encrypted (or as env:NAME), read back by a book that follows the table, on every engine."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from firstparty import cli
from firstparty import settings as settings_mod
from firstparty.destinations import stored
from firstparty.destinations.book import DestinationBook
from firstparty.settings import Settings
from firstparty.store import db, migrate
from firstparty.store.models import destinations as table
from tests.conftest import SECRET, settings_for
from tests.fakes import meta as fake_meta

TOKEN = "EAAB-a-stored-meta-token-0123456789"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    made = db.create_engine(database_url, poolclass=sa.NullPool)
    migrate.upgrade(made)
    yield made
    made.dispose()


@pytest.fixture
def settings(database_url: str) -> Settings:
    config = {"name": "hook", "type": "webhook", "url": "https://h.test/", "secret": "x" * 16}
    return settings_for(database_url, destinations=[config])


def meta(**changes: object) -> dict[str, object]:
    entry: dict[str, object] = {
        "name": "meta-ui",
        "type": "meta_capi",
        "pixel_id": "123456789012345",
        "access_token": TOKEN,
        "events": {"Lead": "Lead"},
    }
    return {**entry, **changes}


def test_saved_secrets_are_encrypted_and_read_back(settings: Settings, engine: Engine) -> None:
    view = stored.save(settings=settings, engine=engine, entry=meta(), creating=True)
    assert view.entry["access_token"] == stored.KEPT and view.state == "enabled"
    with engine.connect() as conn:
        row = conn.execute(sa.select(table)).one()
    assert TOKEN not in str(row.entry) and row.entry["access_token"].startswith("enc:")
    assert row.entry["events"] == {"Lead": "Lead"}

    book = DestinationBook(settings=settings, engine=engine)
    assert set(book.adapters) == {"hook"}
    assert book.reload() and set(book.adapters) == {"hook", "meta-ui"}
    token = book.adapters["meta-ui"].settings.access_token  # type: ignore[attr-defined]
    assert token.get_secret_value() == TOKEN
    assert not book.reload()  # nothing changed: nothing read again

    # Edited with the secret left empty: the stored one is kept.
    changed = meta(access_token="", events={"Lead": "Lead", "Purchase": "Purchase"})
    stored.save(settings=settings, engine=engine, entry=changed, creating=False)
    assert book.reload()
    adapter = book.adapters["meta-ui"]
    assert adapter.settings.access_token.get_secret_value() == TOKEN  # type: ignore[attr-defined]
    assert adapter.wants("track", "Purchase")


def test_disable_and_delete_leave_the_book(settings: Settings, engine: Engine) -> None:
    stored.save(settings=settings, engine=engine, entry=meta(), creating=True)
    book = DestinationBook(settings=settings, engine=engine)
    book.reload()
    assert "meta-ui" in book.route("track", "Lead", False)
    where = {"settings": settings, "engine": engine, "name": "meta-ui"}
    stored.set_state(**where, state=stored.DestinationState.DISABLED)  # type: ignore[arg-type]
    assert book.reload() and "meta-ui" not in book.route("track", "Lead", False)
    stored.set_state(**where, state=stored.DestinationState.ENABLED)  # type: ignore[arg-type]
    assert book.reload() and "meta-ui" in book.adapters
    stored.delete(**where)  # type: ignore[arg-type]
    assert book.reload() and set(book.adapters) == {"hook"}


def test_env_references_are_kept_and_reported_when_unset(
    settings: Settings, engine: Engine
) -> None:
    entry = meta(access_token="env:META_UI_TOKEN")
    stored.save(settings=settings, engine=engine, entry=entry, creating=True, environ={})
    with engine.connect() as conn:
        assert conn.execute(sa.select(table.c.entry)).scalar_one()["access_token"] == (
            "env:META_UI_TOKEN"
        )
    assert stored.get(engine=engine, name="meta-ui").entry["access_token"] == "env:META_UI_TOKEN"
    unset = DestinationBook(settings=settings, engine=engine, environ={})
    unset.reload()
    assert unset.problems["meta-ui"] == "environment variable META_UI_TOKEN not set"
    assert "meta-ui" in unset.adapters and "meta-ui" not in unset.deliverable()
    found = DestinationBook(settings=settings, engine=engine, environ={"META_UI_TOKEN": TOKEN})
    found.reload()
    assert "meta-ui" in found.deliverable() and found.problems == {}


def test_a_changed_secret_key_reports_the_destination(settings: Settings, engine: Engine) -> None:
    stored.save(settings=settings, engine=engine, entry=meta(), creating=True)
    other = settings.model_copy(update={"secret_key": settings.secret_key.__class__("y" * 48)})
    assert other.secret_key.get_secret_value() != SECRET
    book = DestinationBook(settings=other, engine=engine)
    book.reload()
    assert "cannot be decrypted with this secret_key" in book.problems["meta-ui"]
    assert "meta-ui" not in book.deliverable()
    with pytest.raises(stored.StoredError) as kept:  # keeping the unreadable secret is refused
        stored.save(settings=other, engine=engine, entry=meta(access_token=""), creating=False)
    assert kept.value.status == 422 and "enter them again" in str(kept.value)


def test_every_problem_is_listed_and_nothing_saved(settings: Settings, engine: Engine) -> None:
    bad = meta(pixel_id=None, timeout_seconds="-1", access_token="", surprise=1)
    with pytest.raises(stored.StoredError) as refused:
        stored.save(settings=settings, engine=engine, entry=bad, creating=True)
    assert refused.value.status == 422
    assert sorted(refused.value.problems) == [
        "access_token: Field required",
        "pixel_id: Input should be a valid string",
        "surprise: unknown key",
        "timeout_seconds: Input should be greater than 0",
    ]
    with pytest.raises(stored.StoredError) as clash:
        stored.save(settings=settings, engine=engine, entry=meta(name="hook"), creating=True)
    assert clash.value.status == 409 and "config file" in str(clash.value)
    stored.save(settings=settings, engine=engine, entry=meta(), creating=True)
    with pytest.raises(stored.StoredError) as twice:
        stored.save(settings=settings, engine=engine, entry=meta(), creating=True)
    assert twice.value.status == 409
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one() == 1


def test_the_cli_tests_and_replays_a_stored_destination(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "firstparty.toml"
    path.write_text(f'database_url = "sqlite:///{tmp_path}/fp.db"\n')
    loaded = settings_mod.load(config_path=str(path))
    engine = db.create_engine(loaded.database_url, poolclass=sa.NullPool)
    migrate.upgrade(engine)
    with fake_meta.FakeMeta() as platform:
        entry = meta(api_base=platform.api_base, access_token=fake_meta.ACCESS_TOKEN)
        stored.save(settings=loaded, engine=engine, entry=entry, creating=True)
        engine.dispose()
        argv = ["--config", str(path), "destinations", "test", "meta-ui", "--test-event-code", "T9"]
        assert cli.main(argv) == 0
        shown = capsys.readouterr().out
        assert "events_received" in shown and fake_meta.ACCESS_TOKEN not in shown
        assert platform.test_event_codes == ["T9"]
    replay = ["--config", str(path), "replay", "--destination", "meta-ui", "--dry-run"]
    assert cli.main(replay) == 0
    assert cli.main(["--config", str(path), "destinations", "test", "nope"]) == 2
    assert "no destination named 'nope' (configured: meta-ui)" in capsys.readouterr().err


def test_the_cli_lists_stored_destinations_beside_the_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "firstparty.toml"
    hook = '[[destinations]]\nname = "hook"\ntype = "webhook"\nurl = "https://h.test/"\n'
    path.write_text(f'database_url = "sqlite:///{tmp_path}/fp.db"\n{hook}secret = "{"s" * 16}"\n')
    loaded = settings_mod.load(config_path=str(path))
    engine = db.create_engine(loaded.database_url, poolclass=sa.NullPool)
    migrate.upgrade(engine)
    stored.save(settings=loaded, engine=engine, entry=meta(), creating=True)
    off = meta(name="meta-off", access_token="env:META_OFF_TOKEN")
    stored.save(settings=loaded, engine=engine, entry=off, creating=True)
    where = {"settings": loaded, "engine": engine, "name": "meta-off"}
    stored.set_state(**where, state=stored.DestinationState.DISABLED)  # type: ignore[arg-type]
    engine.dispose()
    assert cli.main(["--config", str(path), "destinations"]) == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert lines == [
        ["hook", "webhook", "ready"],
        ["meta-off", "meta_capi", "disabled", "(admin", "UI)"],
        ["meta-ui", "meta_capi", "ready", "(admin", "UI)"],
    ]


LAZY = """
import sys
from firstparty import app, cli
from firstparty.delivery import worker
from firstparty.destinations import stored
from firstparty.destinations.book import DestinationBook
from firstparty.store import db
from tests.conftest import settings_for

settings = settings_for(sys.argv[1])
engine = db.create_engine(sys.argv[1])
book = DestinationBook(settings=settings, engine=engine)
book.reload()
print(sorted(book.adapters), "cryptography" in sys.modules)
entry = {"name": "meta-enc", "type": "meta_capi", "pixel_id": "123456789012345",
         "access_token": sys.argv[2], "events": {"Lead": "Lead"}}
stored.save(settings=settings, engine=engine, entry=entry, creating=True)
book.reload()
token = book.adapters["meta-enc"].settings.access_token.get_secret_value()
print(sorted(book.adapters), "cryptography" in sys.modules, token == sys.argv[2])
"""


def test_cryptography_is_loaded_only_for_an_encrypted_secret(tmp_path: Path) -> None:
    # 6.7 MB of every process's memory: a server whose stored destinations use env: references
    # (or that has none) never imports it.
    url = f"sqlite:///{tmp_path}/lazy.db"
    engine = db.create_engine(url, poolclass=sa.NullPool)
    migrate.upgrade(engine)
    settings = settings_for(url)
    stored.save(
        settings=settings, engine=engine, entry=meta(access_token="env:LAZY_TOKEN"), creating=True
    )
    engine.dispose()
    env = {**os.environ, "LAZY_TOKEN": TOKEN, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", LAZY, url, TOKEN], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "['meta-ui'] False",
        "['meta-enc', 'meta-ui'] True True",
    ]
