"""Operator accounts: an email (case-folded), an argon2id password hash, a role.

Passwords are hashed with argon2id at one of OWASP's equal-strength parameter sets (`MEMORY_KIB`:
7 MiB, 5 passes, 1 lane; the Password Storage Cheat Sheet) and re-hashed on sign-in when a
stored hash was made with others (argon2-cffi's defaults, 64 MiB, before 2026-11-29; 19 MiB, 2
passes, until session 10). `authenticate`
spends about the same time on an unknown or disabled email as on a known one (it verifies
against a dummy hash), so the answer and its timing name nobody. A session is bound to
`stamp(operator)`: changing the password or the role, or disabling the account, ends its
sessions.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from functools import cache

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from firstparty.errors import ConfigError
from firstparty.operators import audit
from firstparty.store.models import operators

MIN_PASSWORD = 12
MAX_PASSWORD = 1024
MAX_EMAIL = 254
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# The commonest passwords of at least MIN_PASSWORD characters (as in breach lists); with the
# length and variety rules they catch what people type first.
COMMON = frozenset(
    {
        "123456789012",
        "1234567890123",
        "qwertyuiopas",
        "qwertyuiop123",
        "password1234",
        "password12345",
        "passwordpassword",
        "iloveyou1234",
        "administrator",
        "letmein12345",
        "changeme1234",
        "welcome12345",
    }
)


class Role(StrEnum):
    """What an operator may do: a viewer reads everything, an operator also changes things."""

    VIEWER = "viewer"
    OPERATOR = "operator"


class OperatorError(ConfigError):
    """A refused account change, with the message to show (CLI and UI alike)."""


@dataclass(frozen=True)
class Operator:
    id: int
    email: str
    role: Role
    created_at: datetime
    disabled_at: datetime | None
    last_sign_in_at: datetime | None
    password_hash: str

    @property
    def active(self) -> bool:
        return self.disabled_at is None


# OWASP's argon2id row with the least memory (m=7 MiB, t=5, p=1), not argon2-cffi's default
# (RFC 9106's 64 MiB, t=3, p=4): each sign-in allocates m in the API process, and 64 MiB took a
# 130 MB server to 195+ (issue 14's 150 MB). The cheat sheet lists its five rows (46 MiB t=1 ...
# 19 MiB t=2 ... 7 MiB t=5) as "an equal level of defense", trading memory for passes; the
# sign-in spent 19 MiB for a moment at the 19 MiB row, the highest phase of bench/growth's RSS.
MEMORY_KIB, PASSES, LANES = 7 * 1024, 5, 1


@cache
def hasher() -> PasswordHasher:
    return PasswordHasher(time_cost=PASSES, memory_cost=MEMORY_KIB, parallelism=LANES)


@cache
def _dummy_hash() -> str:
    return hasher().hash("not a password anyone has: unknown accounts verify against this")


def normalise_email(raw: str) -> str:
    """The email as stored and looked up: trimmed and case-folded; refused when malformed."""
    email = raw.strip().lower()
    if len(email) > MAX_EMAIL or not EMAIL.match(email):
        raise OperatorError(f"{raw.strip()!r} is not an email address")
    return email


def password_problem(password: str, email: str = "") -> str | None:
    """Why this password is refused, or None."""
    if len(password) < MIN_PASSWORD:
        return f"the password is too short: use at least {MIN_PASSWORD} characters"
    if len(password) > MAX_PASSWORD:
        return f"the password is too long: at most {MAX_PASSWORD} characters"
    if len(set(password)) < 5:
        return "the password repeats too few characters: use at least 5 different ones"
    local = email.split("@")[0]
    if password.lower() in COMMON or (len(local) >= 4 and local in password.lower()):
        return "the password is too easy to guess (a common one, or your email's name)"
    return None


def stamp(operator: Operator) -> str:
    """What a session is bound to: changes when the password or the role changes."""
    return hashlib.sha256(f"{operator.role}\x1f{operator.password_hash}".encode()).hexdigest()


def _from_row(row: sa.Row[tuple[object, ...]]) -> Operator:
    m = row._mapping
    return Operator(
        id=int(m["id"]),
        email=str(m["email"]),
        role=Role(m["role"]),
        created_at=m["created_at"],
        disabled_at=m["disabled_at"],
        last_sign_in_at=m["last_sign_in_at"],
        password_hash=str(m["password_hash"]),
    )


def _find(conn: Connection, email: str) -> Operator | None:
    row = conn.execute(sa.select(operators).where(operators.c.email == email)).first()
    return None if row is None else _from_row(row)


def _existing(conn: Connection, raw_email: str) -> Operator:
    found = _find(conn, normalise_email(raw_email))
    if found is None:
        raise OperatorError(f"no operator {raw_email.strip()!r} (firstparty operators list)")
    return found


def get(engine: Engine, operator_id: int) -> Operator | None:
    with engine.connect() as conn:
        row = conn.execute(sa.select(operators).where(operators.c.id == operator_id)).first()
    return None if row is None else _from_row(row)


def listing(engine: Engine) -> list[Operator]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(operators).order_by(operators.c.email)).all()
    return [_from_row(r) for r in rows]


def _checked_password(password: str, email: str) -> str:
    problem = password_problem(password, email)
    if problem:
        raise OperatorError(problem)
    return hasher().hash(password)


def create(engine: Engine, *, email: str, password: str, role: Role, actor: str) -> Operator:
    """A new operator account (the email is unique, whatever its case)."""
    address = normalise_email(email)
    values = {
        "email": address,
        "password_hash": _checked_password(password, address),
        "role": role.value,
        "created_at": datetime.now(UTC),
    }
    try:
        with engine.begin() as conn:
            conn.execute(sa.insert(operators).values(values))
            audit.record(
                conn,
                actor=actor,
                action=audit.Action.OPERATOR_CREATE,
                subject=address,
                detail={"role": role.value},
            )
            found = _find(conn, address)
    except IntegrityError:
        raise OperatorError(f"an operator {address!r} exists already") from None
    assert found is not None
    return found


def _change(
    engine: Engine,
    *,
    email: str,
    actor: str,
    action: audit.Action,
    detail: dict[str, object],
    values: dict[str, object],
) -> Operator:
    with engine.begin() as conn:
        found = _existing(conn, email)
        conn.execute(sa.update(operators).where(operators.c.id == found.id).values(values))
        audit.record(conn, actor=actor, action=action, subject=found.email, detail=detail)
        changed = _find(conn, found.email)
    assert changed is not None
    return changed


def disable(engine: Engine, *, email: str, actor: str) -> Operator:
    """Refuse this operator's sign-ins and end their sessions (their audit rows stay)."""
    return _change(
        engine,
        email=email,
        actor=actor,
        action=audit.Action.OPERATOR_DISABLE,
        detail={},
        values={"disabled_at": datetime.now(UTC)},
    )


