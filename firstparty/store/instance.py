"""Facts about this installation kept in its database (table `instance`).

The secret key's fingerprint: every write key, cookie and stored hash is keyed by the secret, so
a server started with a different FIRSTPARTY_SECRET_KEY would answer every known key with 401.
`check_secret` refuses that start with the fix instead. The fingerprint is an HMAC of a constant:
it tells two keys apart and reveals nothing of either.
"""

from __future__ import annotations

import hmac
import secrets

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from firstparty.errors import ConfigError
from firstparty.settings import admin_token_digest
from firstparty.store.models import instance

SECRET_FINGERPRINT = "secret_fingerprint"
ADMIN_TOKEN_DIGEST = "admin_token_digest"


def fingerprint(secret: str) -> str:
    return hmac.digest(secret.encode(), b"firstparty secret fingerprint", "sha256").hex()[:16]


def read(conn: Connection, name: str) -> str | None:
    value = conn.execute(sa.select(instance.c.value).where(instance.c.name == name)).scalar()
    return None if value is None else str(value)


def write(conn: Connection, name: str, value: str) -> None:
    conn.execute(sa.delete(instance).where(instance.c.name == name))
    conn.execute(sa.insert(instance).values(name=name, value=value))


def check_secret(engine: Engine, secret: str) -> None:
    """Remember the secret's fingerprint on first use; refuse a different secret afterwards."""
    given = fingerprint(secret)
    with engine.begin() as conn:
        kept = read(conn, SECRET_FINGERPRINT)
        if kept is None:
            write(conn, SECRET_FINGERPRINT, given)
            return
    if not hmac.compare_digest(kept, given):
        raise ConfigError(
            f"secret_key: FIRSTPARTY_SECRET_KEY (fingerprint {given}) is not the key this "
            f"database was set up with (fingerprint {kept}); every write key, cookie and hash "
            "would stop matching. Start with the original key (on the embedded default it is "
            "kept in the .secret file beside the database)."
        )


def generated_admin_digest(engine: Engine) -> str | None:
    """The keyed hash of the admin token `serve` generated for a server database, if any."""
    with engine.connect() as conn:
        return read(conn, ADMIN_TOKEN_DIGEST)


def generate_admin_token(engine: Engine, secret: str) -> str | None:
    """A new admin token (returned once; only its keyed hash is kept), unless one exists."""
    token = secrets.token_urlsafe(24)
    with engine.begin() as conn:
        if read(conn, ADMIN_TOKEN_DIGEST) is not None:
            return None
        write(conn, ADMIN_TOKEN_DIGEST, admin_token_digest(secret, token))
    return token
