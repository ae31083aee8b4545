"""`firstparty doctor` names each destination left in its platform's test mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from firstparty import doctor
from tests import factories

GA4 = factories.GA4_MP | {"validate": True}
LIVE_TIKTOK = {k: v for k, v in factories.TIKTOK_EVENTS.items() if k != "test_event_code"}


def _config(tmp_path: Path, *destinations: dict[str, object]) -> str:
    lines = [f'database_url = "sqlite:///{tmp_path / "fp.db"}"', 'secret_key = "' + "k" * 40 + '"']
    for entry in destinations:
        lines.append("[[destinations]]")
        for key, value in entry.items():
            if isinstance(value, bool):
                lines.append(f"{key} = {'true' if value else 'false'}")
            elif isinstance(value, dict):
                pairs = ", ".join(f'"{k}" = "{v}"' for k, v in value.items())
                lines.append(f"{key} = {{ {pairs} }}")
            else:
                lines.append(f'{key} = "{value}"')
    path = tmp_path / "firstparty.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_each_destination_in_test_mode_is_a_warning(tmp_path: Path) -> None:
    meta = factories.META_CAPI | {"test_event_code": "TEST123"}
    findings = doctor.test_modes(_config(tmp_path, meta, GA4, LIVE_TIKTOK))
    assert [f.level for f in findings] == ["warn", "warn"]
    assert "ga4 (ga4_mp) is in test mode (validate (GA4 debug endpoint))" in findings[0].message
    assert "meta (meta_capi) is in test mode (test_event_code=TEST123)" in findings[1].message


def test_all_live_is_ok(tmp_path: Path) -> None:
    [finding] = doctor.test_modes(_config(tmp_path, LIVE_TIKTOK))
    assert finding.level == "ok" and "none in test mode" in finding.message


class Direct:
    """A tracker no proxy sits in front of (the doctor's proxy probe)."""

    def forwarded_for(self, tracker: str) -> str | None:
        return None


def test_the_command_prints_the_test_mode_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from firstparty import cli

    config = _config(tmp_path, GA4)
    resolver = doctor.StaticResolver(records={})
    args = cli._parser().parse_args(
        ["--config", config, "doctor", "--site", "https://w.example.com", "--tracker",
         "https://w.example.com"]
    )  # fmt: skip
    code = doctor.run(args, resolver, Direct())
    assert code == 1
    assert "WARN destination ga4 (ga4_mp) is in test mode" in capsys.readouterr().out
