"""Issue 13: `firstparty destinations test NAME` sends one synthetic event through the real
adapter, in the platform's test mode, and shows the exact request and the platform's answer.
The platforms are the strict fakes of tests/fakes, on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from firstparty import cli
from tests.fakes import ga4 as fake_ga4
from tests.fakes import meta as fake_meta


@pytest.fixture
def meta() -> Iterator[fake_meta.FakeMeta]:
    with fake_meta.FakeMeta() as server:
        yield server


@pytest.fixture
def ga4() -> Iterator[fake_ga4.FakeGA4]:
    with fake_ga4.FakeGA4() as server:
        yield server


def config(tmp_path: Path, entry: str) -> str:
    path = tmp_path / "firstparty.toml"
    path.write_text(f'database_url = "sqlite:///{tmp_path}/fp.db"\n[[destinations]]\n{entry}')
    return str(path)


def meta_entry(meta: fake_meta.FakeMeta) -> str:
    return (
        f'name = "meta"\ntype = "meta_capi"\npixel_id = "{fake_meta.PIXEL_ID}"\n'
        f'access_token = "{fake_meta.ACCESS_TOKEN}"\napi_base = "{meta.api_base}"\n'
    )


def test_meta_gets_one_test_event_and_the_exchange_is_shown(
    tmp_path: Path, meta: fake_meta.FakeMeta, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config(tmp_path, meta_entry(meta))
    code = cli.main(["--config", path, "destinations", "test", "meta", "--test-event-code", "T1"])
    shown = capsys.readouterr().out
    assert code == 0, shown
    assert meta.test_event_codes == ["T1"] and len(meta.events) == 1
    assert meta.events[0]["event_name"] == "Lead"
    assert "sent in test_event_code=T1" in shown
    assert f"> POST {meta.api_base}/{fake_meta.PIXEL_ID}/events" in shown
    assert '"test_event_code": "T1"' in shown and "< 200 " in shown
    assert "\noutcome: test: events_received=1" in shown
    assert fake_meta.ACCESS_TOKEN not in shown  # masked as in the request log


def test_meta_without_a_test_event_code_sends_nothing(
    tmp_path: Path, meta: fake_meta.FakeMeta, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config(tmp_path, meta_entry(meta))
    assert cli.main(["--config", path, "destinations", "test", "meta"]) == 2
    assert "pass --test-event-code CODE, or --live" in capsys.readouterr().err
    assert meta.requests == []


def test_ga4_is_validated_on_its_debug_endpoint(
    tmp_path: Path, ga4: fake_ga4.FakeGA4, capsys: pytest.CaptureFixture[str]
) -> None:
    entry = (
        f'name = "ga4"\ntype = "ga4_mp"\nmeasurement_id = "{ga4.measurement_id}"\n'
        f'api_secret = "{ga4.api_secret}"\napi_base = "{ga4.url}"\n'
    )
    code = cli.main(["--config", config(tmp_path, entry), "destinations", "test", "ga4"])
    shown = capsys.readouterr().out
    assert code == 0, shown
    assert [r.path for r in ga4.requests] == ["/debug/mp/collect"]
    assert ga4.accepted == []  # validated, not recorded
    sent = json.loads(ga4.requests[0].body)
    assert sent["events"][0]["name"] == "generate_lead"
    assert '< 200 {"validationMessages": []}' in shown
    assert "api_secret=[redacted]" in shown and ga4.api_secret not in shown
    assert "\noutcome: test: valid per /debug/mp/collect" in shown


def test_a_refusal_is_shown_with_the_platforms_words_and_a_failing_exit(
    tmp_path: Path, meta: fake_meta.FakeMeta, capsys: pytest.CaptureFixture[str]
) -> None:
    entry = meta_entry(meta).replace(fake_meta.ACCESS_TOKEN, "EAAB-a-wrong-token")
    path = config(tmp_path, entry)
    code = cli.main(["--config", path, "destinations", "test", "meta", "--test-event-code", "T1"])
    shown = capsys.readouterr().out
    assert code == 1
    assert "< 400 " in shown or "< 401 " in shown
    assert "outcome: failed" in shown and "EAAB-a-wrong-token" not in shown
