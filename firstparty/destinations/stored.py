"""Destinations added in the admin UI: kept in the database beside the config file's.

Keyword-only services over the `destinations` table. An entry is validated exactly as a
`[[destinations]]` entry of the config file (its type's settings schema, every error listed).
Each secret is kept as an `env:NAME` reference or encrypted (`enc:` + a Fernet token under a key
derived by HKDF from the instance's secret_key), never in clear. A name the config file uses is
refused: the file wins. Every change takes the next `version`, so each process sees it by
polling `stamp()` (`book.DestinationBook`).
"""

from __future__ import annotations

import base64
import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from pydantic import SecretStr, ValidationError
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from firstparty.destinations import registry
from firstparty.destinations.base import Adapter, DestinationSettings
from firstparty.errors import ConfigError
from firstparty.settings import UNSET_SECRET, Settings, describe_errors
from firstparty.store.models import destinations as table

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

ENCRYPTED = "enc:"
ENV = "env:"
_HKDF_INFO = b"firstparty destination secrets v1"


class DestinationState(StrEnum):
    ENABLED = "enabled"
    DISABLED = "disabled"


class StoredError(ConfigError):
    """A change refused: `status` 404 (no such), 409 (the config file's), 422 (invalid)."""

    def __init__(self, status: int, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.status = status
        self.problems = problems


@dataclass(frozen=True)
class StoredView:
    """A stored destination as it may be shown: secrets only as `env:NAME` or "set (kept)"."""

    name: str
    type: str
    entry: dict[str, Any]  # without name and type; secret fields hold `env:NAME` or KEPT
    state: DestinationState
    created_at: datetime
    updated_at: datetime
    version: int


KEPT = "set (kept)"


@dataclass(frozen=True)
class Loaded:
    """One enabled stored destination: its settings (None when unusable) and what is wrong."""

    name: str
    settings: DestinationSettings | None
    problems: list[str]


# ---------------------------------------------------------------- secrets at rest


class Cipher:
    """The cipher of stored secrets: Fernet, keyed by HKDF-SHA256 from the instance's
    secret_key. Made on first use: `cryptography` takes 6.7 MB of a process's memory, and
    most processes never see an encrypted secret (none stored, or `env:` references only)."""

    def __init__(self, secret_key: str) -> None:
        self._secret_key = secret_key

    @functools.cached_property
    def _fernet(self) -> Fernet:
        from cryptography.fernet import Fernet
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO)
        return Fernet(base64.urlsafe_b64encode(hkdf.derive(self._secret_key.encode())))

    def encrypt(self, clear: str) -> str:
        return self._fernet.encrypt(clear.encode()).decode()

    def decrypt(self, token: str) -> str | None:
        """The secret in clear; None when this secret_key cannot decrypt it."""
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            return None


def secret_fields(kind: str) -> tuple[str, ...]:
    """The fields of this destination type whose values are secrets (SecretStr)."""
    model = registry.ADAPTERS[kind].settings_model
    return tuple(
        name
        for name, info in model.model_fields.items()
        if info.annotation is SecretStr or SecretStr in getattr(info.annotation, "__args__", ())
    )


def _kept_form(cipher: Cipher, value: str) -> str:
    """What the table keeps of a secret the operator gave: the reference, or it encrypted."""
    if value.startswith(ENV):
        return value
    return ENCRYPTED + cipher.encrypt(value)


def _reveal(cipher: Cipher, kept: str, environ: Mapping[str, str]) -> tuple[str, str | None]:
    """The secret in clear (or UNSET_SECRET) and, when it cannot be had, why."""
    if kept.startswith(ENV):
        name = kept[len(ENV) :]
        found = environ.get(name)
        return (found, None) if found else (UNSET_SECRET, f"environment variable {name} not set")
    clear = cipher.decrypt(kept[len(ENCRYPTED) :])
    return (clear, None) if clear is not None else (UNSET_SECRET, UNREADABLE)


