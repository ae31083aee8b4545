"""Members for the platform adapter tests: stored hashes made the way `identity.pii` makes them."""

from __future__ import annotations

from firstparty.audiences.base import Member
from firstparty.identity import pii


def member(n: int, *, phone: bool = True, consent: bool = True, **extra: str) -> Member:
    """Person n: a hashed email, a hashed phone in both forms unless `phone=False`, and `extra`."""
    ids = pii.hash_user({"email": f"person{n}@example.com"})
    if phone:
        ids |= pii.hash_user({"phone": f"+1650555{n % 10_000:04d}"})
    return Member(f"u:{n}", {**ids, **extra}, ad_user_data=consent, ad_personalization=consent)


def members(count: int) -> list[Member]:
    return [member(n) for n in range(count)]


def many(count: int) -> list[Member]:
    """`count` members with an email and both phone hashes (fast: no normalising)."""
    return [
        Member(
            f"u:{n}",
            {"em": pii.sha256(f"e{n}"), "ph": pii.sha256(f"p{n}"), "ph_e164": pii.sha256(f"+p{n}")},
            ad_user_data=True,
            ad_personalization=True,
        )
        for n in range(count)
    ]
