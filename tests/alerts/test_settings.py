"""`[alerts]` in the config file: defaults on, every key checked and named in the error."""

from __future__ import annotations

from pathlib import Path

import pytest

from firstparty import settings as settings_mod
from firstparty.errors import ConfigError


def _load(tmp_path: Path, toml: str, **env: str) -> settings_mod.Settings:
    path = tmp_path / "firstparty.toml"
    path.write_text(toml)
    environ = {"FIRSTPARTY_DATABASE_URL": f"sqlite:///{tmp_path / 'fp.db'}", **env}
    return settings_mod.load(environ, config_path=str(path))


def test_the_rules_are_on_by_default_with_no_channel(tmp_path: Path) -> None:
    alerts = _load(tmp_path, "").alerts
    assert alerts.enabled and alerts.interval_seconds == 60 and alerts.min_interval_minutes == 30
    assert (alerts.delivery_success.min_percent, alerts.delivery_success.window_minutes) == (95, 15)
    assert alerts.queue_lag.enabled and alerts.source_silent.min_percent == 50
    assert alerts.server_errors.enabled and alerts.destination_setup.enabled
    assert (alerts.webhook, alerts.email) == (None, None)


def test_the_webhook_secret_is_read_from_the_environment(tmp_path: Path) -> None:
    toml = '[alerts.webhook]\nurl = "https://hooks.slack.com/services/T/B/X"\nsecret = "env:HOOK"\n'
    webhook = _load(tmp_path, toml, HOOK="from-the-environment").alerts.webhook
    assert webhook is not None and webhook.secret is not None
    assert webhook.secret.get_secret_value() == "from-the-environment"
    with pytest.raises(ConfigError, match=r"alerts\.webhook\.secret: environment variable HOOK"):
        _load(tmp_path, toml)


def test_every_bad_key_is_named(tmp_path: Path) -> None:
    toml = (
        "[alerts]\nintervall = 5\nmin_interval_minutes = -1\n"
        "[alerts.delivery_success]\nmin_percent = 120\n"
        '[alerts.webhook]\nurl = "hooks.example.com"\n'
        '[alerts.email]\nhost = "smtp.example.com"\nsender = "alerts"\nto = ["nobody"]\n'
    )
    with pytest.raises(ConfigError) as raised:
        _load(tmp_path, toml)
    message = str(raised.value)
    for named in (
        "alerts.intervall: unknown key",
        "alerts.min_interval_minutes: Input should be greater than or equal to 0",
        "alerts.delivery_success.min_percent: Input should be less than or equal to 100",
        "alerts.webhook.url: String should match pattern",
        "alerts.email.sender: String should match pattern",
        "alerts.email.to: 'nobody' is not an email address",
    ):
        assert named in message


def test_ssl_and_starttls_together_are_refused(tmp_path: Path) -> None:
    toml = (
        '[alerts.email]\nhost = "smtp.example.com"\nsender = "a@example.com"\n'
        'to = ["b@example.com"]\nssl = true\n'
    )
    with pytest.raises(ConfigError, match=r"alerts\.email: choose ssl \(TLS from the start"):
        _load(tmp_path, toml)


def test_a_lease_shorter_than_a_round_is_refused(tmp_path: Path) -> None:
    toml = "[alerts]\ninterval_seconds = 120\nlease_seconds = 60\n"
    with pytest.raises(ConfigError, match="alerts: lease_seconds must be longer than interval"):
        _load(tmp_path, toml)
