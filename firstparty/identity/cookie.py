"""The first-party visitor cookie: an unguessable id plus an HMAC, so a forged value is refused."""

from __future__ import annotations

import base64
import hmac

from firstparty import ids
from firstparty.settings import CookieSettings

_SIG_CHARS = 22  # 128 bits of the HMAC, base64url


def _signature(secret: str, visitor_id: str) -> str:
    digest = hmac.digest(secret.encode(), b"fp_id:" + visitor_id.encode(), "sha256")
    return base64.urlsafe_b64encode(digest).decode()[:_SIG_CHARS]


def sign(secret: str, visitor_id: str) -> str:
    return f"{visitor_id}.{_signature(secret, visitor_id)}"


def read(secret: str, value: str | None) -> str | None:
    """The visitor id in a cookie value, or None when absent, malformed or forged."""
    if not value or "." not in value or len(value) > 80:
        return None
    visitor_id, _, signature = value.rpartition(".")
    if not visitor_id or not hmac.compare_digest(signature, _signature(secret, visitor_id)):
        return None
    return visitor_id


def visitor_for(secret: str, value: str | None) -> tuple[str, bool]:
    """(visitor id, is_new): the cookie's visitor, or a fresh one when it is absent or forged."""
    visitor_id = read(secret, value)
    if visitor_id is None:
        return ids.new_visitor_id(), True
    return visitor_id, False


def header(settings: CookieSettings, secret: str, visitor_id: str) -> str:
    """The Set-Cookie value: re-issued on every answer with the same id and a fresh Max-Age."""
    parts = [
        f"{settings.name}={sign(secret, visitor_id)}",
        f"Max-Age={settings.max_age_days * 86400}",
        "Path=/",
        "HttpOnly",
        "SameSite=Lax",
    ]
    if settings.domain:
        parts.append(f"Domain={settings.domain}")
    if settings.secure:
        parts.append("Secure")
    return "; ".join(parts)