UNREADABLE = (
    "its stored secrets cannot be decrypted with this secret_key (was FIRSTPARTY_SECRET_KEY "
    "changed?): enter them again in the admin UI"
)


# ---------------------------------------------------------------- changes


def save(
    *,
    settings: Settings,
    engine: Engine,
    entry: Mapping[str, Any],
    creating: bool,
    environ: Mapping[str, str] | None = None,
) -> StoredView:
    """Add (`creating`) or replace a stored destination after validating it as the config file
    would. A secret left empty when editing keeps the stored one; `env:NAME` is kept as such."""
    name, kind = str(entry.get("name") or ""), entry.get("type")
    _refuse_config_name(settings, name)
    if not isinstance(kind, str) or kind not in registry.ADAPTERS:
        known = ", ".join(sorted(registry.ADAPTERS))
        raise StoredError(422, [f"type: unknown destination type {kind!r} (known: {known})"])
    cipher = Cipher(settings.secret_key.get_secret_value())
    old = _row(engine, name) if not creating else None
    if old is not None and old.type != kind:
        raise StoredError(422, ["type: a destination keeps its type (delete it and add another)"])
    kept = _secrets(kind, entry, old.entry if old is not None else {}, cipher)
    fields = secret_fields(kind)
    given = {k: v for k, v in entry.items() if k not in fields}
    checked = _validate(kind, {**given, **kept}, cipher, os.environ if environ is None else environ)
    plain = checked.model_dump(mode="json", exclude_unset=True, exclude={"name", "type"})
    plain.update(kept)
    taken = StoredError(409, [f"name: a destination named {name!r} already exists"])
    now = datetime.now(UTC)
    try:
        with engine.begin() as conn:
            if creating and _exists(conn, name):
                raise taken
            values = {"type": kind, "entry": plain, "updated_at": now, "version": _next(conn)}
            if creating:
                conn.execute(table.insert().values(name=name, created_at=now, **values))
            else:
                conn.execute(sa.update(table).where(table.c.name == name).values(values))
    except IntegrityError:  # added at the same moment by another process
        raise taken from None
    return get(engine=engine, name=name)


def _secrets(
    kind: str, entry: Mapping[str, Any], old: Mapping[str, Any], cipher: Cipher
) -> dict[str, str]:
    """Each secret field as kept: the new value encrypted or referenced, else the stored one."""
    kept: dict[str, str] = {}
    for field in secret_fields(kind):
        given = entry.get(field)
        if isinstance(given, str) and given.strip():
            kept[field] = _kept_form(cipher, given.strip())
        elif field in old:
            kept[field] = old[field]
    return kept  # a required secret still missing is reported by the schema, with the rest


def _validate(
    kind: str, entry: Mapping[str, Any], cipher: Cipher, environ: Mapping[str, str]
) -> DestinationSettings:
    """The entry checked by its type's schema, secrets revealed (an unset `env:` passes as the
    config file's does: the destination is then reported, not refused)."""
    revealed = dict(entry)
    unreadable = []
    for field in secret_fields(kind):
        if isinstance(entry.get(field), str):
            revealed[field], problem = _reveal(cipher, entry[field], environ)
            if problem == UNREADABLE:
                unreadable.append(f"{field}: {UNREADABLE}")
    if unreadable:
        raise StoredError(422, unreadable)
    try:
        return registry.ADAPTERS[kind].settings_model.model_validate(revealed)
    except ValidationError as exc:
        raise StoredError(422, describe_errors(exc)) from None


def set_state(
    *, settings: Settings, engine: Engine, name: str, state: DestinationState
) -> StoredView:
    _refuse_config_name(settings, name)
    _row(engine, name)
    disabled_at = None if state is DestinationState.ENABLED else datetime.now(UTC)
    with engine.begin() as conn:
        values = {"disabled_at": disabled_at, "updated_at": datetime.now(UTC)}
        conn.execute(
            sa.update(table).where(table.c.name == name).values(version=_next(conn), **values)
        )
    return get(engine=engine, name=name)


