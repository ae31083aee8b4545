"""Managing a source's key: show, rotate, disable, enable, delete (CLI and admin UI).

Keyword-only services over the `sources` table. Sources from the config file are shown but
changed only in the file (a `SourceError` says so). A rotated, disabled or deleted key is refused
by every server process within `app.SOURCES_REFRESH_SECONDS` (each re-reads the table).
Events already stored keep their source's name; deleting a source deletes no event.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from firstparty.collect.sources import hint, key_hash, new_key
from firstparty.errors import ConfigError
from firstparty.settings import Settings, SourceSettings
from firstparty.store.models import sources as sources_table


class SourceState(StrEnum):
    ENABLED = "enabled"
    DISABLED = "disabled"


class SourceError(ConfigError):
    """The source does not exist, or lives in the config file."""


@dataclass(frozen=True)
class SourceView:
    """What may be shown of a source: never its key, only the key's first characters."""

    name: str
    kind: str
    origins: tuple[str, ...]
    key_prefix: str
    kept_in: str  # "config" | "database"
    state: SourceState
    rate_limit_per_second: float | None
    rate_limit_burst: int | None
    created_at: datetime | None


def show(*, settings: Settings, engine: Engine, name: str) -> SourceView:
    configured = _configured(settings, name)
    if configured is not None:
        return _from_config(configured)
    return _from_row(_row(engine, name))


def listing(*, settings: Settings, engine: Engine) -> list[SourceView]:
    views = [_from_config(s) for s in settings.sources]
    with engine.connect() as conn:
        rows = conn.execute(sa.select(sources_table).order_by(sources_table.c.name)).all()
    return views + [_from_row(r) for r in rows]


def rotate(*, settings: Settings, engine: Engine, name: str) -> str:
    """A new key for the source (returned once); the old one is refused from now on."""
    row = _database_row(settings, engine, name)
    key = new_key(row.kind)
    _update(engine, name, write_key_hash=key_hash(_secret(settings), key), key_hint=hint(key))
    return key


def set_state(*, settings: Settings, engine: Engine, name: str, state: SourceState) -> SourceView:
    _database_row(settings, engine, name)
    disabled_at = None if state is SourceState.ENABLED else datetime.now(UTC)
    _update(engine, name, disabled_at=disabled_at)
    return _from_row(_row(engine, name))


def delete(*, settings: Settings, engine: Engine, name: str) -> None:
    _database_row(settings, engine, name)
    with engine.begin() as conn:
        conn.execute(sa.delete(sources_table).where(sources_table.c.name == name))


def _secret(settings: Settings) -> str:
    return settings.secret_key.get_secret_value()


def _configured(settings: Settings, name: str) -> SourceSettings | None:
    return next((s for s in settings.sources if s.name == name), None)


def _database_row(settings: Settings, engine: Engine, name: str) -> sa.Row[tuple[object, ...]]:
    if _configured(settings, name) is not None:
        raise SourceError(f"source {name!r} is defined in the config file: change it there")
    return _row(engine, name)


def _row(engine: Engine, name: str) -> sa.Row[tuple[object, ...]]:
    with engine.connect() as conn:
        row = conn.execute(sa.select(sources_table).where(sources_table.c.name == name)).first()
    if row is None:
        raise SourceError(f"no source named {name!r} (firstparty sources lists them)")
    return row


def _update(engine: Engine, name: str, **values: object) -> None:
    with engine.begin() as conn:
        conn.execute(sa.update(sources_table).where(sources_table.c.name == name).values(values))


def _from_config(source: SourceSettings) -> SourceView:
    return SourceView(
        name=source.name,
        kind=source.kind,
        origins=tuple(source.origins),
        key_prefix=hint(source.write_key.get_secret_value()),
        kept_in="config",
        state=SourceState.ENABLED,
        rate_limit_per_second=source.rate_limit_per_second,
        rate_limit_burst=source.rate_limit_burst,
        created_at=None,
    )


def _from_row(row: sa.Row[tuple[object, ...]]) -> SourceView:
    found = row._mapping
    return SourceView(
        name=str(found["name"]),
        kind=str(found["kind"]),
        origins=tuple(found["origins"] or ()),
        key_prefix=str(found["key_hint"]),
        kept_in="database",
        state=SourceState.DISABLED if found["disabled_at"] else SourceState.ENABLED,
        rate_limit_per_second=found["rate_limit_per_second"],
        rate_limit_burst=found["rate_limit_burst"],
        created_at=found["created_at"],
    )
