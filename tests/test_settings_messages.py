"""Issue 13: a config error names every problem at once, in words a person reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from firstparty import settings as settings_mod
from firstparty.errors import ConfigError


def test_every_error_is_named_and_string_lengths_are_in_characters(tmp_path: Path) -> None:
    path = tmp_path / "firstparty.toml"
    path.write_text(
        '[cookie]\nmax_age_days = 900\n\n[[destinations]]\nname = "hook"\ntype = "webhook"\n'
        'url = "https://hooks.example.com/x"\nsecret = "short"\nbatch_size = 0\n'
    )
    env = {"FIRSTPARTY_DATABASE_URL": f"sqlite:///{tmp_path / 'fp.db'}"}
    with pytest.raises(ConfigError) as raised:
        settings_mod.load(env, config_path=str(path))
    assert str(raised.value) == (
        "invalid settings: cookie.max_age_days: Input should be less than or equal to 400; "
        "destinations[0].batch_size: Input should be greater than or equal to 1; "
        "destinations[0].secret: Value should have at least 16 characters after validation, not 5"
    )
