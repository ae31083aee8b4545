"""Issue 13: /demo/ without its key tells the truth: how to create a source for this origin,
or, when one exists (the demo's, made at the first start), how to get a new key for it."""

from __future__ import annotations

from firstparty.collect import sources
from firstparty.settings import Settings
from tests.conftest import base_config, running_app

ORIGIN = "https://t.example.test"  # the test client's own origin


async def test_without_any_source_it_says_to_create_one(sqlite_url: str) -> None:
    settings = Settings.model_validate(base_config(sqlite_url, demo=True))
    async with running_app(settings) as app:
        text = (await app.http.get("/demo/")).text
        assert "No browser source allows this origin yet" in text
        assert "firstparty sources create demo --kind browser --origin ORIGIN" in text


async def test_with_the_demo_source_it_says_to_rotate_its_key(sqlite_url: str) -> None:
    settings = Settings.model_validate(base_config(sqlite_url, demo=True))
    async with running_app(settings) as app:
        secret = settings.secret_key.get_secret_value()
        key = sources.create(app.engine, secret, name="demo", kind="browser", origins=[ORIGIN])
        text = (await app.http.get("/demo/")).text
        assert "No browser source allows this origin" not in text
        assert "The browser source demo allows this origin" in text
        assert "firstparty sources rotate demo" in text and key not in text
        with_key = (await app.http.get(f"/demo/?key={key}")).text
        assert f'data-key="{key}"' in with_key and '<section class="setup" hidden>' in with_key
