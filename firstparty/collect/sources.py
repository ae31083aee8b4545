"""Who may send: sources from the config file and from the database, found by write key."""

from __future__ import annotations

import hmac
import secrets
import socket
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from firstparty.collect.prepare import Source
from firstparty.settings import CollectSettings, Settings
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


class AddressLimits:
    """A rate limit per client address, remembering at most `tracked` addresses (LRU).

    GCRA: one float per address (the time up to which its allowance is spent) in the standard
    library's OrderedDict (C), so a request costs a lookup and a move to the end. An address
    pushed out starts afresh; the key's own bucket still bounds all addresses together.
    """

    def __init__(self, *, per_second: float, burst: int, tracked: int) -> None:
        self._interval = 1.0 / per_second
        self._tolerance = (burst - 1) / per_second
        self._tracked = tracked
        self._spent: OrderedDict[str | bytes, float] = OrderedDict()

    def take(self, address: str | bytes) -> float:
        """0 when this address may send now, else the seconds until it may."""
        now = time.monotonic()
        spent = self._spent
        until = spent.get(address, now)
        if until < now:  # (not max(): a call costs a third of this method)
            until = now
        wait = until - self._tolerance - now
        if wait > 0:  # refused: only a remembered address can be
            spent.move_to_end(address)
            return wait
        spent[address] = until + self._interval
        spent.move_to_end(address)
        if len(spent) > self._tracked:
            spent.popitem(last=False)
        return 0.0

    def __len__(self) -> int:
        return len(self._spent)


def address_key(address: str) -> str | bytes:
    """IPv6 addresses by their /64 (one subscriber's network, as 8 bytes); others as they are."""
    if ":" not in address:
        return address
    try:
        packed = socket.inet_pton(socket.AF_INET6, address)
    except OSError:
        return address
    if packed[:12] == _IPV4_MAPPED:
        return socket.inet_ntop(socket.AF_INET, packed[12:])
    return packed[:8]


_IPV4_MAPPED = bytes(10) + b"\xff\xff"


class SourceBook:
    """Write key -> source, with rate limits per key and per client address (per process)."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self._secret = settings.secret_key.get_secret_value()
        self._engine = engine
        self.collect = settings.collect
        self.addresses = AddressLimits(
            per_second=settings.collect.per_address_per_second,
            burst=settings.collect.per_address_burst,
            tracked=settings.collect.per_address_tracked,
        )
        self._by_hash: dict[str, Entry] = {}
        self._loaded_at = 0.0
        for cfg in settings.sources:
            source = Source(cfg.name, cfg.kind, tuple(cfg.origins), cfg.bots or self.collect.bots)
            bucket = key_bucket(self.collect, cfg.rate_limit_per_second, cfg.rate_limit_burst)
            digest = key_hash(self._secret, cfg.write_key.get_secret_value())
            self._by_hash[digest] = Entry(source, bucket)
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
        """Read the database's sources again: on an unknown key (at most once a second) and
        every few seconds from the server (app.py), so a key rotated, disabled or deleted in
        any process is refused by every other within that time. Unchanged keys keep their
        rate-limit buckets."""
        self._loaded_at = time.monotonic()
        with self._engine.connect() as conn:
            rows = conn.execute(
                sa.select(sources_table).where(sources_table.c.disabled_at.is_(None))
            ).all()
        found = {h: e for h, e in self._by_hash.items() if h in self._config_hashes}
        for row in rows:
            source = Source(row.name, row.kind, tuple(row.origins or ()), self.collect.bots)
            kept = self._by_hash.get(row.write_key_hash)
            if kept is not None and kept.source == source:
                found[row.write_key_hash] = kept
                continue
            bucket = key_bucket(self.collect, row.rate_limit_per_second, row.rate_limit_burst)
            found[row.write_key_hash] = Entry(source, bucket)
        self._by_hash = found

    def origins(self) -> set[str]:
        """Every origin of every browser source (for CORS preflights, which carry no key)."""
        return {o for e in self._by_hash.values() for o in e.source.origins}


def key_bucket(collect: CollectSettings, per_second: float | None, burst: int | None) -> Bucket:
    """A key's bucket: the source's own limits, else [collect]'s (config file and CLI alike)."""
    rate = per_second or collect.rate_limit_per_second
    size = float(burst or collect.rate_limit_burst)
    return Bucket(rate, size, size)


def new_key(kind: str) -> str:
    """A new write key: `wk_` for a browser source (public), `sk_` for a server one (secret)."""
    return ("wk_" if kind == "browser" else "sk_") + secrets.token_urlsafe(24)


def hint(write_key: str) -> str:
    """What may be shown of a key: its first characters."""
    return write_key[:7] + "…"


def create(
    engine: Engine,
    secret: str,
    *,
    name: str,
    kind: str,
    origins: list[str],
    rate_limit_per_second: float | None = None,
    rate_limit_burst: int | None = None,
) -> str:
    """Create a source in the database and return its new write key (shown once).

    Rate limits left None follow [collect]'s defaults, read when the server loads the source.
    """
    write_key = new_key(kind)
    with engine.begin() as conn:
        conn.execute(
            sources_table.insert().values(
                name=name,
                kind=kind,
                write_key_hash=key_hash(secret, write_key),
                key_hint=hint(write_key),
                origins=origins,
                created_at=datetime.now(UTC),
                rate_limit_per_second=rate_limit_per_second,
                rate_limit_burst=rate_limit_burst,
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
