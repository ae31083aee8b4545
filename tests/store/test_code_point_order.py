"""`db.code_point_order`: rows ordered as Python orders the strings, whatever the column's
collation (the audience sync merges two such streams)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import sqlalchemy as sa

from firstparty.store import db
from tests.conftest import make_database

KEYS = ["B1", "_3", "a2", "é4", "Z5", "z6", "Ω7", "07", "a-8", "A9", "ß10", "~11", "u:x", "u:X "]
# The column's collation: PostgreSQL's ICU root locale and MariaDB's default (utf8mb4_general_ci)
# order linguistically or without case; SQLite's default is already by code point.
COLLATION = {"postgresql": "und-x-icu", "mysql": None, "sqlite": None}


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "mysql"])
def test_rows_come_in_pythons_order_of_the_strings(kind: str, tmp_path: Path) -> None:
    with contextlib.contextmanager(make_database)(kind, tmp_path) as url:
        engine = db.create_engine(url)
        table = sa.Table("words", sa.MetaData(), sa.Column("word", sa.String(20, COLLATION[kind])))
        try:
            with engine.begin() as conn:
                table.create(conn)
                conn.execute(sa.insert(table), [{"word": k} for k in KEYS])
            with engine.connect() as conn:
                plain = list(conn.execute(sa.select(table.c.word).order_by(table.c.word)).scalars())
                ordered = sa.select(table.c.word).order_by(
                    db.code_point_order(table.c.word, conn.dialect)
                )
                assert list(conn.execute(ordered).scalars()) == sorted(KEYS)
            if kind != "sqlite":  # the column's own order differs: the test can tell
                assert plain != sorted(KEYS)
        finally:
            engine.dispose()