def delete(*, settings: Settings, engine: Engine, name: str) -> None:
    """Remove a stored destination; its deliveries stay (pending ones wait, as for a
    destination removed from the config file)."""
    _refuse_config_name(settings, name)
    _row(engine, name)
    with engine.begin() as conn:
        conn.execute(sa.delete(table).where(table.c.name == name))


def _refuse_config_name(settings: Settings, name: str) -> None:
    if any(d.name == name for d in settings.destinations):
        raise StoredError(
            409, [f"name: {name!r} is a destination of the config file: change it there"]
        )


def _exists(conn: Connection, name: str) -> bool:
    return conn.execute(sa.select(table.c.name).where(table.c.name == name)).first() is not None


def _next(conn: Connection) -> int:
    return (
        int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(table.c.version), 0))).scalar_one())
        + 1
    )


def _row(engine: Engine, name: str) -> sa.Row[Any]:
    with engine.connect() as conn:
        row = conn.execute(sa.select(table).where(table.c.name == name)).first()
    if row is None:
        raise StoredError(404, [f"no stored destination named {name!r}"])
    return row


# ---------------------------------------------------------------- reading


def get(*, engine: Engine, name: str) -> StoredView:
    return _view(_row(engine, name))


def listing(*, engine: Engine) -> list[StoredView]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(table).order_by(table.c.name)).all()
    return [_view(r) for r in rows]


def stamp(conn: Connection) -> tuple[int, int]:
    """Changes whenever a row is added, changed or deleted: (rows, highest version)."""
    found = conn.execute(
        sa.select(sa.func.count(), sa.func.coalesce(sa.func.max(table.c.version), 0))
    ).one()
    return int(found[0]), int(found[1])


def load(
    *, settings: Settings, engine: Engine, environ: Mapping[str, str] | None = None
) -> list[Loaded]:
    """The enabled stored destinations the config file does not name, ready to use."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(table).where(table.c.disabled_at.is_(None))).all()
    configured = {d.name for d in settings.destinations}
    cipher = Cipher(settings.secret_key.get_secret_value())
    env = os.environ if environ is None else environ
    return [_loaded(r, cipher, env) for r in rows if r.name not in configured]


def _loaded(row: sa.Row[Any], cipher: Cipher, environ: Mapping[str, str]) -> Loaded:
    fields = secret_fields(row.type) if row.type in registry.ADAPTERS else ()
    entry: dict[str, Any] = {"name": row.name, "type": row.type}
    problems: list[str] = []
    for key, value in dict(row.entry).items():
        if key in fields and isinstance(value, str):
            value, problem = _reveal(cipher, value, environ)
            if problem and problem not in problems:
                problems.append(problem)
        entry[key] = value
    try:
        return Loaded(row.name, registry.parse(entry, 0), problems)
    except ValueError as exc:
        return Loaded(row.name, None, [*problems, f"invalid: {exc}"])


def _view(row: sa.Row[Any]) -> StoredView:
    fields = secret_fields(row.type) if row.type in registry.ADAPTERS else ()
    entry = {
        k: (v if str(v).startswith(ENV) else KEPT) if k in fields else v
        for k, v in dict(row.entry).items()
    }
    return StoredView(
        name=row.name,
        type=row.type,
        entry=entry,
        state=DestinationState.DISABLED if row.disabled_at else DestinationState.ENABLED,
        created_at=row.created_at,
        updated_at=row.updated_at,
        version=int(row.version),
    )


def adapters(loaded: list[Loaded]) -> dict[str, Adapter]:
    """An adapter for each loaded destination that could be built."""
    return {one.name: registry.adapter_for(one.settings) for one in loaded if one.settings}
