"""Settings: built from the environment and the TOML file, refused at start naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from firstparty import settings
from firstparty.errors import ConfigError

SECRET = "s" * 40


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "firstparty.toml"
    path.write_text(text)
    return str(path)


def test_defaults_need_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    loaded = settings.load({})
    assert loaded.database_url == "sqlite:///./firstparty.db"
    assert loaded.redis_url is None and loaded.cookie.name == "fp_id"
    key_file = tmp_path / "firstparty.db.secret"
    assert key_file.exists() and oct(key_file.stat().st_mode)[-3:] == "600"
    # Generated once, then kept.
    assert settings.load({}).secret_key == loaded.secret_key


def test_environment_and_env_references(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[cookie]
domain = "example.com"
max_age_days = 390

[[sources]]
name = "www"
kind = "browser"
write_key = "env:WWW_KEY"
origins = ["https://www.example.com/"]
""",
    )
    env = {
        "FIRSTPARTY_SECRET_KEY": SECRET,
        "WWW_KEY": "k" * 12,
        "FIRSTPARTY_REDIS_URL": "redis://x",
    }
    loaded = settings.load(env, config_path=path)
    assert loaded.cookie.domain == "example.com" and loaded.cookie.max_age_days == 390
    assert loaded.sources[0].write_key.get_secret_value() == "k" * 12
    assert loaded.sources[0].origins == ["https://www.example.com"]
    assert loaded.redis_url == "redis://x"
    assert "k" * 12 not in repr(loaded)


@pytest.mark.parametrize(
    ("text", "env", "named"),
    [
        ("[cookie]\nflavour = 'x'\n", {}, "cookie.flavour: unknown key"),
        ("surprise = 1\n", {}, "surprise: unknown key"),
        ("[cookie]\nmax_age_days = 500\n", {}, "cookie.max_age_days"),
        (
            "[[sources]]\nname='a'\nkind='browser'\nwrite_key='env:MISSING_KEY'\n",
            {},
            "sources[0].write_key: environment variable MISSING_KEY is not set",
        ),
        ("[[sources]]\nname='a'\nkind='phone'\nwrite_key='kkkkkkkkkk'\n", {}, "sources.0.kind"),
        ("[[destinations]]\nname='x'\ntype='carrier_pigeon'\n", {}, "destinations[0].type"),
        ("[otp]\nprovider='carrier_pigeon'\n", {}, "otp.provider"),
        ("not toml = = =", {}, "not valid TOML"),
    ],
)
def test_bad_config_stops_naming_the_key(
    tmp_path: Path, text: str, env: dict[str, str], named: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        settings.load({"FIRSTPARTY_SECRET_KEY": SECRET, **env}, config_path=path)
    assert named in str(caught.value)


def test_unsafe_or_missing_secret_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="secret_key"):
        settings.load({"FIRSTPARTY_SECRET_KEY": "changeme"})
    with pytest.raises(ConfigError, match="FIRSTPARTY_SECRET_KEY is required"):
        settings.load({"FIRSTPARTY_DATABASE_URL": "postgresql://x/y"})


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml"):
        settings.load({"FIRSTPARTY_SECRET_KEY": SECRET}, config_path=str(tmp_path / "nope.toml"))
