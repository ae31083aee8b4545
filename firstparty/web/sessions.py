"""Admin UI session cookies and who they stand for.

Two kinds, both `nonce.expiry[.who].mac` with an HMAC (secret key) over every part:
- an operator's: `who` is `o<id>` and the MAC also covers `accounts.stamp` of the account, so
  a new password or role ends the session; a disabled account's is refused on its next request;
- the break-glass admin token's (no `who`): the MAC covers a digest of the token, so rotating the
  token ends them. It acts with the operator role, as actor `admin-token`.
Neither holds the token, a password or an email. Signing out revokes the nonce (`signin`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from firstparty.operators import accounts, audit
from firstparty.operators.accounts import Role
from firstparty.runtime import Runtime
from firstparty.settings import Settings
from firstparty.web import signin

SESSION_SECONDS = 12 * 3600


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: the audit log's actor and the role's rights."""

    actor: str
    role: Role

    @property
    def can_change(self) -> bool:
        return self.role is Role.OPERATOR


BREAK_GLASS = Principal(audit.ADMIN_TOKEN, Role.OPERATOR)


def _mac(settings: Settings, *parts: str) -> str:
    key = settings.secret_key.get_secret_value().encode()
    digest = hmac.new(key, "\x1f".join(parts).encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _fresh(now: float) -> tuple[str, str]:
    return secrets.token_urlsafe(16), str(int(now) + SESSION_SECONDS)


def issue_session(settings: Settings, now: float) -> str:
    """A break-glass session cookie value: nonce.expiry.mac — never the admin token."""
    nonce, expiry = _fresh(now)
    return f"{nonce}.{expiry}.{_mac(settings, 'admin-session', nonce, expiry, settings.admin_tag)}"


def issue_operator_session(settings: Settings, operator: accounts.Operator, now: float) -> str:
    """An operator's session cookie value: nonce.expiry.o<id>.mac."""
    nonce, expiry = _fresh(now)
    who = f"o{operator.id}"
    mac = _mac(settings, "operator-session", nonce, expiry, who, accounts.stamp(operator))
    return f"{nonce}.{expiry}.{who}.{mac}"


def _unexpired(expiry: str, now: float) -> bool:
    return expiry.isdigit() and int(expiry) > now


def session_valid(settings: Settings, value: str | None, now: float) -> bool:
    """Whether the value is a break-glass session this server issued, unexpired, for today's
    token."""
    if not settings.admin_on or not value or value.count(".") != 2:
        return False
    nonce, expiry, mac = value.split(".")
    if not _unexpired(expiry, now):
        return False
    expected = _mac(settings, "admin-session", nonce, expiry, settings.admin_tag)
    return hmac.compare_digest(mac.encode(), expected.encode())


def _operator_of(runtime: Runtime, value: str, now: float) -> Principal | None:
    nonce, expiry, who, mac = value.split(".")
    if not _unexpired(expiry, now) or not who.startswith("o") or not who[1:].isdigit():
        return None
    found = accounts.get(runtime.engine, int(who[1:]))
    if found is None or not found.active:
        return None
    expected = _mac(runtime.settings, "operator-session", nonce, expiry, who, accounts.stamp(found))
    if not hmac.compare_digest(mac.encode(), expected.encode()):
        return None
    return Principal(found.email, found.role)


async def principal(runtime: Runtime, value: str | None) -> Principal | None:
    """Who this session cookie stands for, if it is valid and was not signed out."""
    if not runtime.settings.admin_on or not value:
        return None
    now = time.time()
    if value.count(".") == 3:
        found = await asyncio.to_thread(_operator_of, runtime, value, now)
    else:
        found = BREAK_GLASS if session_valid(runtime.settings, value, now) else None
    if found is None:
        return None
    revoked = await asyncio.to_thread(signin.revoked, runtime.engine, value.split(".")[0])
    return None if revoked else found


def csrf_token(settings: Settings, seed: str) -> str:
    """The form token bound to a session (or login) cookie value."""
    return _mac(settings, "admin-csrf", seed)
