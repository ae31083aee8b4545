"""Operators' passwords: argon2id at OWASP's 7 MiB parameters; an older, bigger hash still signs in
and is replaced by one at the current parameters on that sign-in."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher, extract_parameters

from firstparty.operators import accounts
from firstparty.operators.accounts import Role
from firstparty.store import db, migrate
from firstparty.store.models import operators

PASSWORD = "correct horse battery staple"


def _engine(tmp_path: Path) -> sa.Engine:
    engine = db.create_engine(f"sqlite:///{tmp_path / 'fp.db'}")
    migrate.upgrade(engine)
    return engine


def test_new_hashes_use_owasps_argon2id_parameters(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    made = accounts.create(
        engine, email="a@example.com", password=PASSWORD, role=Role.VIEWER, actor="test"
    )
    found = extract_parameters(made.password_hash)
    assert (found.type.name, found.memory_cost, found.time_cost, found.parallelism) == (
        "ID",
        7 * 1024,
        5,
        1,
    )


@pytest.mark.parametrize(
    "old_hasher",
    [
        PasswordHasher(),  # argon2-cffi's default: 64 MiB, 3 passes, 4 lanes (before 2026-11-29)
        PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1),  # until session 10
    ],
    ids=["64-mib", "19-mib"],
)
def test_an_older_hash_signs_in_and_is_rehashed(tmp_path: Path, old_hasher: PasswordHasher) -> None:
    engine = _engine(tmp_path)
    accounts.create(engine, email="a@example.com", password=PASSWORD, role=Role.VIEWER, actor="t")
    old = old_hasher.hash(PASSWORD)
    with engine.begin() as conn:
        conn.execute(sa.update(operators).values(password_hash=old))
    now = datetime.now(UTC)
    signed = accounts.authenticate(engine, email="A@example.com", password=PASSWORD, now=now)
    assert signed is not None
    assert signed.password_hash != old
    assert extract_parameters(signed.password_hash).memory_cost == 7 * 1024
    wrong = accounts.authenticate(engine, email="a@example.com", password="not it at all", now=now)
    assert wrong is None
