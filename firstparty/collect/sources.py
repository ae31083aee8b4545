"""Who may send: sources from the config file and from the database, found by write key."""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from firstparty.collect.prepare import Source
from firstparty.settings import Settings, SourceSettings
from firstparty.store.models import sources as sources_table

# Write keys whose hash is remembered (the HMAC is the costliest step of a lookup).
DIGEST_CACHE = 1024


def key_hash(secret: str, write_key: str) -> str:
    return hmac.digest(secret.encode(), b"write-key:" + write_key.encode(), "sha256").hex()


@dataclass
class Bucket:
    """A token bucket: `rate` tokens a second, at most `burst` saved up."""

    rate: float
    burst: float
    tokens: float
    updated: float = field(default_factory=time.monotonic)

    def take(self) -> float:
        """0 when a token was taken, else the seconds until one is available."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


@dataclass
class Entry:
    source: Source
    bucket: Bucket


class SourceBook:
    """Write key -> source, with a rate limit per key (per process; see README)."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self._secret = settings.secret_key.get_secret_value()
        self._engine = engine
        self._by_hash: dict[str, Entry] = {}
        self._loaded_at = 0.0
        for cfg in settings.sources:
            self._by_hash[key_hash(self._secret, cfg.write_key.get_secret_value())] = _entry(cfg)
        self._config_hashes = set(self._by_hash)
        self._digests: dict[str, str] = {}  # write key -> its hash, for keys already seen

    def lookup(self, write_key: str) -> Entry | None:
        digest = self._digests.get(write_key)
        if digest is None:
            digest = key_hash(self._secret, write_key)
            if len(self._digests) >= DIGEST_CACHE:  # bounded: unknown keys cannot grow it
                self._digests.clear()
            self._digests[write_key] = digest
        entry = self._by_hash.get(digest)
        if entry is None and time.monotonic() - self._loaded_at > 1.0:
            self.reload()
            entry = self._by_hash.get(digest)
        return entry

    def reload(self) -> None:
        """Read the database's sources again (at most once a second, on an unknown key)."""
        self._loaded_at = time.monotonic()
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(sources_table)).all()
        for row in rows:
            if row.write_key_hash not in self._by_hash:
                source = Source(row.name, row.kind, tuple(row.origins or ()))
                self._by_hash[row.write_key_hash] = Entry(source, Bucket(500.0, 1000.0, 1000.0))

    def origins(self) -> set[str]:
        """Every origin of every browser source (for CORS preflights, which carry no key)."""
        return {o for e in self._by_hash.values() for o in e.source.origins}


def _entry(cfg: SourceSettings) -> Entry:
    source = Source(cfg.name, cfg.kind, tuple(cfg.origins))
    burst = float(cfg.rate_limit_burst)
    return Entry(source, Bucket(cfg.rate_limit_per_second, burst, burst))


def create(engine: Engine, secret: str, *, name: str, kind: str, origins: list[str]) -> str:
    """Create a source in the database and return its new write key (shown once)."""
    prefix = "wk_" if kind == "browser" else "sk_"
    write_key = prefix + secrets.token_urlsafe(24)
    with engine.begin() as conn:
        conn.execute(
            sources_table.insert().values(
                name=name,
                kind=kind,
                write_key_hash=key_hash(secret, write_key),
                key_hint=write_key[:7] + "…",
                origins=origins,
                created_at=datetime.now(UTC),
            )
        )
    return write_key


def listing(settings: Settings, engine: Engine) -> list[dict[str, str]]:
    """Sources from the config file and the database, for `firstparty sources`."""
    out = [
        {"name": s.name, "kind": s.kind, "origins": " ".join(s.origins), "from": "config"}
        for s in settings.sources
    ]
    with engine.connect() as conn:
        for row in conn.execute(sa.select(sources_table).order_by(sources_table.c.name)):
            origins = " ".join(row.origins or [])
            out.append({"name": row.name, "kind": row.kind, "origins": origins, "from": "database"})
    return out
