"""Every registered destination type, and each of its settings, is documented."""

from __future__ import annotations

from pathlib import Path

from firstparty.destinations import registry

DOC = (Path(__file__).parents[2] / "docs" / "destinations.md").read_text()
SHARED = {"name", "type", "api_base", "events", "dry_run", "timeout_seconds", "max_attempts",
          "retry_window_seconds", "batch_size", "forward_bots", "conversions",
          "credential_expires_at"}  # fmt: skip


def test_every_destination_and_setting_is_documented() -> None:
    missing = []
    for kind, adapter in registry.ADAPTERS.items():
        if f"## `{kind}`" not in DOC:
            missing.append(f"section for {kind}")
        section = DOC.split(f"## `{kind}`", 1)[-1].split("\n## ", 1)[0]
        for name, field in adapter.settings_model.model_fields.items():
            key = field.alias or name
            if key not in SHARED and f"`{key}`" not in section:
                missing.append(f"{kind}.{key}")
    assert not missing, f"document in docs/destinations.md: {missing}"