def enable(engine: Engine, *, email: str, actor: str) -> Operator:
    return _change(
        engine,
        email=email,
        actor=actor,
        action=audit.Action.OPERATOR_ENABLE,
        detail={},
        values={"disabled_at": None},
    )


def set_role(engine: Engine, *, email: str, role: Role, actor: str) -> Operator:
    """A new role; the operator's sessions end (they sign in again with it)."""
    return _change(
        engine,
        email=email,
        actor=actor,
        action=audit.Action.OPERATOR_SET_ROLE,
        detail={"role": role.value},
        values={"role": role.value},
    )


def reset_password(engine: Engine, *, email: str, password: str, actor: str) -> Operator:
    """A new password; the operator's sessions end."""
    address = normalise_email(email)
    return _change(
        engine,
        email=address,
        actor=actor,
        action=audit.Action.OPERATOR_RESET_PASSWORD,
        detail={},
        values={"password_hash": _checked_password(password, address)},
    )


def authenticate(engine: Engine, *, email: str, password: str, now: datetime) -> Operator | None:
    """The active operator with this email and password, or None (same work either way)."""
    try:
        address = normalise_email(email)
    except OperatorError:
        address = ""
    with engine.connect() as conn:
        found = _find(conn, address) if address else None
    if not _verified(found.password_hash if found and found.active else None, password):
        return None
    assert found is not None
    values: dict[str, object] = {"last_sign_in_at": now}
    if hasher().check_needs_rehash(found.password_hash):
        values["password_hash"] = hasher().hash(password)
    with engine.begin() as conn:
        conn.execute(sa.update(operators).where(operators.c.id == found.id).values(values))
        changed = _find(conn, address)
    return changed


def _verified(password_hash: str | None, password: str) -> bool:
    try:
        hasher().verify(password_hash or _dummy_hash(), password[:MAX_PASSWORD])
    except (VerificationError, InvalidHashError):
        return False
    return password_hash is not None
